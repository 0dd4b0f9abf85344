"""Ray scaling on a local cluster: the same input classified with 1 and with 2 actors.

  python benchmarks/ray_scaling.py --images 2000

Each actor runs one engine with one inference thread (`--threads 1`), so on a machine with
C cores up to C actors can work side by side. Prints one JSON object per run and the ratio.
On a real cluster the same code runs with one actor per GPU (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "gz1-sdss" / "images"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--shard-size", type=int, default=250)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import ray

    from engine.distributed import classify_on_ray
    from galaxy.config import ClassifyConfig

    source = SHARED if SHARED.is_dir() else ROOT / "examples" / "sdss"
    files = sorted(source.glob("*.jpeg"))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        links = Path(tmp) / "in"
        links.mkdir()
        for i in range(args.images):
            os.symlink(files[i % len(files)], links / f"g{i:07d}.jpeg")
        for actors in (1, 2):
            config = ClassifyConfig((str(links),), str(Path(tmp) / f"out{actors}"), backend=args.backend,
                                    threads=1, workers=1, progress=False)
            started = time.perf_counter()
            manifest = classify_on_ray(config, None, args.shard_size, actors)
            seconds = time.perf_counter() - started
            row = {"stage": "ray_end_to_end", "actors": actors, "images": manifest["rows"], "seconds": round(seconds, 1),
                   "images_per_min": round(60 * manifest["rows"] / seconds, 1), "backend": args.backend,
                   "cpu_count": os.cpu_count()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    ray.shutdown()
    print(f"scaling 1 -> 2 actors: {rows[1]['images_per_min'] / rows[0]['images_per_min']:.2f}x "
          f"({rows[0]['images_per_min']:,.0f} -> {rows[1]['images_per_min']:,.0f} images/min, "
          f"{os.cpu_count()} cpus, local cluster)", file=sys.stderr)


if __name__ == "__main__":
    main()
