"""Peak memory of `run_prepare` as the corpus grows, and the growth per extra document.

Each size runs in a fresh process on the corpus written as a CSV by this one (so building the corpus
never counts). Reported per size: peak RSS, and peak anonymous memory sampled every 20 ms (memory the
kernel cannot drop: the memory-mapped Arrow pages that prepare reads are file-backed, so RSS overstates
what a run needs). The growth per document between the first and last size is the figure that decides
how far a machine scales. `--src` also runs the same sizes with another tree of the project (the
tree before a change, say) in the same script, so both are measured under the same load:

    git worktree add /tmp/before d2ca574        # the commit before prepare ran on Arrow
    PYTHONPATH=src python bench/prepare_memory.py --sizes 30000 100000 --num-proc 2 --src /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from prepare_corpus import write_corpus_csv


def _anonymous_kib() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


def child(path: str, num_proc: int) -> None:
    """In a fresh process: run_prepare on `path` while a thread samples anonymous memory."""
    # The package's top-level names, which older trees (`--src`) export too.
    from domaintune import DomaintuneError, load_config, run_prepare

    peak, stop = [_anonymous_kib()], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _anonymous_kib())

    with tempfile.TemporaryDirectory() as folder:
        base = [f"data.source={path}", f"data.output_dir={Path(folder) / 'out'}"]
        try:
            cfg = load_config(None, [*base, f"data.num_proc={num_proc}"])
        except DomaintuneError:  # a tree from before data.num_proc
            cfg = load_config(None, [*base, f"data.dedup.num_proc={num_proc}"])
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        start = time.perf_counter()
        run_prepare(cfg)
        seconds = time.perf_counter() - start
        stop.set()
        thread.join()
    print(json.dumps({
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_anonymous_mib": round(max(peak[0], _anonymous_kib()) / 1024, 1),
        "largest_worker_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }))


def measure(src: str, sizes: list[int], num_proc: int, folder: Path) -> None:
    figures = {}
    env = {**os.environ, "PYTHONPATH": src}
    for n in sizes:
        path = folder / f"bench_{n}.csv"
        done = subprocess.run([sys.executable, __file__, "--child", str(path), "--num-proc", str(num_proc)],
                              capture_output=True, text=True, check=True, env=env)
        figures[n] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps({"src": src, "docs": n, **figures[n], "load_avg": os.getloadavg()}), flush=True)
    extra = sizes[-1] - sizes[0]
    if extra > 0:
        growth = {key: round((figures[sizes[-1]][key] - figures[sizes[0]][key]) * 1024 / extra, 2)
                  for key in ("peak_rss_mib", "peak_anonymous_mib")}
        print(json.dumps({"src": src, "kib_per_extra_doc": growth}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 100_000])
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--src", action="append", default=[], help="another tree's src folder to measure too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.num_proc)
        return
    here = str(Path(__file__).resolve().parents[1] / "src")
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            write_corpus_csv(n, Path(folder))
        for src in [*args.src, here]:
            measure(src, args.sizes, args.num_proc, Path(folder))


if __name__ == "__main__":
    main()
