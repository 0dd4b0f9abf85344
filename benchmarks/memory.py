"""Peak memory of `galaxy classify` against the number of inputs.

Two measurements, each in a fresh process so the peak RSS (getrusage of the child) is its own:
  listed      a catalog of N rows is listed and every row is looked up in an empty journal
              (the files need not exist): the cost of the input side alone;
  classified  N distinct inputs (symbolic links to the real gz1-sdss cutouts, cycled) are
              classified end to end into a Parquet catalog.
The claim to check: the peak does not grow with N (the run streams: lazy listing, bounded
decode look-ahead, batches written in committed chunks).

  python benchmarks/memory.py --listed 1000000 --classified 10000,100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "gz1-sdss" / "images"

LIST_SNIPPET = """
import sys
from engine.journal import Journal
from engine.listing import iter_inputs
journal = Journal(sys.argv[2], ("elliptical", "spiral"), {"memory": "benchmark"})
n = sum(1 for item in iter_inputs((), sys.argv[1]) if not journal.is_done(item.path))
journal.release()
print(n)
"""


def child_peak_mb(command: list[str]) -> tuple[float, float, str]:
    """Run a command; (seconds, its peak RSS in MB, stdout)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode not in (0, 3):
        raise SystemExit(f"{command[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    # RUSAGE_CHILDREN is the largest peak among waited-for children: run one child per process.
    return time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, done.stdout


def measure_one(kind: str, n: int, backend: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if kind == "listed":
            catalog = tmp / "catalog.csv"
            with open(catalog, "w") as fh:
                fh.write("file\n")
                fh.writelines(f"/survey/part{i // 10000:03d}/galaxy{i:09d}.jpeg\n" for i in range(n))
            seconds, peak, _ = child_peak_mb([sys.executable, "-c", LIST_SNIPPET, str(catalog), str(tmp / "j.csv")])
        else:
            files = sorted(SHARED.glob("*.jpeg")) if SHARED.is_dir() else sorted((ROOT / "examples" / "sdss").glob("*.jpeg"))
            links = tmp / "links"
            for i in range(n):
                folder = links / f"{i // 5000:04d}"
                if i % 5000 == 0:
                    folder.mkdir(parents=True)
                os.symlink(files[i % len(files)], folder / f"g{i:08d}.jpeg")
            seconds, peak, _ = child_peak_mb([sys.executable, "-m", "galaxy.cli", "classify", str(links), "-o",
                                              str(tmp / "out.parquet"), "-q", "--backend", backend])
    row = {"stage": f"memory_{kind}", "n": n, "seconds": round(seconds, 1), "peak_rss_mb": round(peak, 1),
           "backend": backend if kind == "classified" else "-", "cpu_count": os.cpu_count()}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listed", default="1000000", help="Comma-separated catalog sizes to list.")
    parser.add_argument("--classified", default="10000,100000", help="Comma-separated numbers of images to classify.")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--kind", choices=["listed", "classified"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kind:  # one measurement, in this (fresh) process
        measure_one(args.kind, args.n, args.backend)
        return
    jobs = [("listed", int(n)) for n in args.listed.split(",") if n] + \
           [("classified", int(n)) for n in args.classified.split(",") if n]
    rows = []
    for kind, n in jobs:  # a fresh process per measurement: peaks must not carry over
        out = subprocess.run([sys.executable, __file__, "--kind", kind, "--n", str(n), "--backend", args.backend],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(out.stdout.strip().splitlines()[-1], flush=True)
    print(f"\n{'stage':<18} {'n':>10} {'seconds':>9} {'peak RSS MB':>12}", file=sys.stderr)
    for r in rows:
        print(f"{r['stage']:<18} {r['n']:>10,} {r['seconds']:>9.1f} {r['peak_rss_mb']:>12.1f}", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
