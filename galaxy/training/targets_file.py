"""The soft-targets files: a run's `soft_targets.npz` (and each teacher's own cache file) written and
read back, `--teacher-targets FILE` read and checked in place of the teachers, and the copy a model
folder keeps of that file (`teacher_targets.npz`). Computing the targets is `galaxy.training.soft_targets`."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from galaxy.config import cache_dir
from galaxy.errors import UsageError
from galaxy.files import write_atomically
from galaxy.card import file_sha256

log = logging.getLogger(__name__)

TARGETS_FILE = "soft_targets.npz"
# A model folder's copy of the --teacher-targets file it learned from: committed beside the card, it makes the
# model reproducible from git (the teacher's weights need not be kept).
KEPT_TARGETS_FILE = "teacher_targets.npz"
# What np.load raises on a file that is not a whole npz of ours: empty (EOFError), torn (BadZipFile),
# another npz (KeyError), not one at all (ValueError, pickled objects refused), unreadable (OSError).
UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


def _records_provenance(path: Path) -> bool:
    """Whether a run's targets file records its classes and its teachers' training ids."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {"classes", "learned_ids"} <= set(stored.files)
    except UNREADABLE:
        return False


def targets_from_file(path, classes, paths, ids, views: int) -> tuple[np.ndarray, dict, frozenset]:
    """Soft targets read from a run's `soft_targets.npz` instead of computed by its teachers (`--teacher-targets`).

    The file must hold targets of exactly these images (`ids` in their order, the same bytes) in these
    classes and views, and record the ids its teachers learned from (for the student's leak checks and
    its `train_ids.txt`); its key (the teachers' weights hashes, temperatures, input specs, views and
    framing) becomes the student's record, with the file's path and sha256.

    Args:
        path: the file.
        classes: the class names of the training.
        paths, ids: the pool (the labelled training split, then the unlabelled images).
        views: the teacher views of the run (--teacher-views), which the file's must be.

    Returns:
        (probabilities float32 (N, K), the teacher record for the card, the ids the teachers learned from).

    Raises:
        UsageError: not such a file, or made for other images, classes or views, naming what differs.
    """
    where = f"--teacher-targets {path}"
    stored = _stored_targets(path, where)
    key, stored_ids, probabilities = stored["key"], stored["ids"], stored["probabilities"]
    if "learned_ids" not in stored or "classes" not in stored:
        cached = Path(path).resolve().parent == (cache_dir() / "soft_targets").resolve()
        why = ("a teacher's own cache file, which does not record them: give the soft_targets.npz of the run's "
               "checkpoints folder" if cached else "written before such files did, or a teacher without "
               "train_ids.txt: this run could not check that no teacher saw its validation images; name the "
               "teachers instead")
        raise UsageError(f"{where} does not record its classes and the images its teachers learned from ({why})")
    if tuple(stored["classes"]) != tuple(classes):
        raise UsageError(f"{where} holds targets for classes {tuple(stored['classes'])}, this training uses "
                         f"{tuple(classes)}")
    if key.get("views") != views:
        raise UsageError(f"{where} holds {key.get('views')}-view targets: give --teacher-views {key.get('views')} "
                         "(the run's record must say what it learned from), or name the teachers instead")
    if stored_ids != list(ids):
        first = next((i for i, (a, b) in enumerate(zip(stored_ids, ids)) if a != b), min(len(stored_ids), len(ids)))
        example = (f"image {first}: {stored_ids[first] if first < len(stored_ids) else 'none'} there, "
                   f"{ids[first] if first < len(ids) else 'none'} here")
        raise UsageError(f"{where} holds targets of {len(stored_ids)} images, this run learns from {len(ids)} (its "
                         f"labelled training split, then the --unlabeled images; {example}): give the data, --seed, "
                         "--val-fraction, --limit and --unlabeled folders the file was made with")
    if probabilities.shape != (len(ids), len(classes)):
        raise UsageError(f"{where}: its probabilities are {probabilities.shape}, expected ({len(ids)}, {len(classes)}) "
                         "(one row per image, one column per class)")
    if key.get("contents_sha256") != contents_digest(paths):
        raise UsageError(f"{where} was made from images with the same names and other contents: give the images "
                         "it was made from, or name the teachers instead")
    record = {**key, "targets_file": str(path), "targets_sha256": stored["sha256"]}
    log.info("soft targets: read from %s (teachers %s, %s views)", path,
             ", ".join(t.get("name", "?") for t in key.get("teachers", [])), key.get("views"))
    return probabilities, record, frozenset(stored["learned_ids"])


def _stored_targets(path, where: str) -> dict:
    """The arrays of a soft-targets file, checked for what `_write_targets` writes: a JSON object for key,
    1-d string arrays of ids (and classes, learned ids: non-empty, where present), probabilities that are
    2-d, finite, in [0, 1], each row summing to 1; with the file's sha256.

    Raises:
        UsageError: not such a file, naming what is wrong.
    """
    def strings(array, name: str, empty_ok: bool = True) -> list[str]:
        if array.ndim != 1 or array.dtype.kind != "U" or (not empty_ok and not len(array)):
            raise UsageError(f"{where}: its {name} are not a {'non-empty ' if not empty_ok else ''}list of strings "
                             f"({array.dtype}, shape {array.shape})")
        return array.tolist()

    try:
        raw = Path(path).read_bytes()
        with np.load(io.BytesIO(raw), allow_pickle=False) as stored:  # the bytes the sha256 below is of
            key = json.loads(str(stored["key"]))
            found = {"ids": strings(stored["ids"], "ids"), "probabilities": np.asarray(stored["probabilities"])}
            for name in ("classes", "learned_ids"):
                if name in stored.files:
                    found[name] = strings(stored[name], name.replace("_", " "), empty_ok=False)
    except UNREADABLE as exc:
        raise UsageError(f"{where}: not a soft-targets file ({type(exc).__name__}: {exc}); give the "
                         f"{TARGETS_FILE} of a training run's checkpoints folder") from None
    if not isinstance(key, dict):
        raise UsageError(f"{where}: its key is not a record of teachers and images ({type(key).__name__})")
    probabilities = found["probabilities"]
    if (probabilities.ndim != 2 or probabilities.dtype.kind != "f" or not np.isfinite(probabilities).all()
            or (probabilities < 0).any() or (probabilities > 1).any()
            or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)):
        raise UsageError(f"{where}: its probabilities are not one distribution per image (shape "
                         f"{probabilities.shape}, dtype {probabilities.dtype}: 2-d, finite, in [0, 1], rows "
                         "summing to 1)")
    found["probabilities"] = probabilities.astype(np.float32)
    return {**found, "key": key, "sha256": hashlib.sha256(raw).hexdigest()}


def contents_digest(paths) -> str:
    """sha256 over the images' bytes, in their order (~0.2 s for the 10,310 images of the shipped recipe)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def _read_targets(path: Path, key: dict, ids) -> np.ndarray | None:
    """The stored probabilities when `path` holds targets made for `key` and for `ids` in this order (the
    key's contents digest is of this order; ids may repeat, two folders holding one file name), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            # compared as JSON: a key's tuples (an input spec's mean) come back as lists
            if json.loads(str(stored["key"])) != json.loads(json.dumps(key)) or stored["ids"].tolist() != list(ids):
                return None
            return stored["probabilities"]
    except UNREADABLE as exc:  # a torn or foreign file: label again, say why
        log.warning("soft targets: cannot read %s (%s); recomputing", path, exc)
        return None


def _write_targets(path: Path, ids, probabilities: np.ndarray, key: dict, classes=None,
                   learned: list[str] | None = None) -> None:
    """Store targets under their key; a run's file also records its classes and the ids its teachers
    learned from (when every teacher records them), so that `targets_from_file` can stand in for them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if classes is None or learned is None else {"classes": np.array(classes, dtype=str),
                                                           "learned_ids": np.array(learned, dtype=str)}

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file object: np.savez would add ".npz" to the temporary name
            np.savez_compressed(fh, ids=np.array(ids, dtype=str), probabilities=probabilities.astype(np.float32),
                                key=json.dumps(key), **extra)

    write_atomically(path, write)


def keep_targets(record: dict, out_dir) -> dict:
    """Copy the --teacher-targets file a run learned from (its `record`, from `targets_from_file`) into the model
    folder as KEPT_TARGETS_FILE, checked against the sha256 it was read with; returns the record naming the copy.

    Called as the run starts, right after the file was read and checked.

    Raises:
        UsageError: the file cannot be read again, or changed since the run read it.
    """
    from galaxy.files import same_file

    kept = Path(out_dir) / KEPT_TARGETS_FILE
    if not same_file(record["targets_file"], kept):
        where = f"--teacher-targets {record['targets_file']}"
        try:
            raw = Path(record["targets_file"]).read_bytes()
        except OSError as exc:
            raise UsageError(f"{where}: cannot read it again to keep a copy beside the model ({exc})") from None
        if hashlib.sha256(raw).hexdigest() != record["targets_sha256"]:
            raise UsageError(f"{where} changed while this run read it (its sha256 differs): rerun")
        write_atomically(kept, lambda tmp: tmp.write_bytes(raw))
    return {**record, "kept_as": KEPT_TARGETS_FILE}
