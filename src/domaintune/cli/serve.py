"""`domaintune serve RUN... [--base]`: an OpenAI-compatible API with a blind A/B review page."""

from __future__ import annotations

from domaintune.cli.common import add_verb, split_words


def register(subparsers) -> None:
    p = add_verb(subparsers, "serve", "serve runs (and --base) over an OpenAI-compatible API with a blind A/B "
                 "review page", reads_config=True, writes=False, words="run folders, and key=value overrides")
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
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="most requests decoded together in one batch (1: one at a time)")
    p.add_argument("--batch-window", type=float, default=0.02,
                   help="seconds a batch waits for more requests after its oldest one arrived")
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds to send a body before 408")
    p.add_argument("--head-timeout", type=float, default=10.0,
                   help="seconds to send a request's headers before the connection is closed")
    p.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api
    from domaintune.serving.review import ReviewSampling

    overrides, runs = split_words(ns)
    cfg = api.load_config(ns.config, overrides)
    settings = api.ServeSettings(
        host=ns.host, port=ns.port, api_key=ns.api_key, db_path=ns.db, max_body_bytes=ns.max_body_bytes,
        max_prompt_tokens=ns.max_prompt_tokens, max_tokens=ns.max_tokens, max_waiting=ns.max_waiting,
        max_per_client=ns.max_per_client, queue_timeout=ns.queue_timeout, max_batch_size=ns.max_batch_size,
        batch_window=ns.batch_window, body_timeout=ns.body_timeout,
        head_timeout=ns.head_timeout, reviewers_file=ns.reviewers,
        review_sampling=ReviewSampling(max_tokens=ns.review_max_tokens))
    api.run_serve(cfg, runs, ns.base, settings)
