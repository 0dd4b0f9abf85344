"""`galaxy classify --ray`: a survey over a Ray cluster, with Ray Data.

The data path, as on one machine, cut into shards:

  driver: list inputs lazily -> shard files of `shard_size` inputs (OUT_DIR/_galaxy/shards/)
  Ray Data: read the shard list -> map_batches over an actor pool, one engine per actor, sized
            to the cluster's GPUs (or CPUs); each call decodes + classifies one whole shard and
            writes OUT_DIR/part-<shard>.parquet and its errors atomically (temp file + rename)
            (engine/ray_actor.py)
  driver: ids made unique across parts in listing order and one schema for all parts (as one
          machine writes them: engine/ray_parts.py), errors merged into OUT_DIR/_galaxy/errors.csv, the manifest
          (OUT_DIR/_galaxy/manifest.json) last (engine/ray_manifest.py); the shards' rows whose kept ra/dec is
          not their cutout's centre (`OffCentreRows`), and those whose crop was much masked (`MaskedRows`),
          make one warning each, as on one machine.

OUT_DIR's top level holds only the parts; everything else is under `_galaxy/`, which Parquet
dataset readers skip (names starting with "_" or "."), as they skip the ".part-*" temp files.

Fault tolerance: actors that die are restarted and their shard retried (Ray's max_restarts /
max_task_retries); a part appears whole or not at all, so a retry cannot duplicate rows. A rerun
on the same OUT_DIR classifies the shards without a part and retries the inputs that failed in the
others, as one machine's rerun does: nothing lost, nothing twice (`ShardClassifier.retry_failed`
says how a retried input's row joins its part).
The parts have the columns, ids and metadata of a single-machine Parquet catalog; read them all
with `pyarrow.parquet.read_table(OUT_DIR)`, `pandas.read_parquet(OUT_DIR)`, or
`astropy.table.Table.read` per part.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

from engine.fingerprint import FINGERPRINT, keep_fingerprint, recorded_fingerprint
from engine.listing import parse_band_columns, require_inputs, with_catalog_columns
from engine.ray_actor import ShardClassifier
from engine.ray_manifest import write_manifest
from engine.ray_parts import failed_places, part_path, pending_errors, prepare_out_dir, settle_retry
from engine.ray_shards import shard_length, write_shards
from galaxy.catalog.formats import RAY_BOOKKEEPING, RAY_MANIFEST, check_kept_columns
from galaxy.catalog.metadata import CROP_RULE, CROP_RULE_KEY, INT8_KEY, fingerprint_defaults, reading_settings
from galaxy.catalog.text import safe_text
from galaxy.errors import BackendUnavailable, GalaxyError, UsageError
from galaxy.files import same_file
from galaxy.io.masked import MaskedRows
from galaxy.io.sky import OffCentreRows

log = logging.getLogger(__name__)

SHARD_SIZE = 4096


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BackendUnavailable("--ray needs Ray: pip install 'galaxy-engine[ray]'") from None
    return ray


def _quiet_ray(ray, chatty: bool) -> int:
    """Keep Ray's own lines off the terminal unless `chatty` (-v); return the level for ray.init.

    Ray's INFO and WARNING log lines (token set-up, dataset plans, executor progress) and the
    raylet notices it prints to stdout when an actor dies (it restarts the actor and retries the
    shard, so there is nothing to act on) are for debugging; a real failure still raises.
    """
    level = logging.INFO if chatty else logging.ERROR
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(level)
    worker = ray._private.worker  # the switch Ray's own debugger uses to mute forwarded notices
    if hasattr(worker, "_worker_logs_enabled"):
        worker._worker_logs_enabled = chatty
    return level


def actor_config(config, gpus: int):
    """The ClassifyConfig each actor runs. On CPUs an actor holds `--threads` CPUs (1 by default:
    one actor per CPU), so it infers and decodes on that many threads; left at 0, every actor would
    take one thread per core of its node for each, and a node's actors would oversubscribe its cores
    (N actors x N threads). On GPUs an actor holds a GPU and the node's cores as it finds them."""
    if gpus:
        return config
    threads = max(1, config.threads or 1)
    return dataclasses.replace(config, threads=threads, workers=config.workers or threads)


def classify_on_ray(config, address: str | None, shard_size: int = SHARD_SIZE, actors: int | None = None) -> dict:
    """Run `config` (a ClassifyConfig whose output is a folder) on a Ray cluster; return the manifest."""
    ray = import_ray()
    out_dir = Path(config.output).absolute()  # actors may run in another folder, on another node
    if shard_size < 1:
        raise UsageError(f"--shard-size {shard_size}: a shard holds at least 1 input")
    if actors is not None and actors < 1:
        raise UsageError(f"--actors {actors}: at least 1 engine runs")
    if config.output_format not in (None, "parquet"):
        raise UsageError(f"--format {config.output_format}: with --ray the catalog is a folder of Parquet parts")
    try:  # every part, shard and manifest is named under it, and pyarrow names files in UTF-8 only
        str(out_dir).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{safe_text(str(out_dir))}: with --ray the output folder's path must be UTF-8 (pyarrow "
                         "writes its parts); give another -o") from None
    from engine import backends, pipelines
    from engine.runner import require_batch_size

    require_batch_size(config.batch_size)  # here, not as a Ray traceback from each actor
    pipelines.require_known(config.decoder)
    backends.require_known(config.backend)
    band_columns = parse_band_columns(config.band_columns)
    if band_columns and not config.catalog:
        raise UsageError("--band-columns names columns of --catalog; give --catalog FILE too")
    require_inputs(config.inputs, config.catalog, config.path_column, config.id_column, config.keep_columns,
                   band_columns)
    config, column_defaults = with_catalog_columns(config, band_columns)  # recorded and compared as read
    made = not out_dir.exists()
    begun_here = config.overwrite or not (out_dir / RAY_BOOKKEEPING / FINGERPRINT).exists()  # (--overwrite empties it)
    with prepare_out_dir(out_dir, config.overwrite):  # the lock, held while this run writes
        try:
            return _classify_locked(ray, config, out_dir, address, shard_size, actors, column_defaults)
        except UsageError:  # refused before any shard ran (no cluster, --threads no node holds, a kept column):
            if begun_here and not any(out_dir.glob("part-*")):  # its fingerprint and shards, not a retry's
                # settings, had stayed and refused the corrected command as "other settings"
                shutil.rmtree(out_dir if made else out_dir / RAY_BOOKKEEPING, ignore_errors=True)
            raise


def _classify_locked(ray, config, out_dir: Path, address: str | None, shard_size: int, actors: int | None,
                     column_defaults: dict) -> dict:
    from engine.artifacts import resolve_model
    from engine.runner import classify_spec
    from galaxy.catalog.column_notes import units_and_descriptions

    model_dir, card = resolve_model(config.model_dir)
    check_kept_columns(config.keep_columns, "parquet", card.classes)
    units, descriptions = units_and_descriptions(config.catalog, config.keep_columns)  # as one machine keeps them
    if config.crop_fraction == "auto":  # measured once here, so every actor reads with the same crop
        config = dataclasses.replace(config, crop_fraction=classify_spec(card, config).crop_fraction)
    earlier = recorded_fingerprint(out_dir / RAY_BOOKKEEPING / FINGERPRINT)
    begun_in = _begun_in(out_dir, earlier)
    _require_begun_here(out_dir, earlier, begun_in)
    inputs, catalog = _as_spelled_before(earlier, [str(i) for i in config.inputs], config.catalog, begun_in)
    # listed as spelled before too: the shards' digest compares the listed paths (`write_shards`); the earlier
    # spelling of the catalog given, relative to a folder the run began in elsewhere (its rows, `_require_begun_here`
    # found, are absolute), read from there (a catalog spelled alike that is another file is read as given)
    elsewhere = (catalog is not None and not os.path.isabs(catalog) and begun_in is not None
                 and not same_file(begun_in, os.getcwd())
                 and os.path.realpath(os.path.join(begun_in, catalog)) == os.path.realpath(config.catalog))
    config = dataclasses.replace(config, inputs=tuple(inputs),
                                 catalog=os.path.join(begun_in, catalog) if elsewhere else catalog)
    fingerprint = {"inputs": inputs, "catalog": catalog,
                   "path_column": config.path_column, "id_column": config.id_column,
                   "keep": list(config.keep_columns), "weights": card.weights_sha256,
                   "temp": card.temperature, "backend": config.backend, "tta": config.tta, "shard_size": shard_size,
                   CROP_RULE_KEY: CROP_RULE, **reading_settings(config, classify_spec(card, config))}
    if config.crop_fraction is not None:
        fingerprint["crop"] = config.crop_fraction
    if config.backend in ("auto", "onnxruntime-int8"):  # which int8 model, as one machine's run records it
        from engine.int8_models import int8_fingerprint

        fingerprint[INT8_KEY] = int8_fingerprint(model_dir, card)
    keep_fingerprint(out_dir / RAY_BOOKKEEPING / FINGERPRINT, fingerprint, out_dir,
                     fingerprint_defaults(card) | column_defaults)
    _record_begun_in(out_dir, begun_in)
    started = time.perf_counter()
    shards = write_shards(config, out_dir, shard_size)
    todo, retry = [], {}  # retry: a finished shard's failed inputs, classified again as one machine's rerun does
    for shard in shards:
        if not part_path(out_dir, shard.index).exists():
            todo.append(shard)
            continue
        if pending_errors(out_dir, shard.index).exists():  # a retry a kill cut short (the shard's length
            settle_retry(out_dir, shard.index, shard_length(shard))  # is read only then)
        failed = failed_places(out_dir, shard.index)
        if failed:
            retry[shard.index] = len(failed)
    ray_level = _quiet_ray(ray, chatty=log.isEnabledFor(logging.INFO))
    if not ray.is_initialized():
        import signal
        import threading

        # ray.init installs its own SIGTERM handler (sys.exit(15)); the `galaxy` program's ends the run as
        # Ctrl-C does (exit 143, the parts kept and the line saying how to finish): put it back afterwards
        sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
        _require_listening(address)
        try:
            ray.init(address=address or None, log_to_driver=False, ignore_reinit_error=True, logging_level=ray_level)
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
        except (ConnectionError, RuntimeError) as exc:  # no cluster at the address; ray:// without ray[client]
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if not address:
                raise UsageError(f"--ray: a local Ray cluster cannot start ({reason})") from None
            hint = ("pip install 'ray[client]' for ray:// addresses" if "client" in str(exc) else
                    "start one with `ray start --head`, or give --ray alone for a local cluster")
            raise UsageError(f"--ray {address}: cannot reach a Ray cluster ({reason}): {hint}") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    actor = actor_config(config, gpus)  # on CPUs: the CPUs each actor holds are its threads
    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if not gpus and actor.threads > largest:  # an actor no node can hold waited for ever
        raise UsageError(f"--threads {actor.threads}: each actor holds that many CPUs, and the largest node of the "
                         f"cluster has {largest:g}")
    pool = actors or max(1, gpus or int(resources.get("CPU", 1)) // actor.threads)
    pool = min(pool, max(1, len(todo) + len(retry)))
    log.info("ray: %d shards (%d to do, %d failed inputs of %d others to retry), %d actors on %s", len(shards),
             len(todo), sum(retry.values()), len(retry), pool,
             f"{gpus} GPUs" if gpus else f"{int(resources.get('CPU', 0))} CPUs")

    done = {"rows": 0, "errors": 0, "retried": sum(retry.values())}
    off_centre, masked = {}, {}  # shard -> its OffCentreRows and MaskedRows, merged in listing order at the end
    if todo or retry:
        import ray.data

        # the folder is no finished catalog from here to the new manifest: a rerun interrupted while it
        # rewrote parts had left the old one, and `report`/`montage` read the half-merged parts (ids not
        # unique, kept columns of two kinds) as finished
        (out_dir / RAY_BOOKKEEPING / RAY_MANIFEST).unlink(missing_ok=True)

        ray.data.DataContext.get_current().enable_progress_bars = config.progress
        dataset = ray.data.from_items([{"index": s.index, "path": s.path, "retry": s.index in retry}
                                       for s in [*todo, *(s for s in shards if s.index in retry)]])
        # Ray Data restarts dead actors and retries their calls by default (max_restarts and
        # max_task_retries -1); a shard's part is written atomically, so a retry is idempotent.
        results = dataset.map_batches(
            ShardClassifier, batch_size=1, compute=ray.data.ActorPoolStrategy(size=pool),
            num_gpus=1 if gpus else 0, num_cpus=None if gpus else actor.threads,
            fn_constructor_kwargs={"config": actor, "model_dir": str(model_dir), "out_dir": str(out_dir),
                                   "cwd": os.getcwd(), "units": units, "descriptions": descriptions},
        )
        try:
            for row in results.iter_rows():
                done["rows"] += int(row["rows"])
                done["errors"] += int(row["errors"])
                off_centre[int(row["shard"])] = OffCentreRows(**json.loads(str(row["off_centre"])))
                masked[int(row["shard"])] = MaskedRows(**json.loads(str(row["masked"])))
        except Exception as exc:  # Ray's wrapping of an actor's error: 150 lines for a full disk
            raise actor_failure(exc) from None
    manifest = write_manifest(out_dir, shards, done, len(shards) - len(todo), pool, started, units)
    _warn_rows(off_centre, masked)
    return manifest


def _cwd_record(out_dir: Path) -> Path:
    """Where a --ray folder records the working directory its run began in (`_begun_in`, `_record_begun_in`)."""
    return out_dir / RAY_BOOKKEEPING / "cwd"


def _begun_in(out_dir: Path, earlier: dict | None) -> str | None:
    """The folder the run this one continues began in: its `_galaxy/cwd` record; for a folder of an earlier
    version, its first part's `cwd` (None where it has no part: not known); this run's folder for a new run."""
    from galaxy.catalog.text import existing_file
    from galaxy.catalog.written import read_catalog_metadata

    record = _cwd_record(out_dir)
    if earlier is None:
        return os.getcwd()
    if record.is_file():
        return record.read_text(encoding="utf-8", errors="surrogateescape")
    first = min(out_dir.glob("part-*.parquet"), default=None)
    metadata = read_catalog_metadata(first, "parquet") if first is not None else {}
    return existing_file(metadata["cwd"]) if "cwd" in metadata else None


def _relative_path(out_dir: Path, earlier: dict) -> str | None:
    """A path the run names relatively, read from the folder it began in: an input it was given, else, with a
    catalog, a file its shards list (a catalog named relatively whose rows are absolute names none)."""
    import pyarrow.parquet as pq

    inputs = earlier.get("inputs")
    relative = next((p for p in (inputs if isinstance(inputs, list) else []) if isinstance(p, str)
                     and not os.path.isabs(p)), None)
    if relative is not None or not earlier.get("catalog"):
        return relative
    for shard in sorted((out_dir / RAY_BOOKKEEPING / "shards").glob("shard-*.parquet")):
        columns = [name for name in ("path", "bands") if name in pq.read_schema(shard).names]
        table = pq.read_table(shard, columns=columns).to_pydict()
        named = [*table.get("path", []), *(p for paths in table.get("bands", []) for p in paths or [])]
        relative = next((os.fsdecode(p) for p in named if p and not os.path.isabs(os.fsdecode(p))), None)
        if relative is not None:
            return relative
    return None


def _require_begun_here(out_dir: Path, earlier: dict | None, begun_in: str | None) -> None:
    """Refuse to continue, from another working directory, a run whose inputs are named relatively, as one
    machine refuses it (`engine.journal`): its shards' paths name files from the folder it was begun in
    (`_begun_in`), and a rerun elsewhere (each actor working in the driver's folder) read the other shards
    from its own, one catalog of two folders' files. Not checked where that folder is not known (a folder
    of an earlier version without a part).

    Raises:
        UsageError: the folders differ and the run names a file relatively; with the way on (rerun from
            there, or --overwrite).
    """
    if earlier is None or begun_in is None or same_file(begun_in, os.getcwd()):
        return
    relative = _relative_path(out_dir, earlier)
    if relative is not None:
        raise UsageError(f"{out_dir} was begun in {begun_in}, and its rows name files from there ({relative!r}): "
                         "rerun from that folder, or use --overwrite to start over")


def _record_begun_in(out_dir: Path, begun_in: str | None) -> None:
    """Record the folder a run began in (`_galaxy/cwd`), once its settings are taken: a refused rerun wrote
    its own folder there, and the right command was then refused as begun elsewhere."""
    from galaxy.files import write_atomically

    record = _cwd_record(out_dir)
    if begun_in is not None and not record.is_file():
        write_atomically(record, lambda tmp: tmp.write_text(begun_in, encoding="utf-8", errors="surrogateescape"))


def _as_spelled_before(earlier: dict | None, inputs: list[str], catalog: str | None,
                       begun_in: str | None = None) -> tuple[list[str], str | None]:
    """The inputs and catalog as the run this one continues (its recorded settings, `earlier`) spelled them, where they name the same files
    (`in1/` for `in1`, an absolute path for a relative one: tab completion's slash had refused the rerun
    as "started with other settings"; a symbolic link for what it points to, as one machine's resume reads
    a file through one; a relative spelling read from `begun_in`, the folder that run began in); as given
    otherwise. The listing's digest still compares what they hold."""
    def same(before, now) -> bool:
        return os.path.realpath(os.path.join(begun_in or os.getcwd(), before)) == os.path.realpath(now)

    before, catalog_before = (earlier or {}).get("inputs"), (earlier or {}).get("catalog")
    if (isinstance(before, list) and len(before) == len(inputs)
            and all(isinstance(b, str) and same(b, a) for b, a in zip(before, inputs))):
        inputs = before
    if isinstance(catalog_before, str) and catalog is not None and same(catalog_before, catalog):
        catalog = catalog_before
    return inputs, catalog


def _require_listening(address: str | None, timeout: float = 5.0) -> None:
    """Refuse a `HOST:PORT` address where nothing listens: `ray.init` waited for it for ever, printing
    "Failed to connect to GCS" every few seconds (and Ctrl-C took ~30 s). `auto`, `ray://` and the
    local cluster are left to Ray.

    Raises:
        UsageError: nothing answers there within `timeout` seconds, with the hint.
    """
    import socket

    if not address or address in ("auto", "local") or "://" in address:  # ("local": Ray's own word for None)
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address}: not an address of a Ray cluster (HOST:PORT, auto or ray://HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"--ray {address}: cannot reach a Ray cluster (nothing answers at {address}: "
                         f"{exc.strerror or exc}): start one with `ray start --head`, or give --ray alone for a "
                         "local cluster") from None


def actor_failure(exc: BaseException) -> BaseException:
    """What to raise for an error a shard's actor raised, which Ray wraps (RayTaskError, UserCodeException):
    the error itself where it is galaxy's or an OSError (one line naming the file and the reason, as
    on one machine), else a GalaxyError saying what failed; errors that are not an actor's as they are."""
    import ray.exceptions

    if not isinstance(exc, ray.exceptions.RayError):
        return exc
    cause = exc
    while isinstance(cause, ray.exceptions.RayError):
        cause = getattr(cause, "cause", None) or cause.__cause__
    if isinstance(cause, (GalaxyError, OSError)):
        return cause
    what = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}" if cause else str(exc)[:200]
    return GalaxyError(f"--ray: a shard's actor failed ({what}); the parts written are kept: rerun the same "
                       "command to go on")


def _warn_rows(off_centre: dict[int, OffCentreRows], masked: dict[int, MaskedRows]) -> None:
    """The warnings of a run about rows whose catalog position is not their cutout's centre and rows whose
    crop was much masked, the shards merged in listing order (ids as the catalog or headers give them,
    before `stem#2` renaming)."""
    merged, merged_masked = OffCentreRows(), MaskedRows()
    for index in sorted(off_centre):
        merged.merge(off_centre[index])
        merged_masked.merge(masked[index])
    # warnings: the parts are written, and the exit status stays
    for line in [*merged.warnings(), *merged_masked.warnings()]:
        log.warning("%s", line)
