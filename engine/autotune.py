"""`--backend auto` on a CPU: measured on the machine it runs on, once, then read from the cache.

The card says which backends passed their agreement check against fp32 on the validation
split (`galaxy check-backends`); how fast each is depends on the CPU it runs on (int8 is
faster than fp32 only with VNNI/AMX, bf16 needs native bf16). So the first run of a model on
a machine times every checked backend that can run there, for a few seconds each on real
cutouts (the package's samples), taking turns, best of `ROUNDS`; the result is cached under
$GALAXY_CACHE/autotune/ keyed by the CPU model and flags, the core count, the library
versions and the engine key. Later runs read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.artifacts import cache_dir
from engine.machine import cpu_description, installed_version
from galaxy.files import write_atomically

log = logging.getLogger(__name__)

ROUNDS = 3
SECONDS_PER_PASS = 1.0  # each pass runs whole batches until this much time has passed


def machine_key(card, candidates, model_dir=None, streams: dict | None = None, batch: int = 32,
                threads: dict | None = None, spin_wait: bool = False) -> tuple[str, dict]:
    """(short hash, what it hashes): CPU, flags, cores, library versions, engine key, candidates,
    the streams each runs with and the threads of each stream (`--threads`: a 1-thread record had
    answered a 2-thread run) and whether ONNX Runtime's threads spin (bench's engine rows do, classify
    does not), the batch size, and the int8 model the int8 backend would load (its
    recipe and fingerprint: another build is timed afresh)."""
    import onnxruntime

    what = dict(cpu_description(), torch=installed_version("torch"), onnxruntime=onnxruntime.__version__,
                engine=card.engine_key, candidates=sorted(candidates), streams=streams or {}, batch=batch,
                threads=threads or {}, **({"spin_wait": True} if spin_wait else {}))
    if "onnxruntime-int8" in candidates:
        from engine.int8_models import int8_fingerprint, int8_recipe

        what["int8_recipe"] = int8_recipe(model_dir, card)  # shipped (rebuilt on first use), or built
        what["int8_fingerprint"] = int8_fingerprint(model_dir, card)
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16], what


def sample_batch(card, batch: int) -> np.ndarray:
    """A batch of real preprocessed cutouts: the package's samples, repeated to `batch`."""
    from galaxy.card import SAMPLES_DIR
    from galaxy.io.images import load_input

    tensors = [load_input(p, card.input_spec)[0] for p in sorted(SAMPLES_DIR.glob("*.jpeg"))]
    return np.stack([tensors[k % len(tensors)] for k in range(batch)])


def time_sessions(sessions: dict, batch: np.ndarray, rounds: int = ROUNDS, streams: dict | None = None
                  ) -> dict[str, float]:
    """Images/s of each session on `batch`: best of `rounds` timed passes, the sessions taking turns;
    in each pass `streams[name]` threads (default 1) run batches at once, as the runner will."""
    best = dict.fromkeys(sessions, 0.0)
    for session in sessions.values():
        session.run(batch)  # warm-up: first-call allocations and lazy initialisation
    for _ in range(rounds):
        for name, session in sessions.items():
            started = time.perf_counter()

            def stream() -> int:
                done = 0
                while time.perf_counter() - started < SECONDS_PER_PASS:
                    session.run(batch)
                    done += len(batch)
                return done

            count = (streams or {}).get(name, 1)
            if count > 1:
                with ThreadPoolExecutor(count) as pool:
                    done = sum(pool.map(lambda _: stream(), range(count)))
            else:
                done = stream()
            best[name] = max(best[name], done / (time.perf_counter() - started))
    return best


def _check_record(record, candidates) -> None:
    """Refuse a speed record that is not what `measured_choice` writes (valid JSON of another shape: a
    hand edit, another version): its fields were indexed as they were and gave tracebacks.

    Raises:
        ValueError: naming what is wrong.
    """
    if not isinstance(record, dict) or not isinstance(record.get("images_per_s"), dict) \
            or not isinstance(record.get("machine"), dict) or not {"cpu", "cores"} <= set(record["machine"]) \
            or not isinstance(record.get("measured"), str):
        raise ValueError("not a speed record")
    if record.get("chosen") not in candidates:
        raise ValueError(f"it chose {record.get('chosen')!r}, not one of {', '.join(candidates)}")
    speeds = record["images_per_s"]
    wrong = [name for name, value in speeds.items()
             if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)))]
    if wrong or not isinstance(speeds.get(record["chosen"]), (int, float)):
        raise ValueError(f"its speeds are not numbers of images/s (chosen {record['chosen']!r}: "
                         f"{speeds.get(record['chosen'])!r})")


def measured_choice(card, candidates: list[str], batch_size: int, load, model_dir=None,
                    streams: dict | None = None, threads: dict | None = None,
                    spin_wait: bool = False) -> tuple[str, dict]:
    """The fastest of `candidates` on this machine and the record it comes from (cached).

    `load(name) -> Session` opens a candidate (the backend table passes its own loader, so this
    module does not import the table back); `model_dir` tells which int8 recipe it would load;
    `streams`: per candidate, how many batches it will run at once (`BackendOptions.streams`); `threads`:
    per candidate, the threads of each (`BackendOptions.threads`, 0 for the backend's default);
    `spin_wait`: `BackendOptions.spin_wait`.

    Returns:
        (backend name, record with "images_per_s" per candidate, "machine", "measured").
    """
    key, what = machine_key(card, candidates, model_dir, streams, batch_size, threads, spin_wait)
    path = cache_dir() / "autotune" / f"{key}.json"
    record = _cached(path, candidates, what)
    if record is not None:
        return record["chosen"], record
    # One process of those starting at once (a job array on one node) measures, the others wait for its
    # record: each measuring on cores the others shared, they chose differently.
    with _measuring(path):
        record = _cached(path, candidates, what, warn=False)  # another process's new record; an unreadable one was said
        if record is not None:
            return record["chosen"], record
        return _measure(card, candidates, batch_size, load, streams, path, what)


def _cached(path: Path, candidates, what: dict, warn: bool = True) -> dict | None:
    """The record at `path` when it is one `measured_choice` wrote for `what` (this machine, these
    libraries and candidates: a record edited or copied under this name had been trusted, its log line
    naming another CPU as "measured on this machine"), else None (said unless `warn` is False)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        _check_record(record, candidates)
        if record["machine"] != json.loads(json.dumps(what)):
            raise ValueError("it was measured for another machine, library versions or model")
        return record
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if warn:
            log.warning("ignoring the speed record %s (%s); measuring again", path, exc)
        return None


@contextlib.contextmanager
def _measuring(path: Path):
    """Hold an exclusive lock beside `path` while measuring (waiting for another process's); without
    one where the cache cannot be written or its file system has no locks (Lustre without flock, NFS
    with nolock: ENOLCK): each process then measures for itself."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a+")
    except OSError:
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as exc:
            log.debug("measuring without a lock: %s", exc)
        yield


def _measure(card, candidates, batch_size, load, streams, path: Path, what: dict) -> tuple[str, dict]:
    passing = {}  # the candidates that failed to load, and whether the failure may pass (a full cache freed)
    if len(candidates) == 1:
        speeds = {candidates[0]: None}
    else:
        log.info("measuring %s on this machine (once; cached in %s)", ", ".join(candidates), path.parent)
        sessions = {}
        for name in candidates:
            try:
                sessions[name] = load(name)
            except Exception as exc:  # e.g. a shipped int8 recipe that rebuilds differently here, an int8
                # model that cannot be built into a read-only cache: auto drops it, ONNX Runtime fp32 stays
                if name == "onnxruntime":
                    raise
                log.warning("%s cannot run here (%s: %s); not a candidate", name, type(exc).__name__, exc)
                passing[name] = not getattr(exc, "lasting", False)
        measured = time_sessions(sessions, sample_batch(card, batch_size), streams=streams)
        speeds = {n: round(v, 1) for n, v in measured.items()}
        speeds |= {n: None for n in candidates if n not in sessions}
    chosen = max(candidates, key=lambda n: speeds[n] or 0.0)
    record = {"chosen": chosen, "images_per_s": speeds, "batch": batch_size, "machine": what,
              "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if any(passing.values()):  # recorded, int8 was dropped for good after a disk filled once
        log.warning("not caching this choice: %s may run once the cause above is mended; measured again next time",
                    ", ".join(name for name, again in passing.items() if again))
        return chosen, record
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    except OSError as exc:
        log.warning("cannot cache the speed record in %s (%s); it is measured again next time", path, exc)
    return chosen, record
