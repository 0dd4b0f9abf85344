"""What `galaxy train` learns from: the labelled split, the unlabelled pool, caches, targets.

The training pool is the labelled training split followed by the unlabelled images (label -1).
Its cache holds a wider field (`cache_fraction` of the side) at the scale where the spec's
crop is `size` pixels, so zoom, rotation and translation (`galaxy.training.augment`) resample it per
batch. The validation cache is the exact spec preprocessing. With a teacher, every pool image
carries the teacher's soft targets (`galaxy.training.soft_targets`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from galaxy.config import TrainConfig, config_dict
from galaxy.errors import ImageReadError, unreadable, UsageError
from galaxy.io.framing import SAMPLE, measure_files, summarise
from galaxy.io.images import stem_id
from galaxy.training.image_cache import build_cache, build_fits_view_cache
from galaxy.training.leak_checks import check_checkpoint_split, check_split, check_unseen, learned_by
from galaxy.card import file_sha256, ids_digest
from galaxy.labels import LabelledSet, list_unlabelled, load_labelled, stratified_split
from galaxy.training.soft_targets import (check_resumed_targets, resolve_teachers, sharpen, targets_key,
                                          teacher_probabilities, teacher_record)
from galaxy.training.targets_file import targets_from_file
from galaxy.spec import InputSpec
from galaxy.training.transfer import checkpoint_record, init_model_folder, initial_weights
from galaxy.votes import VoteRule, is_vote_table, rule_from_config

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Tensors and records of one training run.

    Attributes:
        train_set, val_set: the labelled split.
        unlabelled_paths, unlabelled_ids: the unlabelled pool (empty without --unlabeled).
        pool_cache: float16 (N, 3, S, S) in [0, 1]: train_set then the unlabelled images,
            each the central `cache_fraction` of its cutout.
        pool_labels: int64 (N,): class index, -1 for unlabelled.
        cache_fraction: the field the pool cache holds.
        val_cache: float16 (M, 3, size, size), the spec's exact preprocessing.
        spec: the InputSpec of the model being trained.
        targets: float32 (N, K) teacher targets at the soft temperature, or None.
        teacher: the teacher record for the card, or None.
        fits_cache: float16 (len(train_set), V, 3, S, S): the FITS-path views of the labelled
            training images (`--fits-views`), or None.
        pool_framing: float64 (N,): each pool image's Petrosian radius as a fraction of its cutout's
            side (`galaxy.io.framing`, the values it returned; nan where none was found), for
            `--apparent-size`; else None.
    """

    train_set: LabelledSet
    val_set: LabelledSet
    unlabelled_paths: tuple[str, ...]
    unlabelled_ids: tuple[str, ...]
    pool_cache: torch.Tensor
    pool_labels: torch.Tensor
    cache_fraction: float
    val_cache: torch.Tensor
    spec: InputSpec
    targets: torch.Tensor | None
    teacher: dict | None
    fits_cache: torch.Tensor | None = None
    pool_framing: torch.Tensor | None = None
    # the labelled ids the --init model and teachers learned; None where one of them does not record its own
    inherited_ids: frozenset | None = frozenset()
    labelled_sha256: str = ""  # `labelled_digest` of the split: what a resume must find again

    def learned_ids(self) -> list[str] | None:
        """Every id the model learned from, directly or through its initial weights and teachers: the
        labelled training split and the unlabelled pool (it fitted the teacher's targets there, so a
        score on those images is not a score on unseen galaxies): what its `train_ids.txt` records for
        later leak checks. Each labelled image's file stem too where it is not its id (a GZ2 vote
        table's dr7objid names a file by asset id), so a later run that names the same files by path
        finds them. None where the --init model or a teacher does not record what it learned: a list
        without its images would pass later leak checks it must fail (review, session 44)."""
        if self.inherited_ids is None:
            return None
        stems = {stem_id(path) for path in self.train_set.paths}
        return sorted(set(self.train_set.ids) | stems | set(self.unlabelled_ids) | self.inherited_ids)

    def record(self, config: TrainConfig) -> dict:
        """The data as the card records it."""
        return {"labelled": str(config.data), "n_train": len(self.train_set), "labelled_sha256": self.labelled_sha256,
                "unlabeled": {"folders": list(config.unlabeled), "n": len(self.unlabelled_ids),
                              "ids_sha256": ids_digest(self.unlabelled_ids)} if config.unlabeled else None,
                "cache_fraction": self.cache_fraction,
                "fits_views": {"per_image": config.fits_views, "probability": config.fits_probability,
                               "r_band_alone": True} if config.fits_views else None,
                "pool_framing": summarise(self.pool_framing.tolist()) if self.pool_framing is not None else None}


def labelled_digest(train_set: LabelledSet, val_set: LabelledSet) -> str:
    """sha256 of the labelled split as a run learns and scores it: each image's split, id, class and
    file contents, in order (~0.2 s for the 5,365 gz1-sdss cutouts). The ids' digests alone missed an
    image replaced under its name and a label changed in the CSV."""
    digest, failed = hashlib.sha256(), []
    for split, labelled in (("train", train_set), ("val", val_set)):
        for ident, label, path in zip(labelled.ids, labelled.labels, labelled.paths):
            digest.update(f"{split}\0{ident}\0{label}\0".encode("utf-8", "surrogateescape"))
            try:
                digest.update(bytes.fromhex(file_sha256(path)))
            except OSError as exc:  # every missing file named in one run (the first had ended it)
                what = "training" if split == "train" else "validation"  # (as the image caches say it)
                failed.append(ImageReadError(path, f"{what} image unreadable: {exc.strerror or exc}"))
    if failed:
        raise unreadable(failed)
    return digest.hexdigest()


def limited(part: LabelledSet, n: int) -> LabelledSet:
    """At most `n` images of a split, each class's share as in the split (largest remainders; one at
    least of each class where `n` allows), each class's first ones in the split's order. The first `n`
    of the split had been taken: class folders are listed class by class, so `--limit 32` trained on one."""
    if n >= len(part):
        return part
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(part.labels):
        by_class.setdefault(label, []).append(i)
    exact = {k: n * len(rows) / len(part) for k, rows in by_class.items()}
    quota = {k: int(v) for k, v in exact.items()}
    if n >= len(by_class):
        for k in quota:
            quota[k] = max(quota[k], 1)
    for k in sorted(exact, key=lambda k: (quota[k] - exact[k], k)):  # largest remainder first
        if sum(quota.values()) >= n:
            break
        quota[k] += 1
    while sum(quota.values()) > n:  # the one-each floor took too many: from the largest class
        quota[max(quota, key=quota.get)] -= 1
    return part.subset(sorted(i for k, rows in by_class.items() for i in rows[:quota[k]]))


def pool_cache_fraction(config: TrainConfig) -> float:
    """The field the training cache holds: room for zoom, translation and rotation, at most the whole cutout."""
    widest = max(config.crop_fraction * (1 + config.jitter),
                 config.zoom_range[1] if "zoom" in config.augment else 0.0, config.cache_fraction)
    return min(1.0, widest)


def _normalisation(config: TrainConfig, cache: torch.Tensor, cache_fraction: float):
    """Per-channel (mean, std): the initial model's when it is a galaxy model (its weights expect
    them), else those of the central `crop_fraction` of the training cache."""
    init = Path(initial_weights(config.init))
    folder = init_model_folder(init)  # a model's folder, or its weights file: that model's
    if folder is not None:
        from galaxy.card import load_card

        spec = load_card(folder, verify=False).input_spec
        return spec.mean, spec.std
    record = checkpoint_record(str(init))  # a run's last.pt: the spec its weights were trained with
    if record is not None and isinstance(record.get("spec"), dict) and "mean" in record["spec"]:
        return tuple(record["spec"]["mean"]), tuple(record["spec"]["std"])
    side = cache.shape[-1]
    half = int(round(side * config.crop_fraction / cache_fraction / 2))
    centre = cache[:, :, side // 2 - half:side // 2 + half, side // 2 - half:side // 2 + half].float()
    return (tuple(round(float(v), 5) for v in centre.mean(dim=(0, 2, 3))),
            tuple(round(float(v), 5) for v in centre.std(dim=(0, 2, 3))))


def unlabelled_scale(labelled_paths, unlabelled_paths, config: TrainConfig,
                     pool_framing: torch.Tensor | None = None) -> float:
    """How many times larger the unlabelled cutouts show their galaxies than the labelled training
    cutouts: the ratio of their median Petrosian radii (`galaxy.io.framing`), each measured on an
    even sample of `SAMPLE` images. 1.0 when there are no unlabelled images. `pool_framing` (the
    labelled then the unlabelled images, `pool_framing_of`) holds the measurements when given."""
    if not unlabelled_paths:
        return 1.0
    spec = InputSpec(size=config.size, crop_fraction=config.crop_fraction)

    def median(paths, measured):
        picks = range(0, len(paths), max(1, len(paths) // SAMPLE))[:SAMPLE]
        sample = [paths[i] for i in picks]
        fractions = ([measured[i] for i in picks] if measured is not None
                     else measure_files(sample, spec, config.workers)[0])
        summary = summarise(fractions)
        if not summary["measured"]:
            raise UsageError(f"--unlabeled-framing auto: no galaxy measured in {len(sample)} sampled cutouts "
                             f"(e.g. {sample[0]})")
        return summary["median"]

    n = len(labelled_paths)
    measured = pool_framing.tolist() if pool_framing is not None else None
    scale = (median(list(unlabelled_paths), None if measured is None else measured[n:])
             / median(list(labelled_paths), None if measured is None else measured[:n]))
    log.info("--unlabeled-framing auto: the unlabelled cutouts show their galaxies %.3fx as large as the "
             "labelled training cutouts", scale)
    return scale


def pool_framing_of(paths, config: TrainConfig) -> torch.Tensor:
    """Each image's Petrosian radius as a fraction of its side (`galaxy framing`'s measure), for
    `--apparent-size`: float64 (N,) as measured, nan where no galaxy stands out (those keep `--zoom-range`)."""
    fractions, _ = measure_files(paths, InputSpec(size=config.size, crop_fraction=config.crop_fraction),
                                 config.workers)
    framing = torch.tensor(fractions, dtype=torch.float64)
    log.info("--apparent-size: Petrosian radius of %d pool images measured (%s); %d without one keep the "
             "--zoom-range draw", len(paths), summarise(fractions), int((~torch.isfinite(framing)).sum()))
    return framing


def prepare_data(config: TrainConfig, work_dir: Path, device, amp_dtype, resumed: dict | None = None
                 ) -> TrainingData:
    """Load labels, split, list the unlabelled pool, read the caches and label the pool by the teacher.

    Args:
        resumed: the checkpoint a run resumes (None for a new run): its labelled split and soft targets
            must be this run's, checked before any image is decoded.

    Raises:
        UsageError: a resumed checkpoint's labelled images, labels or soft targets differ from this run's.
    """
    _refuse_vote_options_without_votes(config)
    labelled = load_labelled(config.data, config.classes, config.label_column, config.path_column,
                             rule_from_config(config_dict(config)))
    missing = [name for name, n in labelled.counts().items() if n < 2]
    if missing:
        raise UsageError(f"{config.data}: fewer than 2 images labelled {' or '.join(map(repr, missing))} "
                         f"({labelled.counts()}): a classifier learns from examples of every class, in both splits")
    train_set, val_set = stratified_split(labelled, config.val_fraction, config.seed)
    all_val_ids, all_val_paths = val_set.ids, val_set.paths
    if config.limit:
        train_set, val_set = limited(train_set, config.limit), limited(val_set, config.limit)
    for split, part in (("training", train_set), ("validation", val_set)):
        absent = [name for name, n in part.counts().items() if not n]
        if absent:  # a trial on one class, or a validation figure of one class (ROC AUC NaN), had been written
            raise UsageError(f"the {split} split holds no image labelled {' or '.join(map(repr, absent))} "
                             f"({part.counts()}{f', --limit {config.limit}' if config.limit else ''}): give more "
                             f"images of it, or a larger --limit / a {'smaller' if split == 'training' else 'larger'} "
                             "--val-fraction")
    labelled_sha256 = labelled_digest(train_set, val_set)
    if (resumed or {}).get("labelled_sha256", labelled_sha256) != labelled_sha256:
        raise UsageError(f"checkpoint {config.resume} learned from other labelled data: an image of {config.data} "
                         "or its label changed since it was written; resume with the data it was written with, or "
                         "start a new run")
    init = initial_weights(config.init)
    init = str(init_model_folder(init) or init)  # a model's weights file is that model (its card, its checks)
    check_split(init, "--init", config, labelled.ids, all_val_ids, val_set.ids, all_val_paths)
    checkpoint = checkpoint_record(init)
    check_checkpoint_split(checkpoint, config)
    if checkpoint is not None and checkpoint.get("learned") is not None:  # another --classes order, label column or
        # vote rule makes another split of the same data with the same seed: the images it learned are compared
        check_unseen(checkpoint["learned"], f"--init {config.init} (a checkpoint; another --classes order, label "
                     "column or vote rule splits the same data otherwise) was", all_val_ids, all_val_paths)
    teachers, records = (), []
    if (config.unlabeled or config.teachers) and not config.teacher_targets:  # a targets file stands in for them
        teachers = resolve_teachers(config.teachers, None if init in ("scratch", "imagenet") else init)
        # not a model, weights not its card's: refused before any image is read
        records = [teacher_record(teacher, config.classes)[0] for teacher in teachers]
        for teacher in teachers:
            check_split(teacher, "teacher", config, labelled.ids, all_val_ids, val_set.ids, all_val_paths)
    log.info("train %s, validation %s", train_set.counts(), val_set.counts())
    paths, ids = (), ()
    if config.unlabeled:
        paths, ids = list_unlabelled(config.unlabeled, exclude_ids=labelled.ids, refuse_ids=all_val_ids,
                                     exclude_files=sorted(set(labelled.paths) - set(all_val_paths)),
                                     refuse_files=all_val_paths)
        if config.limit:
            paths, ids = paths[:config.limit], ids[:config.limit]
        log.info("unlabelled: %d images from %s", len(ids), ", ".join(config.unlabeled))
    pool_paths, pool_ids = train_set.paths + paths, train_set.ids + ids
    resumed_targets = (resumed or {}).get("targets_key")
    if resumed_targets is not None and teachers:  # before the caches, the labelling and soft_targets.npz
        check_resumed_targets(resumed_targets, records, pool_paths, pool_ids, config.teacher_views, config.resume)
    from_file, file_learned = None, frozenset()
    if config.teacher_targets:  # checked before any image is decoded, as a teacher is
        probabilities, record, file_learned = targets_from_file(config.teacher_targets, config.classes, pool_paths,
                                                                pool_ids, config.teacher_views)
        check_unseen(file_learned, f"a teacher of --teacher-targets {config.teacher_targets} was", all_val_ids,
                     all_val_paths)
        if resumed_targets is not None and resumed_targets != targets_key(record):
            raise UsageError(f"checkpoint {config.resume} learned from other soft targets: {config.teacher_targets} "
                             "holds another teacher's or other images' targets; resume with the file it was written "
                             "with, or start a new run")
        from_file = (probabilities, record)
    fraction = pool_cache_fraction(config)
    side = int(round(config.size * fraction / config.crop_fraction))
    try:
        pool_cache = build_cache(pool_paths, fraction, side, config.workers, config.progress,
                                 "training or unlabelled" if config.unlabeled else "training")
    except ImageReadError as exc:  # the validation images are read too: one run names the bad files of both
        try:
            build_cache(val_set.paths, config.crop_fraction, config.size, config.workers, False, "validation")
        except ImageReadError as also:
            raise unreadable(exc.failed + also.failed) from None
        raise
    val_cache = build_cache(val_set.paths, config.crop_fraction, config.size, config.workers, config.progress,
                            "validation")
    fits_cache = build_fits_view_cache(train_set.paths, config.fits_views, fraction, side, config.workers,
                                       config.training_seed, config.progress) if config.fits_views else None
    pool_framing = pool_framing_of(pool_paths, config) if config.apparent_size and "zoom" in config.augment else None
    mean, std = _normalisation(config, pool_cache, fraction)
    spec = InputSpec(size=config.size, crop_fraction=config.crop_fraction, mean=mean, std=std)
    targets, teacher = None, None
    if teachers:
        scale = (unlabelled_scale(train_set.paths, paths, config, pool_framing)
                 if config.unlabeled_framing == "auto" else 1.0)
        probabilities, teacher = teacher_probabilities(teachers, config.classes, pool_paths, pool_ids, work_dir,
                                                       config.teacher_views, config.workers, device, amp_dtype,
                                                       config.progress, scale, len(train_set.paths))
        targets = sharpen(torch.from_numpy(probabilities), config.soft_temperature)
    elif from_file is not None:
        probabilities, teacher = from_file
        targets = sharpen(torch.from_numpy(probabilities), config.soft_temperature)
    labels = torch.tensor(list(train_set.labels) + [-1] * len(ids), dtype=torch.long)
    sources = [learned_by(model) for model in (init, *teachers)]
    sources.append(set() if checkpoint is None else checkpoint.get("learned"))  # (None: written before it was kept)
    inherited = None if any(known is None for known in sources) else file_learned.union(*sources)
    return TrainingData(train_set, val_set, paths, ids, pool_cache, labels, fraction, val_cache, spec,
                        targets, teacher, fits_cache, pool_framing, inherited, labelled_sha256)


def _refuse_vote_options_without_votes(config: TrainConfig) -> None:
    """The vote-table options, given with labels that are not a vote table: ignored, yet recorded in the
    card as the rule its labels were made by."""
    rule = VoteRule()
    given = [f"--{name}" for name, value, default in (
        ("vote-threshold", config.vote_threshold, rule.threshold), ("vote-kind", config.vote_kind, rule.kind),
        ("min-votes", config.min_votes, rule.min_votes), ("images", config.images_dir, None)) if value != default]
    if given and not is_vote_table(config.data, config.label_column, config.vote_kind):
        raise UsageError(f"{', '.join(given)} make labels from a Galaxy Zoo vote table, and {config.data} is not one "
                         "(it has its labels, or names its images itself): leave them out")
