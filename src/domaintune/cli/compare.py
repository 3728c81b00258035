"""`domaintune compare FOLDER...`: quality, training and inference cost of evaluated folders; report.html."""

from __future__ import annotations

from domaintune.cli.common import add_verb, targets_only


def register(subparsers) -> None:
    p = add_verb(subparsers, "compare", "compare evaluated folders: quality, training and inference cost; report.html",
                 reads_config=False, writes=True, words="evaluated folders (run folders, runs/base, runs/tfidf)")
    p.add_argument("--out", default="runs/compare", help="folder for comparison.json, report.md/.html")
    p.add_argument("--names", help="comma-separated display names, one per folder")
    p.add_argument("--no-latency", action="store_true", help="skip the inference timing")
    p.add_argument("--prompts", type=int, default=8, help="test rows timed per model")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per request")
    p.add_argument("--warmup", type=int, default=2, help="untimed requests before timing")
    p.add_argument("--repeats", type=int, default=1, help="passes over the timed prompts")
    p.add_argument("--threads", type=int, help="torch threads in each timing process")
    p.add_argument("--feedback", metavar="DB", help="the review page's votes (`domaintune serve`'s "
                   "feedback.sqlite): win rates per model pair with 95%% Wilson intervals join the report")
    p.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api
    from domaintune.core.io import read_json
    from domaintune.reporting.tables import text_report

    folders = targets_only(ns, "compare takes folders, not overrides")
    latency = None if ns.no_latency else api.LatencySettings(
        prompts=ns.prompts, max_new_tokens=ns.max_new_tokens, warmup=ns.warmup, repeats=ns.repeats)
    names = ns.names.split(",") if ns.names else None
    report = api.run_compare(folders, ns.out, names, latency, ns.threads, log=print, overwrite=ns.overwrite,
                             feedback=ns.feedback)
    print(text_report(read_json(report.parent / "comparison.json")) + f"\nreport: {report}")
