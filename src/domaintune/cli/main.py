"""The command line: parse, load the config, call the stage function. Nothing else lives here.

Every command takes `-c CONFIG` and any number of `key=value` overrides (`train.lora.r=16`).
"""

from __future__ import annotations

import argparse
import sys

from domaintune.core.errors import DomaintuneError

VERBS = ("prepare", "train", "evaluate", "baseline", "compare", "merge", "export", "generate", "demo", "config",
         "serve", "feedback", "sweep")
WRITING_VERBS = ("prepare", "train", "evaluate", "baseline", "compare", "merge", "export", "demo", "feedback", "sweep")
OUTPUT_RULE = ("An existing output folder is replaced only when domaintune wrote it as the same kind of output; "
               "anything else there is refused unless --overwrite is given, and an output that is, holds or "
               "lies inside an input is always refused.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="domaintune", description="Adapt a small language model to a domain.",
                                     epilog=OUTPUT_RULE)
    sub = parser.add_subparsers(dest="verb", required=True)
    helps = {
        "prepare": "clean, deduplicate and split the data; write a data card",
        "train": "train LoRA or full fine-tuning into a run folder",
        "evaluate": "evaluate a run folder (or 'base') on the test split",
        "baseline": "fit TF-IDF + logistic regression on the prepared splits (a classic baseline)",
        "compare": "compare evaluated folders: quality, training and inference cost; report.html",
        "merge": "merge a LoRA run into a plain HF model folder (safetensors)",
        "export": "write a run's model as GGUF (f16 and q8_0, or --types) for llama.cpp and Ollama",
        "generate": "answer a text with the base model or a run",
        "demo": "prepare, train and compare on the embedded model and data",
        "config": "print the resolved config (or the config reference)",
        "serve": "serve runs (and --base) over an OpenAI-compatible API with a blind A/B review page",
        "feedback": "'feedback export': votes -> preference (DPO) and SFT datasets",
        "sweep": "search config keys with Optuna (TPE or grid, pruning, resumable); each trial is a run folder",
    }
    for verb in VERBS:
        writes = verb in WRITING_VERBS
        p = sub.add_parser(verb, help=helps[verb], description=helps[verb], epilog=OUTPUT_RULE if writes else None)
        p.add_argument("-c", "--config", help="YAML config file (defaults apply without it)")
        p.add_argument("args", nargs="*", help="key=value overrides, plus targets where the verb takes them")
        if writes:
            p.add_argument("--overwrite", action="store_true",
                           help="replace an existing output folder that domaintune did not write as this kind of "
                                "output (never one that is, holds or lies inside an input)")
        if verb == "compare":
            p.add_argument("--out", default="runs/compare", help="folder for comparison.json, report.md/.html")
            p.add_argument("--names", help="comma-separated display names, one per folder")
            p.add_argument("--no-latency", action="store_true", help="skip the inference timing")
            p.add_argument("--prompts", type=int, default=8, help="test rows timed per model")
            p.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per request")
            p.add_argument("--warmup", type=int, default=2, help="untimed requests before timing")
            p.add_argument("--repeats", type=int, default=1, help="passes over the timed prompts")
            p.add_argument("--threads", type=int, help="torch threads in each timing process")
        if verb == "merge":
            p.add_argument("--out", help="output folder (default: RUN-merged, beside the run)")
        if verb == "export":
            p.add_argument("--format", default="gguf", choices=["gguf"], help="file format")
            p.add_argument("--out", help="output folder (default: RUN-gguf, beside the run)")
            p.add_argument("--types", default="f16,q8_0",
                           help="comma-separated GGUF types: f16, q8_0, f32 (f32 reads back with exact logits)")
        if verb == "demo":
            p.add_argument("--compare", action="store_true",
                           help="also train full fine-tuning and the TF-IDF baseline; write report.html")
        if verb == "generate":
            p.add_argument("--text", required=True, help="the document (or, with --raw, the message)")
            p.add_argument("--raw", action="store_true", help="send --text as a plain chat message")
            p.add_argument("--max-new-tokens", type=int, default=64)
            p.add_argument("--temperature", type=float, default=0.0, help="0 means greedy")
        if verb == "train":
            p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
        if verb == "serve":
            p.add_argument("--base", action="store_true", help="also serve the base model, named 'base'")
            p.add_argument("--host", default="127.0.0.1", help="a non-loopback address needs --api-key")
            p.add_argument("--port", type=int, default=8000)
            p.add_argument("--api-key", help="bearer token clients must send (default: $DOMAINTUNE_API_KEY)")
            p.add_argument("--db", help="votes database (default: feedback.sqlite beside the first run)")
            p.add_argument("--max-tokens", type=int, default=512, help="largest max_tokens a request may ask")
            p.add_argument("--max-prompt-tokens", type=int, default=2048)
            p.add_argument("--max-waiting", type=int, default=32, help="queued generations before 429")
            p.add_argument("--max-body-bytes", type=int, default=256 * 1024)
            p.add_argument("--reviewers", help="file of 'NAME TOKEN' lines: only these may review "
                           "(default: each browser gets a token in a cookie)")
            p.add_argument("--review-max-tokens", type=int, default=128,
                           help="answer length of every review comparison (sampling is the server's)")
            p.add_argument("--max-per-client", type=int, default=16, help="requests in progress per address")
            p.add_argument("--queue-timeout", type=float, default=120.0, help="seconds in the queue before 503")
            p.add_argument("--body-timeout", type=float, default=30.0, help="seconds to send a body before 408")
            p.add_argument("--head-timeout", type=float, default=10.0,
                           help="seconds to send a request's headers before the connection is closed")
        if verb == "feedback":
            p.add_argument("--db", default="runs/feedback.sqlite", help="votes database written by serve")
            p.add_argument("--out", default="feedback", help="folder for preference.jsonl and sft.jsonl")
        if verb == "config":
            p.add_argument("--reference", action="store_true", help="print every key with its default and help")
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    overrides = [a for a in ns.args if "=" in a]
    targets = [a for a in ns.args if "=" not in a]
    try:
        return _dispatch(ns, overrides, targets)
    except DomaintuneError as exc:
        print(f"domaintune {ns.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"domaintune {ns.verb}: interrupted; no partial output was kept", file=sys.stderr)
        return 130


def _dispatch(ns: argparse.Namespace, overrides: list[str], targets: list[str]) -> int:
    # Imported here so that `--help` and config errors answer without loading torch.
    from domaintune import api

    if ns.verb == "compare":
        if overrides:
            raise DomaintuneError(f"compare takes folders, not overrides: {overrides[0]}")
        latency = None if ns.no_latency else api.LatencySettings(ns.prompts, ns.max_new_tokens, ns.warmup,
                                                                  ns.repeats)
        names = ns.names.split(",") if ns.names else None
        report = api.run_compare(targets, ns.out, names, latency, ns.threads, log=print, overwrite=ns.overwrite)
        rows = api.read_json(report.parent / "comparison.json")["rows"]
        print(api.text_table(rows) + f"\nreport: {report}")
        return 0
    if ns.verb == "merge":
        if len(targets) != 1 or overrides:
            raise DomaintuneError("merge takes one LoRA run folder (and --out)")
        print(f"merged model written to {api.run_merge(targets[0], ns.out, overwrite=ns.overwrite)}")
        return 0
    if ns.verb == "export":
        if len(targets) != 1 or overrides:
            raise DomaintuneError("export takes one run folder (and --format, --out)")
        out = api.run_export(targets[0], ns.format, ns.out, types=tuple(t.strip() for t in ns.types.split(",") if t),
                             overwrite=ns.overwrite)
        print(api.read_json(out / "export_card.json"))
        return 0
    if ns.verb == "feedback":
        if targets != ["export"] or overrides:
            raise DomaintuneError("usage: domaintune feedback export [--db DB] [--out FOLDER]")
        summary = api.run_feedback_export(ns.db, ns.out, overwrite=ns.overwrite)
        print(f"feedback written to {ns.out}: {summary['preference_pairs']} preference pairs "
              f"({summary['duplicate_pairs_merged']} duplicates merged), {summary['sft_rows']} SFT rows, "
              f"from {summary['votes']} votes of {len(summary['reviewers'])} reviewers")
        for name, counts in list(summary["reviewers"].items())[:10]:  # most votes first; all in export_card.json
            print(f"  {name}: {counts['votes']} votes, {counts['decisive']} decisive")
        return 0
    if ns.verb == "sweep":
        if len(targets) > 1 or (targets and ns.config):
            raise DomaintuneError("sweep takes one config: domaintune sweep CONFIG [key=value ...]")
        report = api.run_sweep(api.load_config(ns.config or (targets or [None])[0], overrides), overwrite=ns.overwrite)
        print(report.read_text(encoding="utf-8") + f"\nreport: {report}")
        return 0
    if ns.verb not in ("evaluate", "generate", "serve") and targets:
        raise DomaintuneError(f"unexpected argument '{targets[0]}' (overrides are key=value)")
    if ns.verb == "demo":
        cfg = api.demo_config(overrides) if not ns.config else api.load_config(ns.config, overrides)
        api.run_demo(cfg, compare=ns.compare, overwrite=ns.overwrite)
        return 0
    cfg = api.load_config(ns.config, overrides)
    if ns.verb == "config":
        print("\n".join(api.config_reference()) if ns.reference else api.config_to_yaml(cfg), end="\n")
    elif ns.verb == "prepare":
        from domaintune.data.card import summarize
        from domaintune.data.prepare import read_data_card

        folder = api.run_prepare(cfg, ns.overwrite)
        print(f"{summarize(read_data_card(folder))}\nprepared data written to {folder} (see data_card.md)")
    elif ns.verb == "baseline":
        metrics = api.run_baseline(cfg, ns.overwrite)
        print(f"{cfg.evaluate.baseline_output_dir}: accuracy {metrics['accuracy']}, macro-F1 {metrics['macro_f1']}")
    elif ns.verb == "train":
        print(f"run folder written to {api.run_train(cfg, resume=ns.resume, overwrite=ns.overwrite)}")
    elif ns.verb == "evaluate":
        for target in targets or ["base"]:
            metrics = api.run_evaluate(cfg, target, ns.overwrite)
            shown = {k: metrics[k] for k in ("perplexity", "accuracy", "macro_f1") if k in metrics}
            print(f"{target}: {shown}")
    elif ns.verb == "serve":
        from domaintune.serving.review import ReviewSampling

        settings = api.ServeSettings(
            host=ns.host, port=ns.port, api_key=ns.api_key, db_path=ns.db, max_body_bytes=ns.max_body_bytes,
            max_prompt_tokens=ns.max_prompt_tokens, max_tokens=ns.max_tokens, max_waiting=ns.max_waiting,
            max_per_client=ns.max_per_client, queue_timeout=ns.queue_timeout, body_timeout=ns.body_timeout,
            head_timeout=ns.head_timeout, reviewers_file=ns.reviewers,
            review_sampling=ReviewSampling(max_tokens=ns.review_max_tokens))
        api.run_serve(cfg, targets, ns.base, settings)
    elif ns.verb == "generate":
        if len(targets) > 1:
            raise DomaintuneError("generate takes one target: a run folder or 'base'")
        print(api.run_generate(cfg, ns.text, targets[0] if targets else "base", ns.max_new_tokens,
                               ns.temperature, ns.raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
