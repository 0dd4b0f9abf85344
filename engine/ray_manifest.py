"""The end of a `--ray` run: the parts made one catalog (`engine.ray_parts.finalize_parts`), their
errors merged into OUT_DIR/_galaxy/errors.csv, the engines that classified them recorded where they
differ, and the manifest (OUT_DIR/_galaxy/manifest.json) written last (`write_manifest`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from engine.ray_parts import finalize_parts, part_path, read_part_errors
from engine.ray_shards import Shard, shard_items
from galaxy.catalog.formats import RAY_BOOKKEEPING, RAY_MANIFEST
from galaxy.catalog.write import errors_path, ErrorWriter
from galaxy.files import write_atomically

log = logging.getLogger(__name__)

ENGINES_KEY = "engines_by_part"  # the manifest metadata's record of parts classified by unlike engines


def part_engines(parts) -> dict[str, int]:
    """{engine: parts} of a --ray run's parts, as each part's run record names it: the backend and precision,
    and for int8 the CPU arithmetic its sums ran on (each actor chose its own backend, `auto` per machine)."""
    from galaxy.catalog.metadata import INT8_ARITHMETIC_KEY
    from galaxy.catalog.written import read_catalog_metadata

    engines: dict[str, int] = {}
    for part in parts:
        try:
            run = json.loads(read_catalog_metadata(part, "parquet").get("run") or "{}")
        except ValueError:
            run = {}
        arithmetic = run.get(INT8_ARITHMETIC_KEY)
        kind = str(run.get("backend", "unrecorded")) + (f" ({arithmetic} int8 arithmetic)" if arithmetic else "")
        engines[kind] = engines.get(kind, 0) + 1
    return engines


def write_manifest(out_dir: Path, shards: list[Shard], done: dict, resumed: int, actors: int, started: float,
                   units: dict | None = None) -> dict:
    """Make the parts one catalog, merge their errors, and write the manifest last; return it.

    `done`: rows and errors classified by this run, and the failed inputs of earlier runs it retried
    (`retried`, counted in those); `resumed`: shards whose part an earlier run wrote.
    """
    import pyarrow.parquet as pq

    from galaxy.catalog.written import read_catalog_metadata

    failures = [read_part_errors(out_dir, shard.index) for shard in shards]

    def kept_texts(k: int) -> list[dict] | None:
        """The kept columns of part k's rows as the catalog gives them: its shard's inputs less those that
        failed (None for a part whose errors an earlier version wrote, which record no place)."""
        if any(len(row) != 5 for row in failures[k]):
            return None
        failed = {int(row[4]) for row in failures[k]}
        return [item.columns for place, item in enumerate(shard_items(shards[k].path)) if place not in failed]

    ids = finalize_parts([part_path(out_dir, shard.index) for shard in shards],
                         [[(row[0], row[4] if len(row) == 5 else None) for row in rows] for rows in failures], units,
                         kept_texts)
    errors = ErrorWriter(errors_path(out_dir))
    for rows, taken in zip(failures, ids):
        for row, ident in zip(rows, taken):
            errors.write(ident, *row[1:4])
    errors.close()
    failed = errors.count
    parts = [part_path(out_dir, s.index) for s in shards]
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    metadata = read_catalog_metadata(parts[0], "parquet") if parts else {}
    engines = part_engines(parts)
    if len(engines) > 1:  # actors on unlike machines: the catalog's metadata (the first part's) said one of them
        metadata[ENGINES_KEY] = json.dumps(engines)
        log.warning("the parts were classified by %d kinds of engine (%s): a machine's `auto` choice, and its CPU's "
                    "int8 arithmetic, are its own; the catalog's metadata lists them under %s", len(engines),
                    "; ".join(f"{kind}: {n} parts" for kind, n in engines.items()), ENGINES_KEY)
    manifest = {"parts": [p.name for p in parts], "rows": total, "failed": failed,
                "errors": str(errors_path(out_dir).relative_to(out_dir)),
                "classified_now": done["rows"], "failed_now": done["errors"], "retried": done.get("retried", 0),
                "shards_resumed": resumed,
                "actors": actors, "seconds": round(time.perf_counter() - started, 1), "metadata": metadata}
    final = out_dir / RAY_BOOKKEEPING / RAY_MANIFEST
    write_atomically(final, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n"))
    return manifest
