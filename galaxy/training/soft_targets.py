"""Soft targets from a teacher (one model, or an ensemble), for self-training and distillation.

Noisy Student (Xie et al. 2020): a trained teacher labels the images clean (no augmentation,
but D4 test-time averaging, which is free of noise for galaxies that have no up); a student
then learns from those soft targets under strong noise. Each teacher reads the images with its
own InputSpec and its calibrated temperature; an ensemble averages the probabilities. The
targets are computed once and cached in the work dir (`soft_targets.npz`, keyed by the
teachers' weights, temperatures and input specs, the images' ids and contents in their order, and
the views), so a resumed run reuses them. Each teacher's own
probabilities are also cached under $GALAXY_CACHE/soft_targets/ (keyed the same way, one teacher),
so a new run with an ensemble that shares a member with an earlier run labels only the new members:
a 192 px teacher's D4 labels of ~10,000 images cost about half an hour on two CPU cores.

A run's `soft_targets.npz` also records the class names and the ids its teachers learned from, so
that it can stand in for the teachers (`--teacher-targets FILE`, `targets_from_file`): a teacher
trained on a GPU is 42 MB of weights, its targets on the 10,310 training images ~1 MB, and the
targets are all a student learns from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from galaxy.config import cache_dir
from galaxy.errors import UsageError
from galaxy.files import write_atomically
from galaxy.training.image_cache import build_cache
from galaxy.card import file_sha256, ids_digest
from galaxy.training.predict import predict

log = logging.getLogger(__name__)

TARGETS_FILE = "soft_targets.npz"
# A model folder's copy of the --teacher-targets file it learned from: committed beside the card, it makes the
# model reproducible from git (the teacher's weights need not be kept).
KEPT_TARGETS_FILE = "teacher_targets.npz"
# What np.load raises on a file that is not a whole npz of ours: empty (EOFError), torn (BadZipFile),
# another npz (KeyError), not one at all (ValueError, pickled objects refused), unreadable (OSError).
UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


def resolve_teachers(teachers, init_dir: str | None) -> tuple[str, ...]:
    """The teacher model folders: those given, else the initial model when it is a trained galaxy model.

    Raises:
        UsageError: no teacher is given and `init_dir` is not a galaxy model folder.
    """
    if teachers:
        return tuple(str(t) for t in teachers)
    if init_dir and (Path(init_dir) / "card.json").is_file():
        return (str(init_dir),)
    got = f"--init {init_dir} has no card.json" if init_dir else "--init is scratch or imagenet"
    raise UsageError(f"soft targets need a teacher: --teacher MODEL_DIR, or --init a trained galaxy model ({got})")


def teacher_record(model_dir: str, classes) -> tuple[dict, object]:
    """(what the targets depend on of a teacher, with its folder; its card).

    Raises:
        ModelError: not a model folder, or weights that are not its card's.
        UsageError: other classes than the training's.
    """
    from galaxy.card import load_card

    card = load_card(model_dir)
    if tuple(card.classes) != tuple(classes):
        raise UsageError(f"teacher {model_dir} has classes {card.classes}, training uses {tuple(classes)}")
    return {"dir": str(model_dir), "name": card.name, "weights_sha256": card.weights_sha256,
            "temperature": card.temperature, "input_spec": card.input_spec.to_dict()}, card


def targets_source(teachers: list[dict], paths, ids, views: int) -> dict:
    """What soft targets depend on, the key of their caches: each teacher's weights, temperature and
    input spec (`teacher_record`, its folder left out: the same teacher elsewhere gives the same
    labels), the images' ids and contents in their order, the views. Keyed by ids alone (file stems),
    a folder of other images under the same names reused the old targets."""
    return {"teachers": [{k: v for k, v in t.items() if k != "dir"} for t in teachers], "views": views,
            "ids_sha256": ids_digest(ids), "n": len(ids), "contents_sha256": contents_digest(paths)}


def check_resumed_targets(expected: dict, teachers: list[dict], paths, ids, views: int, checkpoint) -> None:
    """Refuse, before anything is read or labelled, a resume whose soft targets would not be the
    checkpoint's (`expected`, its `targets_key`): a teacher replaced at its path, unlabelled images
    replaced or added. (The framing scale is measured later, from the same images.)

    Raises:
        UsageError: naming what differs.
    """
    now = json.loads(json.dumps(targets_source(teachers, paths, ids, views)))
    differs = [name for name in ("teachers", "views", "n", "ids_sha256", "contents_sha256")
               if expected.get(name) != now[name]]
    if differs:
        what = "a teacher's weights or inputs" if "teachers" in differs else "the images (their names or contents)"
        raise UsageError(f"checkpoint {checkpoint} learned from other soft targets: {what} changed since it was "
                         "written; resume with the teachers and images it was written with, or start a new run")


def targets_key(teacher: dict | None) -> dict | None:
    """What a run's soft targets were made from (the teachers' weights and inputs, the images' ids and
    contents, the views; read from a file, the file's sha256), from the teacher record; None without a teacher."""
    if teacher is None:
        return None
    return json.loads(json.dumps({key: value for key, value in teacher.items() if key in (
        "views", "ids_sha256", "n", "contents_sha256", "framing", "targets_sha256")} | {"teachers": [
            {k: v for k, v in member.items() if k != "dir"} for member in teacher.get("teachers", [])]}))


def teacher_probabilities(teachers, classes, paths, ids, work_dir, views: int, workers: int, device, amp_dtype,
                          show: bool = True, scale: float = 1.0, scaled_from: int | None = None) -> tuple[np.ndarray, dict]:
    """The (ensemble-averaged, calibrated) teacher probabilities of every image, cached.

    Args:
        teachers: model folders.
        classes: the class names the targets must be in.
        paths, ids: the images (any order) and their ids.
        work_dir: where `soft_targets.npz` is kept.
        views: 8 for D4 test-time averaging, 1 for none.
        workers: image reading threads.
        device, amp_dtype: where the teachers run.
        scale, scaled_from: the images from index `scaled_from` on (the unlabelled ones) show their
            galaxies `scale` times as large as the teachers' training cutouts: each teacher reads them
            through a centre crop `scale` times its own (`--unlabeled-framing auto`).

    Returns:
        (probabilities float32 (N, K) in the order of `ids`, record for the card: teachers,
        views, seconds and images/s of the labelling, whether the cache was reused, and which
        members' labels came from the per-teacher cache).
    """
    records = [teacher_record(t, classes) for t in teachers]
    key = targets_source([r for r, _ in records], paths, ids, views)
    rescaled = scaled_from is not None and scaled_from < len(ids) and round(scale, 4) != 1
    if rescaled:  # only then, so targets cached before this option still match
        key["framing"] = {"scale": round(scale, 4), "scaled_ids_sha256": ids_digest(ids[scaled_from:])}
    common = {k: v for k, v in key.items() if k != "teachers"}
    record = {**key, "teachers": [r for r, _ in records]}  # for the card: with the folders
    path = Path(work_dir) / TARGETS_FILE
    stored = _read_targets(path, key, ids)
    if stored is not None:
        log.info("soft targets: reusing %s", path)
        learned = None if _records_provenance(path) else _teachers_learned(records)
        if learned is not None:  # written before files recorded it: what --teacher-targets needs
            _write_targets(path, ids, stored, key, classes, learned)
        return stored, {**record, "reused": str(path)}
    if path.is_file():
        log.info("soft targets: %s was made for other teachers or images; recomputing", path)
    timing, members_reused = {}, []
    started, total = time.time(), np.zeros((len(ids), len(classes)), dtype=np.float64)
    for teacher, card in records:
        member_key = {"teachers": [{k: v for k, v in teacher.items() if k != "dir"}], **common}
        member_path = _member_path(member_key)
        member = _read_targets(member_path, member_key, ids)
        if member is not None:
            log.info("teacher %s: reusing its labels of these images (%s)", card.name, member_path)
            members_reused.append(card.name)
            total += member
            continue
        with torch.random.fork_rng(devices=[]):  # building the teacher draws init weights: keep the seed's
            # stream as it is, so a run learns the same whether its targets were cached or computed
            member, timing[card.name] = _label(teacher["dir"], card, paths, views, workers, device, amp_dtype, show,
                                               scale if rescaled else 1.0, scaled_from if rescaled else len(paths))
        log.info("teacher %s: %d images x %d views in %.0f s (%.1f images/s)", card.name, len(ids), views,
                 timing[card.name], len(ids) / max(timing[card.name], 1e-9))
        _write_targets(member_path, ids, member, member_key)
        total += member
    probabilities = (total / len(records)).astype(np.float32)
    seconds = time.time() - started
    _write_targets(path, ids, probabilities, key, classes, _teachers_learned(records))
    return probabilities, {**record, "seconds": round(seconds, 1), "inference_seconds": timing,
                           "members_reused": members_reused, "images_per_s": round(len(ids) / seconds, 1)}


def _label(model_dir: str, card, paths, views: int, workers: int, device, amp_dtype, show: bool,
           scale: float = 1.0, scaled_from: int | None = None) -> tuple[np.ndarray, float]:
    """One teacher's calibrated probabilities (N, K) float64 of `paths` in their order, and the inference
    seconds; `paths[scaled_from:]` are read through a crop `scale` times the teacher's."""
    from galaxy.training.model import load_network

    network, _ = load_network(model_dir, card)
    network = network.to(device).to(memory_format=torch.channels_last)
    spec = card.input_spec
    split = len(paths) if scaled_from is None else scaled_from
    parts, seconds = [], 0.0
    for part, crop in ((paths[:split], spec.crop_fraction), (paths[split:], min(1.0, spec.crop_fraction * scale))):
        if not part:
            continue
        if crop != spec.crop_fraction:
            log.info("teacher %s reads %d unlabelled images through a centre crop of %.3f (its own: %g)",
                     card.name, len(part), crop, spec.crop_fraction)
        cache = build_cache(part, crop, spec.size, workers, show, what="teacher input")
        t0 = time.time()
        parts.append(np.asarray(predict(network, cache, spec, device, amp_dtype, views=views), dtype=np.float64))
        seconds += time.time() - t0
    return np.concatenate(parts), round(seconds, 1)


def _records_provenance(path: Path) -> bool:
    """Whether a run's targets file records its classes and its teachers' training ids."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {"classes", "learned_ids"} <= set(stored.files)
    except UNREADABLE:
        return False


def _teachers_learned(records) -> list[str] | None:
    """Every id the teachers learned from (their `train_ids.txt`), or None when one does not record them."""
    from galaxy.card import training_ids

    learned = set()
    for teacher, card in records:
        ids = training_ids(teacher["dir"], card)
        if ids is None:
            return None
        learned |= ids
    return sorted(learned)


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


def _member_path(member_key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(member_key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "soft_targets" / f"{digest}.npz"


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


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """Targets at a temperature: softmax(log p / T) of (N, K) probabilities (T > 1 softens)."""
    return torch.softmax(torch.log(probabilities.clamp_min(1e-7)) / temperature, dim=1)


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                     class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Knowledge-distillation loss: cross entropy of the student at T against targets at T, times T^2.

    Args:
        logits: (B, K) float32 student logits.
        targets: (B, K) teacher probabilities already at `temperature` (`sharpen`).
        temperature: T (Hinton et al. 2015; T^2 keeps gradients comparable across T).
        class_weights: (K,) or None; each row is weighted by its targets' expected class
            weight, so the imbalance correction of the label loss carries over.

    Returns:
        scalar float32.
    """
    per_row = -(targets * F.log_softmax(logits / temperature, dim=1)).sum(dim=1)
    weights = targets @ class_weights if class_weights is not None else torch.ones_like(per_row)
    return (weights * per_row).sum() / weights.sum() * temperature ** 2


def keep_targets(record: dict, out_dir) -> dict:
    """Copy the --teacher-targets file a run learned from (its `record`, from `targets_from_file`) into the model
    folder as KEPT_TARGETS_FILE, checked against the sha256 it was read with; returns the record naming the copy.

    Called as the run starts, right after the file was read and checked.

    Raises:
        UsageError: the file cannot be read again, or changed since the run read it.
    """
    from galaxy.files import same_file, write_atomically

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
