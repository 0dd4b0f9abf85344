"""One frozen config per command, built by the CLI and recorded in what the command writes."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from dataclasses import dataclass, field

from galaxy.card import ONNX_OPSET
from galaxy.errors import UsageError

# Training augmentations (`galaxy.training.augment`); `--augment` turns them on (all, or a subset).
AUGMENTATIONS = ("zoom", "rotate", "flux", "noise", "blur", "curve")
MIN_CROP = 0.05  # the smallest crop classify takes (CLI and API): a galaxy shown 10x larger than at crop 0.5
MAX_THREADS = 1024  # threads / workers: more than any machine's cores (a million hung ONNX Runtime)
MAX_PER_ROW = 64  # galaxies in a montage row: 10,000 px wide at 100 dpi (1,000 had drawn a 160,000 px PNG for 65 s)


def cache_dir() -> Path:
    """Where derived artifacts are cached: $GALAXY_CACHE, else $XDG_CACHE_HOME/galaxy, else ~/.cache/galaxy.
    An empty or relative XDG_CACHE_HOME counts as unset, as the XDG specification says (an empty one put
    the cache in the working folder, e.g. the package's own).

    Raises:
        UsageError: neither variable is set and there is no home folder to hold it.
    """
    if os.environ.get("GALAXY_CACHE"):
        return Path(os.environ["GALAXY_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "galaxy"
    try:
        return Path.home() / ".cache" / "galaxy"
    except RuntimeError:  # no HOME and no password entry for this user (a container's arbitrary uid)
        raise UsageError("no folder for the engine cache: HOME is not set and this user has none; set "
                         "GALAXY_CACHE to a folder that can be written") from None


def config_dict(config) -> dict:
    """A JSON-ready dict of a config (paths and tuples as strings and lists)."""
    out = {}
    for key, value in dataclasses.asdict(config).items():
        out[key] = [str(v) for v in value] if isinstance(value, (tuple, list)) else (
            value if isinstance(value, (int, float, bool, type(None))) else str(value))
    return out


@dataclass(frozen=True)
class TrainConfig:
    """`galaxy train`."""

    data: str
    out_dir: str
    work_dir: str | None = None
    name: str | None = None
    label_column: str = "label"
    path_column: str = "file"
    classes: tuple[str, ...] = ("elliptical", "spiral")
    architecture: str = "legacy_xception"
    init: str = "scratch"
    size: int = 96
    crop_fraction: float = 0.5
    jitter: float = 0.1
    augment: tuple[str, ...] = ()
    zoom_range: tuple[float, float] = (0.35, 0.65)
    apparent_size: tuple[float, float] | None = None  # zoom by each galaxy's Petrosian radius instead (see augment)
    scale_consistency: float = 0.0  # weight of the loss tying a galaxy shown larger to its anchor view (0: off)
    cache_fraction: float = 0.7
    fits_views: int = 0
    fits_probability: float = 0.3
    drop_rate: float = 0.0
    unlabeled: tuple[str, ...] = ()
    unlabeled_framing: str = "off"  # "auto": teachers read the unlabelled images at the crop matching their framing
    teachers: tuple[str, ...] = ()
    teacher_targets: str | None = None  # a run's soft_targets.npz standing in for its teachers
    teacher_views: int = 8
    soft_weight: float = 1.0
    soft_temperature: float = 1.0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    ema_decay: float = 0.998
    freeze_epochs: int = 0
    layer_decay: float = 1.0
    patience: int = 0
    calibrate: bool = True
    progress: bool = True
    vote_threshold: float = 0.8
    vote_kind: str = "fraction"
    min_votes: int = 0
    images_dir: str | None = None
    val_fraction: float = 0.2
    seed: int = 0
    train_seed: int | None = None  # seeds weights, order and augmentation; None: `seed`
    workers: int = 0
    limit: int | None = None
    resume: str | None = None
    export: bool = True
    command: str = ""

    def __post_init__(self):
        """Options valid alone that make no sense together (each was once accepted and ignored), checked
        here so that a config built in Python (galaxy.api, tests) is held to them as the command line is.

        Raises:
            UsageError: naming the options and what was expected.
        """
        if self.batch_size < 2:
            raise UsageError(f"--batch-size {self.batch_size}: training needs at least 2 images a step (batch "
                             "normalisation normalises by the batch)")
        _check_classes(self.classes)
        low, high = self.zoom_range
        if low > high:
            raise UsageError(f"--zoom-range {low} {high}: LOW is above HIGH (crop fractions, e.g. 0.35 0.65)")
        if "zoom" in self.augment and not low <= self.crop_fraction <= high:  # every view at another scale than
            # validation and classify read (at --crop 0.8 the galaxies were 1.2-2.3x larger in every training view)
            raise UsageError(f"--crop {self.crop_fraction:g} is outside --zoom-range {low:g} {high:g}: the zoom "
                             "augmentation would never show the framing the model reads; give a --zoom-range around it")
        if self.unlabeled_framing != "off" and not self.unlabeled:
            raise UsageError(f"--unlabeled-framing {self.unlabeled_framing} frames the --unlabeled cutouts: "
                             "give --unlabeled DIR")
        if self.teacher_targets and self.teachers:
            raise UsageError("--teacher-targets holds what teachers would give: name the teachers or the file, "
                             "not both")
        if self.teacher_targets and self.unlabeled_framing != "off":
            raise UsageError("--unlabeled-framing sets how teachers read the unlabelled images, and --teacher-targets "
                             "were read as their file records (its framing): leave it out")
        if self.apparent_size is not None:
            low, high = self.apparent_size
            if not 0 < low <= high < 1:
                raise UsageError(f"--apparent-size {low} {high}: expected 0 < LOW <= HIGH < 1 (the Petrosian radius "
                                 "as a fraction of the crop, e.g. 0.2 0.45)")
            if "zoom" not in self.augment:
                raise UsageError("--apparent-size sets the zoom of each image: it needs the zoom augmentation "
                                 "(--augment all, or a list with zoom)")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        changed = [name for name in ("fits_probability", "zoom_range", "soft_weight", "soft_temperature",
                                     "teacher_views") if _differs(getattr(self, name), defaults[name])]
        needs = {"fits_probability": (not self.fits_views, "--fits-views N (it draws from those views)"),
                 "zoom_range": ("zoom" not in self.augment, "the zoom augmentation (--augment all, or a list with zoom)"),
                 **dict.fromkeys(("soft_weight", "soft_temperature", "teacher_views"),
                                 (not (self.unlabeled or self.teachers or self.teacher_targets),
                                  "a teacher (--unlabeled DIR, --teacher MODEL or --teacher-targets FILE)"))}
        for name in changed:
            missing, what = needs[name]
            if missing:
                raise UsageError(f"--{name.replace('_', '-')} needs {what}; alone it would be ignored")

    @property
    def training_seed(self) -> int:
        """What seeds the initial weights, batch order and augmentation: --train-seed, else --seed."""
        return self.seed if self.train_seed is None else self.train_seed


def _check_classes(classes) -> None:
    """Refuse class names a model cannot carry through every output: fewer than two, a name that is not
    a plain word (each names a catalog column, p_<class>: a FITS catalog of "S0/a" or "Sä" failed
    after the whole run), or two names one case apart (columns that some formats fold together).

    Raises:
        UsageError: naming the class and the rule.
    """
    if len(classes) < 2:
        raise UsageError(f"--classes {','.join(classes)}: a classifier needs at least 2 classes")
    for name in classes:
        if not CLASS_NAME.fullmatch(name):
            raise UsageError(f"--classes: {name!r} is not a class name galaxy can write: letters, digits, '_' and "
                             "'-', starting with a letter or digit, at most 60 characters (it names the catalog's "
                             f"p_<class> column)")
    folded = [name.lower() for name in classes]
    if len(set(folded)) < len(folded):
        twice = next(name for name in classes if folded.count(name.lower()) > 1)
        raise UsageError(f"--classes: {twice!r} is named twice (case aside): each class once")


CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,59}")


def _differs(value, default) -> bool:
    """Whether an option's value is not its default (a tuple and the list JSON gives back compare equal;
    "8" from the command line is the 8 of the default)."""
    if isinstance(default, tuple):
        return tuple(value) != default
    return str(value) != str(default) if isinstance(default, int) else value != default


@dataclass(frozen=True)
class ExportConfig:
    """`galaxy export`."""

    model_dir: str
    parity_images: tuple[str, ...] = ()
    tolerance: float = 1e-4
    opset: int = ONNX_OPSET


@dataclass(frozen=True)
class ClassifyConfig:
    """`galaxy classify`."""

    inputs: tuple[str, ...]
    output: str
    model_dir: str | None = None
    catalog: str | None = None
    path_column: str | None = None
    id_column: str | None = None
    hdu: str | None = None
    bands: str | None = None
    band_columns: str | None = None
    backend: str = "auto"
    decoder: str = "auto"
    tta: bool = False
    crop_fraction: float | str | None = None  # None: the card's; a number; "auto": measured (galaxy.io.framing)
    batch_size: int = 32
    workers: int = 0
    threads: int = 0
    progress: bool = True
    overwrite: bool = False
    commit_every: int = 2048
    commit_seconds: float = 2.0
    keep_columns: tuple[str, ...] = ()
    output_format: str | None = None
    command: str = ""
    cwd: str = field(default_factory=os.getcwd)  # relative input paths are from here; montage resolves them


@dataclass(frozen=True)
class QuantizeConfig:
    """`galaxy quantize`."""

    model_dir: str
    calibration: str
    label_column: str = "label"
    path_column: str = "file"
    images: int = 256
    method: str = "ptq-sensitive"
    evaluation_images: int = 1024  # other training images the agreement is measured on
    unlabeled: tuple[str, ...] = ()  # qat: unlabeled image folders added to the fine-tune
    ship: bool = False  # also write MODEL_DIR/int8.json, the recipe that rebuilds the model without data


@dataclass(frozen=True)
class CheckConfig:
    """`galaxy check-backends`."""

    model_dir: str
    data: str
    backends: tuple[str, ...] = ("torch", "onnxruntime-int8")
    label_column: str = "label"
    path_column: str = "file"


@dataclass(frozen=True)
class CompileConfig:
    """`galaxy compile`."""

    model_dir: str
    precision: str = "fp16"
    calibration: str | None = None
    label_column: str = "label"
    path_column: str = "file"
    images: int = 512
    force: bool = False


@dataclass(frozen=True)
class CalibrateConfig:
    """`galaxy calibrate`."""

    model_dir: str
    data: str
    label_column: str = "label"
    path_column: str = "file"


@dataclass(frozen=True)
class EvaluateConfig:
    """`galaxy evaluate`."""

    model_dir: str | None
    data: str
    out_dir: str
    split: str = "val"
    tta: bool = False
    crop_fraction: float | None = None  # None: each card's centre crop; a number: every model reads with it
    ensemble: tuple[str, ...] = ()
    compare: str | None = None
    by_column: str | None = None
    backend: str = "onnxruntime"
    decoder: str = "auto"
    batch_size: int = 32
    label_column: str = "label"
    path_column: str = "file"
    vote_threshold: float | None = None  # None (not given): the card's rule with --split val, else the default
    vote_kind: str | None = None
    min_votes: int | None = None
    images_dir: str | None = None
    progress: bool = True
