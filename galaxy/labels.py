"""Labelled data sets for training: a folder of class folders, or a CSV with file and label columns.

No torch here: this returns plain lists that `galaxy.training.train` turns into tensors.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galaxy.card import validation_ids
from galaxy.catalog.formats import CSV_ENCODING
from galaxy.catalog.text import not_utf8
from galaxy.errors import UsageError
from galaxy.files import ends_its_line
from galaxy.io.images import image_files, is_hidden, stem_id
from galaxy.votes import VoteRule, is_vote_table, rule_from_config, vote_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledSet:
    """Parallel lists of examples.

    Attributes:
        paths: image files.
        ids: sample ids (file stems).
        labels: class indices into `classes`.
        classes: class names, index order.
    """

    paths: tuple[str, ...]
    ids: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> LabelledSet:
        return LabelledSet(
            tuple(self.paths[i] for i in indices), tuple(self.ids[i] for i in indices),
            tuple(self.labels[i] for i in indices), self.classes,
        )

    def counts(self) -> dict[str, int]:
        return {name: sum(1 for y in self.labels if y == k) for k, name in enumerate(self.classes)}


def load_votes(path, rule: VoteRule = VoteRule(), classes=("elliptical", "spiral")) -> LabelledSet:
    """A LabelledSet from a Galaxy Zoo vote table (see `galaxy.votes`): ids are the catalog's ids."""
    paths, ids, labels = vote_rows(path, rule, classes)
    return LabelledSet(tuple(paths), tuple(ids), tuple(labels), tuple(classes))


def _from_folders(root: Path, classes) -> LabelledSet:
    """Each class's images from the folder of its name. Another folder is left out, said in a warning;
    one named as a class in other case (`Spiral/` beside `spiral/`) is refused: its images had been left
    out without a word, where the same label in a CSV is refused."""
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)
                    and p.name not in classes)
    for other in others:
        near = next((name for name in classes if name.lower() == other.lower()), None)
        if near is not None:
            raise UsageError(f"{root}: folder {other!r} is not class {near!r} (names are compared exactly): "
                             f"move its images into {near}/, or rename it")
    if others:
        log.warning("%s: folders %s are no class (%s): their images are left out", root, others, ", ".join(classes))
    paths, ids, labels = [], [], []
    for k, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise UsageError(f"{root} has no folder {name!r} for class {name!r}; found {found}")
        for path in image_files(folder):
            paths.append(str(path))
            ids.append(stem_id(path))
            labels.append(k)
    return LabelledSet(tuple(paths), tuple(ids), tuple(labels), tuple(classes))


def _csv_rows(table: Path, columns) -> list[dict]:
    """The rows of a CSV table whose header holds `columns`, read strictly: an unclosed quote (which
    csv would otherwise read to the end of the file as one cell, silently taking every row after it)
    or text after a closing quote is an error, as is a byte that is not UTF-8.

    Raises:
        UsageError: the file is empty or cannot be read as CSV (naming the line), or a column is
            missing (naming the columns it has).
    """
    with open(table, newline="", encoding=CSV_ENCODING) as fh:
        reader = csv.DictReader(fh, strict=True)
        try:
            if reader.fieldnames is None:
                raise UsageError(f"{table} is empty: a CSV table needs a header row with the columns {list(columns)}")
            for column in columns:
                if column not in reader.fieldnames:
                    raise UsageError(f"{table} has no column {column!r}; columns are {reader.fieldnames}")
                if reader.fieldnames.count(column) > 1:  # csv's DictReader took the last: scored on another column
                    raise UsageError(f"{table} names column {column!r} {reader.fieldnames.count(column)} times: "
                                     "rename all but the one to use")
            rows = list(reader)
            last = rows[-1] if rows and any(isinstance(v, str) and v.strip() for v in rows[-1].values()) else {}
            short = next((column for column in columns if last and last[column] is None), None)
            if short is not None and not ends_its_line(table):  # a file cut inside its last row: that row had read
                # as one without a label, skipped (a row that leaves off an empty label, with its line end, is one)
                raise UsageError(f"{table}, line {reader.line_num}: the file ends inside a row, before its "
                                 f"{short!r} column (cut short?)")
            return rows
        except csv.Error as exc:
            raise UsageError(f"cannot read {table} as CSV, line {reader.line_num + 1}: {exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"cannot read {table}: {not_utf8(table)}") from None


def _image_path(cell: str, folder: Path) -> str:
    """A CSV cell's image path, relative ones taken from the table's folder. An empty cell stays empty, so
    the reader reports "empty path" (joined to the folder it had named the folder: "is a directory")."""
    if not cell:
        return ""
    path = Path(cell)
    return str(path if path.is_absolute() else folder / path)


def _from_csv(table: Path, classes, label_column: str, path_column: str) -> LabelledSet:
    paths, ids, labels, unlabelled = [], [], [], 0
    for row in _csv_rows(table, (label_column, path_column)):
        label = (row[label_column] or "").strip()
        if not label:
            unlabelled += 1
            continue
        if label not in classes:
            raise UsageError(f"{table}: label {label!r} is not one of the classes {list(classes)}")
        path = _image_path(row[path_column] or "", table.parent)
        paths.append(path)
        ids.append(stem_id(path))
        labels.append(classes.index(label))
    if unlabelled:
        log.info("%s: skipped %d rows with an empty %r", table, unlabelled, label_column)
    return LabelledSet(tuple(paths), tuple(ids), tuple(labels), tuple(classes))


def load_labelled(data, classes=("elliptical", "spiral"), label_column="label", path_column="file",
                  votes: VoteRule | None = None) -> LabelledSet:
    """Load a labelled data set.

    Args:
        data: a folder with one sub-folder per class, a CSV file with path and label
            columns (relative paths are taken from the CSV's folder; empty labels skipped),
            or a Galaxy Zoo vote table (CSV, Parquet, FITS, ECSV; see `galaxy.votes`).
        classes: class names in index order.
        label_column: CSV column holding the class name.
        path_column: CSV column holding the image path.
        votes: how vote fractions become labels (default thresholds when None).
    """
    data = Path(data)
    if is_vote_table(data, label_column, (votes or VoteRule()).kind):
        found = load_votes(data, votes or VoteRule(), classes)
    elif data.is_dir():
        found = _from_folders(data, list(classes))
    elif data.is_file() and data.suffix.lower() == ".csv":
        found = _from_csv(data, list(classes), label_column, path_column)
    else:
        raise UsageError(f"{data} is neither a folder of class folders, a .csv file with a {label_column!r} column, "
                         "nor a Galaxy Zoo vote table")
    if not len(found):
        raise UsageError(f"{data} holds no labelled images")
    require_unique_ids(found, data)
    return found


def require_outside_class_folders(out, data, classes, what: str) -> None:
    """Refuse an output folder inside a class folder of a folder data set: what a run writes there
    (`curves.png`, evaluate's plots) are image files, read as galaxies of that class the next time the data
    set is read. A hidden folder on the way (`.runs/`) is not read, so it is let be.

    Raises:
        UsageError: naming the folder, the class folder and the way out.
    """
    data = Path(data)
    if not data.is_dir():  # a CSV or vote table names its images: nothing else in a folder is read
        return
    try:
        parts = Path(out).resolve().relative_to(data.resolve()).parts
    except ValueError:  # not under DATA
        return
    if parts and parts[0] in classes and not any(is_hidden(part) for part in parts):
        raise UsageError(f"{what} {out} is inside the class folder {data / parts[0]}: the PNG files written there "
                         f"would be read as {parts[0]} galaxies the next time {data} is read; name a folder outside "
                         f"{data / parts[0]}")


def learned_image(ident: str, path: str | None, learned) -> bool:
    """Whether a model whose training ids are `learned` learned this image: by its id, or by its file stem
    (a vote table's ids are catalog ids; a model records the stems of its training files too)."""
    return ident in learned or (bool(path) and stem_id(path) in learned)


def require_unique_ids(labelled: LabelledSet, source) -> None:
    """Refuse a data set naming one galaxy twice: its copies could land on both sides of the
    train/validation split (and with two labels), and a score would count it twice.

    Rows with an empty path (id "") name no galaxy, so they are no repeat; reading them fails, with
    that reason, where each is read.

    Raises:
        UsageError: naming the first repeated id and its files, or the first file two ids name (a vote
            table's ids are catalog ids).
    """
    named = [i for i in labelled.ids if i]
    counts = Counter(named)
    if len(counts) < len(named):
        ident = next(i for i in named if counts[i] > 1)
        files = [path for path, other in zip(labelled.paths, labelled.ids) if other == ident]
        extra = len(named) - len(counts)
        raise UsageError(f"{source}: id {ident!r} (the file name without its suffix) is labelled {len(files)} times "
                         f"({', '.join(files[:3])}); {extra} repeated row{'s' if extra > 1 else ''} in all: "
                         "give each galaxy once")
    files = Counter(path for path in labelled.paths if path)
    if len(files) < sum(files.values()):  # a vote table's ids are its own: two of them can name one file
        path = next(p for p in labelled.paths if files[p] > 1)
        ids = [ident for ident, other in zip(labelled.ids, labelled.paths) if other == path]
        raise UsageError(f"{source}: file {path} is named by {len(ids)} rows (ids {', '.join(ids[:3])}): each image "
                         "is one galaxy; give it once")


def stratified_split(labelled: LabelledSet, val_fraction: float, seed: int) -> tuple[LabelledSet, LabelledSet]:
    """Split into (train, validation), the same fraction of every class, reproducibly.

    The examples are first put in id order, so the split depends only on the ids, labels,
    fraction and seed, not on the order of the input file.
    """
    if not 0 < val_fraction < 1:
        raise UsageError(f"validation fraction {val_fraction} is not in (0, 1)")
    order = sorted(range(len(labelled)), key=lambda i: labelled.ids[i])
    rng = np.random.default_rng(seed)
    train, val = [], []
    for k in range(len(labelled.classes)):
        members = [i for i in order if labelled.labels[i] == k]
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return labelled.subset(sorted(train)), labelled.subset(sorted(val))


def list_unlabelled(folders, exclude_ids=(), refuse_ids=(), exclude_files=(), refuse_files=()
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Image files under `folders` (recursive), sorted by path, with their ids (file stems).

    Args:
        folders: folders of unlabelled cutouts.
        exclude_ids: ids dropped silently apart from a log line (e.g. the labelled training
            images, which come with their labels anyway).
        refuse_ids: ids that must not be there (the validation split: a teacher's targets on
            them would leak into training).
        exclude_files, refuse_files: image files whose copies (the same bytes, under any name) are
            dropped or refused as the ids are: a vote table's ids are its catalog's (a GZ2 dr7objid),
            not the file stems (asset ids) a folder of the same cutouts gives, so ids alone let a
            validation image into the pool.

    Returns:
        (paths, ids).

    Raises:
        UsageError: a folder is missing or empty, or holds an id of `refuse_ids` or a copy of a file
            of `refuse_files`.
    """
    paths, seen = [], set()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise UsageError(f"unlabelled folder {folder} does not exist")
        found = [str(p) for p in image_files(folder)]
        if not found:
            raise UsageError(f"unlabelled folder {folder} holds no images")
        for path in found:  # a folder given twice, or inside another given, is one pool (each image had been
            real = os.path.realpath(path)  # learned twice)
            if real not in seen:
                seen.add(real)
                paths.append(path)
    ids = [stem_id(p) for p in paths]
    refused = sorted(set(ids) & set(refuse_ids))
    if refused:
        raise UsageError(f"{len(refused)} unlabelled images are validation images (e.g. id {refused[0]}); "
                         "remove them, or every validation figure would be optimistic")
    copies = [p for p, same in zip(paths, same_contents(paths, refuse_files)) if same]
    if copies:
        raise UsageError(f"{len(copies)} unlabelled images are copies of validation images (e.g. {copies[0]}); "
                         "remove them, or every validation figure would be optimistic")
    exclude = set(exclude_ids)
    copied = same_contents(paths, exclude_files)
    keep = [i for i, ident in enumerate(ids) if ident not in exclude and not copied[i]]
    if len(keep) < len(ids):
        log.info("unlabelled: dropped %d images that are labelled training images", len(ids) - len(keep))
    return tuple(paths[i] for i in keep), tuple(ids[i] for i in keep)


def same_contents(paths, others) -> list[bool]:
    """Whether each file of `paths` holds the same bytes as one of `others` (sizes first, then SHA-256
    of the files of a size both sets hold: a few of 11,000 cutouts are read). Files that cannot be read
    match nothing (their own reader says why, later)."""
    def size(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return None

    other_sizes = {}
    for other in others:
        other_sizes.setdefault(size(other), []).append(other)
    other_sizes.pop(None, None)
    sizes = [size(p) for p in paths]
    wanted = {sha for n in set(sizes) & set(other_sizes) for sha in map(_sha256, other_sizes[n]) if sha}
    return [n in other_sizes and _sha256(p) in wanted for p, n in zip(paths, sizes)]


def _sha256(path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def column_by_id(table, column: str, path_column: str = "file") -> dict[str, str | None]:
    """One column of a CSV table, keyed by the id of each row's image (its file stem).

    Raises:
        UsageError: not a CSV file, or no such column.
    """
    table = Path(table)
    if not (table.is_file() and table.suffix.lower() == ".csv"):
        raise UsageError(f"--by-column needs a CSV table, got {table}")
    # a blank cell is in no group (it had made a group named '')
    return {stem_id(row[path_column] or ""): (row[column] or "").strip() or None
            for row in _csv_rows(table, (column, path_column))}


def validation_split(model_dir, card, data, label_column="label", path_column="file", complete=True,
                     images_dir=None):
    """The labelled images of `data` whose ids are in the model's validation split.

    A vote table's labels follow the vote rule the model was trained with (its card's config), so the
    split's labels are the ones it was validated on.

    Args:
        complete: refuse `data` that holds only part of the split (a check or calibration recorded in
            the card must be of the whole split); False accepts a part, with a warning (evaluate).
        images_dir: a vote table's image folder, instead of the one the card recorded (a folder on
            the machine that trained, perhaps).

    Raises:
        UsageError: no list of validation ids, none of them in `data`, or (complete) only some.
    """
    val_ids = validation_ids(model_dir, card)
    if val_ids is None:
        raise UsageError(f"{model_dir} has no list of validation ids: its validation split is unknown")
    rule = rule_from_config(card.training.get("config", {}))
    labelled = load_labelled(data, card.classes, label_column, path_column,
                             dataclasses.replace(rule, images=images_dir) if images_dir else rule)
    val = labelled.subset([i for i in range(len(labelled)) if labelled.ids[i] in val_ids])
    if len(val) == len(val_ids):
        return val
    if complete or not len(val):
        raise UsageError(f"{data} holds {len(val)} of the {len(val_ids)} validation images of {model_dir}"
                         + ("" if len(val) or complete else " (--split all scores every labelled image)"))
    log.warning("%s holds %d of the %d validation images of %s: only those are scored", data, len(val),
                len(val_ids), model_dir)
    return val
