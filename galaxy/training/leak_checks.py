"""What a training run's models must not have learned: its validation images.

The initial weights (`--init`), a teacher and the teachers behind a targets file are refused where they
learned from any validation image of this run, by id or by file stem (a vote table's ids are catalog ids;
a model records the stems of its training files too): every validation figure would be optimistic.
"""

from __future__ import annotations

import os
from pathlib import Path

from galaxy.card import ids_digest
from galaxy.config import TrainConfig, config_dict
from galaxy.errors import UsageError
from galaxy.files import same_file
from galaxy.labels import learned_image
from galaxy.training.transfer import checkpoint_record


def check_split(model_dir, role: str, config: TrainConfig, all_ids, val_ids, limited_val_ids=None,
                val_paths=()) -> None:
    """Refuse a model (the initial weights, a teacher) that learned from any of this run's validation
    images (directly, or through a teacher's targets): every validation figure would be optimistic.

    The model's training ids (its `train_ids.txt`) are compared with `val_ids` and with the validation
    files' stems (`val_paths`): a model trained on a vote table records catalog ids and stems, a run on a
    CSV of the same files by path has stems for ids, and the other way round. A model that does not
    record them is refused where the data holds any of its validation ids (shared data) and the splits
    differ; a model trained with the same `--limit` (its validation split is `limited_val_ids`) passes.
    (That rule had refused models it knew to be clean too: `--init default` on the bundled samples,
    every one of them in its validation split.)
    """
    model_dir = Path(model_dir)
    if not (model_dir / "card.json").is_file():
        return
    from galaxy.card import load_card, training_ids, validation_ids

    card = load_card(model_dir, verify=False)
    learned = training_ids(model_dir, card)
    model_val = validation_ids(model_dir, card) or set()
    digests = {ids_digest(val_ids)} | ({ids_digest(limited_val_ids)} if limited_val_ids is not None else set())
    if learned is None and model_val & set(all_ids) and card.split.get("val_ids_sha256") not in digests:
        limit = card.training.get("config", {}).get("limit")
        raise UsageError(f"{role} {model_dir} was trained on images of {config.data} with another validation "
                         f"split (seed {card.split.get('seed')}, fraction {card.split.get('val_fraction')}"
                         f"{f', --limit {limit}' if limit else ''}); its training images "
                         "would leak into this validation split. With the same --seed and --val-fraction the split "
                         "still differs when the data does: train on the data it was trained on, or --init another model")
    check_unseen(learned or set(), f"{role} {model_dir} was", val_ids, val_paths)


def check_checkpoint_split(checkpoint: dict | None, config: TrainConfig) -> None:
    """Refuse `--init` of a training checkpoint (last.pt) whose run learned from this data with another
    split (seed, fraction, --limit): a checkpoint has no card or id lists for `check_split` to read, and
    its training images would leak into this validation split unsaid.

    Raises:
        UsageError: naming the checkpoint's split and this run's.
    """
    if checkpoint is None:
        return
    then = checkpoint["config"]
    data = then.get("data")
    if not data or not same_file(os.path.join(checkpoint.get("cwd") or os.getcwd(), data), config.data):
        return
    split = lambda c: (c.get("seed", 0), c.get("val_fraction", 0.2), c.get("limit"))  # noqa: E731
    if split(then) != split(config_dict(config)):
        raise UsageError(f"--init {config.init} is a checkpoint of a run on {config.data} with another split (seed, "
                         f"val-fraction, limit {split(then)}; this run {split(config_dict(config))}): its training "
                         "images would leak into this validation split; give the same --seed, --val-fraction and "
                         "--limit, or --init another model")


def check_unseen(learned, who: str, val_ids, val_paths=()) -> None:
    """Refuse a model (or the teachers behind a targets file: `who` says which) that learned from any of
    this run's validation images, by id or by file stem (`val_paths`, in the order of `val_ids`)."""
    paths = list(val_paths) or [None] * len(val_ids)
    leaked = sorted(ident for ident, path in zip(val_ids, paths) if learned_image(ident, path, learned))
    if leaked:
        raise UsageError(f"{who} trained on {len(leaked)} of this run's validation images (e.g. "
                         f"{leaked[0]}): its knowledge of them would flatter every validation figure; train on data "
                         "that holds its validation split too, with the same --seed and --val-fraction")


def learned_by(model_dir) -> set[str] | None:
    """The labelled ids a model folder records having learned (none for scratch and imagenet; a checkpoint's
    are its record's, added beside); None for a model that does not record them (no `train_ids.txt`: models
    before 2026-11-29 but the shipped ones, and those that learned from such a model) and for a weights file
    without a card, whose past nothing records (it had been taken to have learned nothing: another model's
    weights, copied out of its folder, then passed unchecked)."""
    from galaxy.card import load_card, training_ids

    if model_dir in ("scratch", "imagenet") or checkpoint_record(str(model_dir)) is not None:
        return set()
    if not (Path(model_dir) / "card.json").is_file():
        return None
    return training_ids(model_dir, load_card(model_dir, verify=False))
