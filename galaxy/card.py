"""The model card (`card.json`): what a model is, how it was made, and how good it is.

A model directory holds:
  card.json          this card;
  model.safetensors  the weights (fp16), whose sha256 the card records;
  val_ids.txt        the validation ids of the training split (optional);
  train_ids.txt      the ids of the labelled images it was trained on (optional; checks for leaks);
  teacher_targets.npz  the soft targets it learned from, for a model of `--teacher-targets` (its card's
                     command rebuilds it with them: the teacher's weights need not be kept);
  model.onnx         the ONNX export (written by `galaxy export`; otherwise built into the cache).
No torch here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from galaxy.errors import GalaxyError, ModelError
from galaxy.files import write_atomically
from galaxy.spec import InputSpec, check_spec_shape, is_number

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
CARD_FORMAT = 1


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelCard:
    """Everything needed to rebuild and trust a model.

    Attributes:
        name: short model name, recorded in every catalog it writes.
        architecture: timm model name.
        classes: class names in output order.
        input_spec: the preprocessing.
        weights_sha256: sha256 of model.safetensors.
        training: recipe: the exact command, the config, time taken, machine.
        split: seed, fractions, counts and the sha256 of the validation ids.
        metrics: validation metrics of the shipped weights.
        export: ONNX export record (opset, exporter, parity), filled by `galaxy export`.
        backends: reduced-precision backends checked against fp32 on the validation split
            (label agreement, accuracy change, speed), filled by `galaxy check-backends`; its
            "speeds" keep each machine's engine speeds across checks (`speeds_by_machine`).
        calibration: temperature scaling record (`galaxy.evaluation.calibration`); its `temperature`
            divides the logits in every backend. Empty: raw softmax.
        package_version: galaxy-engine version that wrote the card.
    """

    name: str
    architecture: str
    classes: tuple[str, ...]
    input_spec: InputSpec
    weights_sha256: str = ""
    training: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    backends: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    package_version: str = ""

    @property
    def temperature(self) -> float:
        """The logit temperature every backend applies (1.0 when uncalibrated)."""
        return float(self.calibration.get("temperature", 1.0))

    @property
    def engine_key(self) -> str:
        """A short hash of everything a derived engine (ONNX, int8, TensorRT plan) bakes in.

        Weights, architecture, classes, input spec (engines have a fixed image size) and the
        temperature: change any and cached engines are rebuilt rather than reused.
        """
        what = json.dumps([self.weights_sha256, self.architecture, list(self.classes), self.input_spec.to_dict(),
                           self.temperature], sort_keys=True)
        return hashlib.sha256(what.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "format": CARD_FORMAT,
            "name": self.name,
            "architecture": self.architecture,
            "classes": list(self.classes),
            "input_spec": self.input_spec.to_dict(),
            "weights": {"file": WEIGHTS_FILE, "sha256": self.weights_sha256, "dtype": "float16"},
            "training": self.training,
            "split": self.split,
            "metrics": self.metrics,
            "export": self.export,
            "backends": self.backends,
            "calibration": self.calibration,
            "package_version": self.package_version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        if data.get("format") != CARD_FORMAT:
            newer = " (written by a newer galaxy-engine: upgrade to read it)" if is_number(data.get("format")) and \
                data["format"] > CARD_FORMAT else ""
            raise ModelError(f"card format {data.get('format')!r} is not {CARD_FORMAT}{newer}")
        return cls(
            name=data["name"], architecture=data["architecture"], classes=tuple(data["classes"]),
            input_spec=InputSpec.from_dict(data["input_spec"]),
            weights_sha256=data["weights"]["sha256"], training=data.get("training", {}),
            split=data.get("split", {}), metrics=data.get("metrics", {}),
            export=data.get("export", {}), backends=data.get("backends", {}),
            calibration=data.get("calibration", {}), package_version=data.get("package_version", ""),
        )

    def save(self, model_dir) -> Path:
        """Write the card to MODEL_DIR/card.json, whole or not at all (`write_atomically`)."""
        path = Path(model_dir) / CARD_FILE
        text = json.dumps(strict_json(self.to_dict()), indent=2, allow_nan=False) + "\n"
        write_atomically(path, lambda tmp: tmp.write_text(text))
        return path


def strict_json(value):
    """`value` with every non-finite float as None: strict JSON (a validation split of one class has no
    ROC AUC; json.dumps wrote a bare NaN, which strict parsers refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _no_constant(name: str) -> None:
    """NaN and Infinity in a card read as null, as `strict_json` writes them (cards written before it hold a
    bare NaN for a one-class split's ROC AUC): a temperature or an input_spec value of null is then refused."""
    return None


def _check_shape(data) -> None:
    """The types `ModelCard.from_dict` relies on (a card edited by hand gave AttributeErrors and a mean
    of "0.1" read as three channels '0', '.', '1').

    Raises:
        ValueError: naming the key.
    """
    if not isinstance(data, dict):
        raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
    for key in ("training", "split", "metrics", "export", "backends", "calibration", "weights", "input_spec"):
        if key in data and not isinstance(data[key], dict):
            raise ValueError(f"its {key!r} is {data[key]!r}, not an object")
    classes = data.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"its classes {classes!r} are not a list of names")
    check_spec_shape(data.get("input_spec", {}))
    for part in ("results", "int8_arithmetic"):  # int8_arithmetic: int8's checks by the CPU arithmetic they ran on
        records = data.get("backends", {}).get(part, {})
        if not isinstance(records, dict):
            raise ValueError(f"its backends.{part} {records!r} is not an object")
        for name, record in records.items():  # what `galaxy models` and `auto` read of each check
            if not (isinstance(record, dict) and isinstance(record.get("precision"), str)
                    and all(is_number(record[key]) for key in ("images_per_s", "label_agreement", "accuracy")
                            if key in record)
                    and all(isinstance(record[key], str) for key in ("machine", "arithmetic") if key in record)):
                raise ValueError(f"its backends.{part}[{name!r}] {record!r} is not a check record (a precision, "
                                 "numbers for its speed, agreement and accuracy, words for its machine and arithmetic)")


def _within(record: dict, *keys):
    """record[k1][k2]... where each level is an object; None where one is missing or is not."""
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _check_figures(card: ModelCard, card_path) -> None:
    """What every probability depends on beyond the weights: the temperature, and the classes' order.

    A negative temperature swapped every probability (labels flipped, exit 0), Infinity gave 0.5 everywhere,
    0 a ZeroDivisionError; classes reversed by hand (the weights still fit) put each probability under the
    other class's name. The card records the order its training used twice: both are compared.

    Raises:
        ModelError: naming the card and the value.
    """
    from galaxy.evaluation.calibration import LOG_T_RANGE

    if "temperature" in card.calibration:
        value = card.calibration["temperature"]
        low, high = (math.exp(edge) for edge in LOG_T_RANGE)
        if not (is_number(value) and low * 0.999 <= value <= high * 1.001):
            raise ModelError(f"{card_path} is not a valid model card: temperature {value!r} is not a number in "
                             f"[{low:.4f}, {high:.2f}]: restore the card, or remove its calibration record and "
                             "run galaxy calibrate")
    recorded = {"training.config.classes": _within(card.training, "config", "classes"),
                "the validation confusion's classes": _within(card.metrics, "validation", "confusion",
                                                              "rows_true_cols_predicted")}
    for where, order in recorded.items():
        if isinstance(order, list) and sorted(order) == sorted(card.classes) and list(order) != list(card.classes):
            raise ModelError(f"{card_path} is not a valid model card: its classes {list(card.classes)} are not in the "
                             f"order of {where}, {order}: the network's outputs would be put under the wrong names")


def load_card(model_dir, verify: bool = True) -> ModelCard:
    """Read a model directory's card and (by default) check its weights hash.

    Raises:
        ModelError: no card, unreadable card, missing weights, or weights that do not match.
    """
    model_dir = Path(model_dir)
    card_path = model_dir / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"{model_dir} is not a model directory: no {CARD_FILE}")
    try:
        data = json.loads(card_path.read_text(), parse_constant=_no_constant)
        _check_shape(data)
        card = ModelCard.from_dict(data)
    except GalaxyError as exc:  # e.g. an InputSpec's range check: a UsageError, as if the command line were wrong
        raise ModelError(f"{card_path} is not a valid model card: {exc}") from None
    except KeyError as exc:  # (its text alone, "'name'", said nothing)
        raise ModelError(f"{card_path} is not a valid model card: it has no {exc} entry") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{card_path} is not a valid model card: {exc}") from None
    if len({name.lower() for name in card.classes}) < len(card.classes) or len(card.classes) < 2:
        raise ModelError(f"{card_path} is not a valid model card: its classes {list(card.classes)} are not two or "
                         "more distinct names (a catalog would hold two columns of one name)")
    _check_figures(card, card_path)
    if verify:
        weights = model_dir / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelError(f"{model_dir} has no {WEIGHTS_FILE}")
        actual = file_sha256(weights)
        if actual != card.weights_sha256:
            raise ModelError(f"{weights} has sha256 {actual[:12]}..., the card says "
                             f"{card.weights_sha256[:12]}...: weights and card do not belong together")
    return card


def ids_digest(ids) -> str:
    """sha256 of the sorted ids, one per line: a short fingerprint of a split."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def labels_digest(labelled) -> str:
    """sha256 of a LabelledSet's sorted "id<TAB>class" lines: which galaxy carries which label, where
    the class counts alone let a permutation of the labels pass."""
    return hashlib.sha256("\n".join(sorted(f"{i}\t{labelled.classes[y]}" for i, y in
                                           zip(labelled.ids, labelled.labels))).encode()).hexdigest()


def validation_ids(model_dir, card: ModelCard) -> set[str] | None:
    """The ids of the model's validation split (its `val_ids.txt`), or None when it has none.

    Raises:
        ModelError: the file does not hold the split the card records (`split.val_ids_sha256`): edited,
            or another model's; scored as "validation", its training images would flatter every figure.
    """
    path = Path(model_dir) / card.split.get("val_ids_file", "val_ids.txt")
    if not path.is_file():
        return None
    ids = id_lines(path)
    recorded = card.split.get("val_ids_sha256")
    if recorded and ids_digest(ids) != recorded:
        raise ModelError(f"{path} holds {len(ids)} ids that are not the validation split {card.name}'s card records "
                         f"({card.split.get('n_val', '?')} ids, sha256 {recorded[:12]}...): the file was changed or "
                         "is another model's; restore it")
    return ids


TRAIN_IDS_FILE = "train_ids.txt"


def training_ids(model_dir, card: ModelCard) -> set[str] | None:
    """The ids of the images the model was trained on, labelled or unlabelled (its `train_ids.txt`), or
    None when it does not record them (models trained before 2026-11-29 other than the shipped ones)."""
    path = Path(model_dir) / card.split.get("train_ids_file", TRAIN_IDS_FILE)
    return id_lines(path) if path.is_file() else None


def id_lines(path) -> set[str]:
    """The ids of an id list as training writes it: one per line, exactly (an id may hold spaces, a file
    named `gal 123.jpeg`: split on all whitespace, its pieces had failed the split's digest)."""
    return {line for line in Path(path).read_text(encoding="utf-8").splitlines() if line}


def speeds_by_machine(backends: dict) -> dict[str, dict]:
    """Engine images/s of each checked backend, per machine a `check-backends` ran on: {machine:
    {backend: images/s, ..., "measured": date, "measured_before": {backend: date} of the speeds kept
    from earlier checks (absent when all are of that date)}}. A record from before the history was kept holds
    only its one machine's speeds (in each result), which are returned as that machine's."""
    history = dict(backends.get("speeds", {}))
    if not history and backends.get("machine") and backends.get("results"):
        history[backends["machine"]] = {name: rec["images_per_s"] for name, rec in backends["results"].items()
                                        if "images_per_s" in rec}
    return history


MODELS_DIR = Path(__file__).parent / "models"
# The ONNX opset every export writes (galaxy.training.export) and the cache names (engine.artifacts).
ONNX_OPSET = 17
# How the export computes what it folds (galaxy.training.bn_fold); in the cache names and export records, so an
# export of an earlier way (its BatchNorm folds as torch computed them on that CPU) is not taken for one of this way.
ONNX_EXPORTER = "torchscript+exact-bn-folds"
# Real gz1-sdss cutouts shipped in the package: export parity checks and auto's timing batches.
SAMPLES_DIR = Path(__file__).parent / "samples"
FULL_MODEL = "sdss-xception"  # the full Xception (Khan et al.): what the GPU benchmark compiles at 299 px
COMPACT_MODEL = "sdss-xception-compact"  # distilled from it: the default model


def shipped_models() -> list[str]:
    """Names of the models shipped inside the package (folders of galaxy/models with a card), full model first."""
    names = sorted(p.name for p in MODELS_DIR.iterdir() if (p / CARD_FILE).is_file()) if MODELS_DIR.is_dir() else []
    return sorted(names, key=lambda name: name != FULL_MODEL)


def shipped_model_dirs() -> list[Path]:
    """The folders of the shipped models, full model first (never a user's folder of the same name)."""
    return [MODELS_DIR / name for name in shipped_models()]


def model_path(value) -> Path:
    """A model folder from what a user typed: a shipped model's name (`sdss-xception`), the name its
    card gives (`sdss-xception-96`, what a catalog's metadata records as its model), or a folder.

    A folder of that name in the working directory wins over a shipped name, so a user's own
    `sdss-xception/` is never silently replaced.
    """
    path = Path(value)
    if path.exists():
        return path
    for name in shipped_models():
        if str(value) == name or str(value) == _card_name(MODELS_DIR / name):
            return MODELS_DIR / name
    return path


def _card_name(model_dir: Path) -> str | None:
    """The name a model folder's card gives, or None where it cannot be read."""
    try:
        name = json.loads((model_dir / CARD_FILE).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def default_model_dir() -> Path:
    """The shipped model used when none is named: the compact Xception wherever it ships, on every
    machine, GPU or not, so a survey gets the same catalog wherever it runs.

    It was as accurate as the full Xception it was distilled from on the validation split at an
    eighth of the work, and held up better when the galaxies are framed as Galaxy Zoo 2 frames
    them and when read from FITS flux (README, "The compact model"). The full Xception stays
    what `--model sdss-xception` names and what the GPU benchmark compiles at the Khan et al.
    setting (299 px).
    """
    if (MODELS_DIR / COMPACT_MODEL / CARD_FILE).is_file():
        return MODELS_DIR / COMPACT_MODEL
    return MODELS_DIR / FULL_MODEL
