"""A `--ray` run's actor: one engine per Ray actor (`ShardClassifier`, a Ray Data callable class),
each call classifying one whole shard into its Parquet part and the part's errors, or retrying the
failed inputs of a finished shard; and the tests' fault injection (`CRASH_ONCE_ENV`)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from engine.ray_parts import failed_places, part_errors, part_path, pending_errors, settle_retry
from engine.ray_shards import shard_items
from galaxy.catalog.text import safe_text
from galaxy.catalog.write import describe_rows, ErrorWriter
from galaxy.files import write_atomically
from galaxy.io.masked import MaskedRows
from galaxy.io.sky import OffCentreRows

CRASH_ONCE_ENV = "GALAXY_RAY_CRASH_ONCE"  # fault injection for the tests: "<shard>:<marker file>"


class ShardClassifier:
    """A Ray Data callable class: one model session per actor, one shard per call."""

    def __init__(self, config, model_dir: str, out_dir: str, cwd: str | None = None, units: dict | None = None,
                 descriptions: dict | None = None):
        from engine.artifacts import resolve_model
        from engine.machine import installed_versions
        from galaxy.catalog.metadata import catalog_metadata
        from engine.runner import Runner

        if cwd and os.path.isdir(cwd):  # relative inputs are the driver's: a cluster started in another
            os.chdir(cwd)  # folder read them from its own (every input failed as "no such file")
        self.units, self.descriptions = units or {}, descriptions or {}  # of kept columns, from the catalog
        model_dir, card = resolve_model(model_dir)
        self.runner = Runner.for_classify(model_dir, card, config)
        self.out_dir, self.classes = Path(out_dir), card.classes
        self.metadata = catalog_metadata(card, self.runner.session, config, self.runner.spec,
                                         decoder=self.runner.pipeline.name, software=installed_versions())

    def __call__(self, batch: dict) -> dict:
        out = {"shard": [], "rows": [], "errors": [], "off_centre": [], "masked": []}
        for index, path, retry in zip(batch["index"], batch["path"], batch["retry"]):
            rows, errors, off_centre, masked = (self.retry_failed if retry else self.classify_shard)(int(index),
                                                                                                    str(path))
            out["shard"].append(int(index))
            out["rows"].append(rows)
            out["errors"].append(errors)
            out["off_centre"].append(json.dumps(dataclasses.asdict(off_centre)))
            out["masked"].append(json.dumps(dataclasses.asdict(masked)))
        return {k: np.asarray(v) for k, v in out.items()}

    def classify_shard(self, index: int, shard_path: str) -> tuple[int, int, OffCentreRows, MaskedRows]:
        """Classify a whole shard into its part and the part's errors; return (rows, failures, rows
        whose kept ra/dec is not their cutout's centre, rows whose crop was much masked)."""
        _maybe_crash(index)
        items = shard_items(shard_path)
        tmp, rows, errors, failed, off_centre, masked = self._classify(index, items, range(len(items)))
        pending_errors(self.out_dir, index).unlink(missing_ok=True)  # a retry's, of a part deleted since
        errors.replace(part_errors(self.out_dir, index))  # errors first: a part implies its errors exist
        tmp.replace(part_path(self.out_dir, index))
        return rows, len(failed), off_centre, masked

    def retry_failed(self, index: int, shard_path: str) -> tuple[int, int, OffCentreRows, MaskedRows]:
        """Classify again the inputs of a finished shard that failed; return (rows now classified,
        inputs still failing, those rows whose kept ra/dec is not their cutout's centre, and those whose
        crop was much masked).

        The rows of those that now succeed take their places among the part's rows (listing order),
        and the errors keep only those that failed again. The part and its errors are two files, so
        the new errors are written first beside the old (`pending_errors`), then the part replaced,
        then the errors: a process killed between the renames leaves a state `settle_retry` tells
        apart by the part's length, since a part with more rows has fewer failures.
        """
        import pyarrow.parquet as pq

        from engine.ray_parts import merge_retried

        items = shard_items(shard_path)
        settle_retry(self.out_dir, index, len(items))
        failed = failed_places(self.out_dir, index)
        if not failed:  # none, or only rows of an earlier version's part, which record no place
            return 0, 0, OffCentreRows(), MaskedRows()
        tmp, rows, errors, still, off_centre, masked = self._classify(index, items, failed)
        part, pending = part_path(self.out_dir, index), pending_errors(self.out_dir, index)
        if rows:
            errors.replace(pending)
            merged = merge_retried(pq.read_table(part), pq.read_table(tmp), items, failed,
                                   sorted(set(failed) - set(still)), self.units)
            tmp.unlink()
            write_atomically(part, lambda path: pq.write_table(merged, path))
            pending.replace(part_errors(self.out_dir, index))
        else:  # nothing recovered: the part stands, the errors are this try's (a reason may have changed)
            tmp.unlink()
            errors.replace(part_errors(self.out_dir, index))
        return rows, len(still), off_centre, masked

    def _classify(self, index: int, items: list, places) -> tuple[Path, int, Path, list[int], OffCentreRows,
                                                                  MaskedRows]:
        """Classify the shard's `items` at `places` into a temporary part and errors file beside the
        part; return (part, rows, errors, the places that failed, off-centre rows, much-masked rows).
        Each error row ends with its input's place in the shard."""
        from galaxy.catalog.write import CatalogWriter

        places, errors = list(places), []
        ident = {}  # a place in the shard (the id the runner handles) -> the id the input was given
        off_centre = OffCentreRows(units=self.units)

        def position(given):  # each input's id becomes its place in the shard; the id given is put back
            place = str(places[len(ident)])  # below, and the place goes into the errors part: the merge takes
            ident[place] = given  # ids over rows and failures in listing order, as one machine does
            return place

        results = list(self.runner.run((items[p] for p in places), errors.append, position,
                                       lambda place, *where: off_centre.add(safe_text(ident[place]), *where)))
        tmp = self.out_dir / f".part-{index:06d}.{os.getpid()}.tmp"
        results = [([safe_text(ident[i]) for i in ids], [safe_text(p) for p in paths], probs, columns)
                   for ids, paths, probs, columns in results]
        extra, lengths = describe_rows(row for ids, paths, _, columns in results for row in zip(ids, paths, columns))
        # kept columns stay text as given: their kind is decided over all parts when they are finalised
        extra = [(name, "text") for name, _ in extra]
        writer = CatalogWriter(tmp, self.classes, self.metadata, "parquet", extra, units=self.units,
                               text_lengths=lengths, descriptions=self.descriptions)
        for ids, paths, probs, columns in results:
            writer.write(ids, paths, probs, columns)
        writer.close()
        masked = MaskedRows()
        for ids, _, _, columns in results:
            for given, row in zip(ids, columns):
                masked.add(given, row)
        err_writer = ErrorWriter(tmp.with_suffix(".errors.tmp"), header=False)  # merged under one header later
        for failure in errors:
            err_writer.write(ident[failure.id], *failure[1:], failure.id)
        err_writer.close()
        return tmp, writer.rows, err_writer.path, [int(failure.id) for failure in errors], off_centre, masked


def _maybe_crash(index: int) -> None:
    """Test hook: kill this actor's process once while it holds shard `index` (see CRASH_ONCE_ENV)."""
    spec = os.environ.get(CRASH_ONCE_ENV)
    if spec:
        shard, marker = spec.split(":", 1)
        if int(shard) == index and not os.path.exists(marker):
            Path(marker).write_text("crashed once\n")
            os._exit(1)
