"""The model folder and the ONNX file every other engine derives from, built on first use and cached.

(The int8 model is built by engine/quantize.py and TensorRT plans by engine/tensorrt_build.py,
both from this ONNX file and cached beside it under `cache_dir()`.)

Only the weights and card are shipped. An ONNX file is looked for, in order:
  1. MODEL_DIR/model.onnx written by `galaxy export`, if the card's export record matches
     both the card's engine key (weights, classes, temperature) and the file's own hash;
  2. the cache: $GALAXY_CACHE (default ~/.cache/galaxy) / onnx / <card.engine_key>
     -opset<N>-<exporter>-torch<version>.onnx, built (with the parity check) when missing, its sha256 kept
     beside it (`.sha256`) and checked before each use: a file damaged since it was built (a flipped
     weight gave every galaxy p_spiral 0.0, unsaid) is built again.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from galaxy.card import ONNX_FILE, ModelCard, default_model_dir, file_sha256, load_card, model_path
from galaxy.config import cache_dir  # noqa: F401 (engine modules import it from here)
from galaxy.errors import ModelError

log = logging.getLogger(__name__)


def resolve_model(model_dir=None) -> tuple[Path, ModelCard]:
    """The model directory (a folder or a shipped model's name; default: the shipped default) and its verified card."""
    path = model_path(model_dir) if model_dir else default_model_dir()
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    return path, load_card(path)


def onnx_model(model_dir: Path, card: ModelCard, parity_images=(), canonical: bool = False) -> Path:
    """Path of an ONNX file for these weights, exporting into the cache if needed. `canonical`: only an
    export at galaxy's own opset (ONNX_OPSET), what int8 calibration ranges are keyed by (tensor names
    differ between opsets: after `galaxy export --opset 7` the shipped int8 model could not be rebuilt),
    and of this version's exporter (ONNX_EXPORTER: an earlier one's BatchNorm folds depend on the CPU)."""
    from galaxy.card import ONNX_EXPORTER, ONNX_OPSET

    local = model_dir / ONNX_FILE
    record = card.export or {}
    if (local.is_file() and record.get("engine_key") == card.engine_key
            and (not canonical or (record.get("opset", ONNX_OPSET) == ONNX_OPSET
                                   and record.get("exporter") == ONNX_EXPORTER))
            and record.get("sha256") == file_sha256(local)):
        return local
    cached = cached_onnx_path(card)
    if cached.is_file() and not intact(cached):
        log.warning("the cached ONNX model %s is not the file that was built (its sha256 is not the one recorded "
                    "in %s): building it again", cached, _sidecar(cached).name)
        try:
            cached.unlink(missing_ok=True)  # (another process may have removed it first)
        except OSError as exc:
            raise ModelError(f"the cached ONNX model {cached} is damaged and cannot be removed ({exc.strerror or exc}):"
                             " delete it, or set GALAXY_CACHE to another folder") from None
    if not cached.is_file():
        from galaxy.training.export import export_onnx

        log.info("building the ONNX engine for %s into %s (once)", card.name, cached)
        try:
            record = export_onnx(model_dir, cached, parity_images, card=card)
        except OSError as exc:
            raise ModelError(f"cannot write the ONNX cache {cached}: {exc}; set GALAXY_CACHE") from None
        record_sha256(cached, record["sha256"])
    return cached


def cached_onnx_path(card: ModelCard) -> Path:
    """Where the cache keeps the ONNX export of these weights for this torch."""
    from engine.machine import installed_version
    from galaxy.card import ONNX_EXPORTER, ONNX_OPSET

    # torch's version from its metadata: a cached engine is found without importing torch (seconds); the
    # exporter's way in the name: a cache filled by an earlier version holds CPU-dependent folds
    exporter = ONNX_EXPORTER.replace("+", "-")
    name = f"{card.engine_key}-opset{ONNX_OPSET}-{exporter}-torch{installed_version('torch')}.onnx"
    return cache_dir() / "onnx" / name


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded beside a cached ONNX file when it was built (None: none recorded), unread file."""
    try:
        recorded = _sidecar(Path(path)).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return recorded if len(recorded) == 64 else None


def replace_recorded(tmp: Path, out: Path) -> None:
    """Rename a built file into the cache with its sha256 record: the old record goes first (a reader
    between the rename and a new record had checked the new file against the old one's sha256, and
    remembered it as damaged), then the file, then its record."""
    sha256 = file_sha256(tmp)
    _sidecar(out).unlink(missing_ok=True)
    tmp.replace(out)
    record_sha256(out, sha256)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def record_sha256(path: Path, sha256: str) -> None:
    """Keep a cached file's sha256 beside it; a cache that cannot take it is used unchecked (said once)."""
    from galaxy.files import write_atomically

    try:
        write_atomically(_sidecar(path), lambda tmp: tmp.write_text(sha256 + "\n", encoding="ascii"))
    except OSError as exc:
        log.info("cannot record the sha256 of %s (%s): it is used without the check", path, exc.strerror or exc)


def intact(path: Path) -> bool:
    """Whether a cached ONNX file (fp32, or an int8 model) is the one that was built: its sha256 against the
    one recorded beside it. A file from before such records (or whose record was lost) is taken as it is and
    recorded now.
    Remembered per file version (inode, size, mtime): hashing 21-83 MB costs 15-60 ms."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:  # removed by another process since it was found
        return False
    return _intact_version(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _intact_version(path: str, inode: int, size: int, mtime_ns: int) -> bool:
    del inode, size, mtime_ns  # the cache key: another version of the file is checked again
    actual = file_sha256(path)
    recorded = recorded_sha256(Path(path))
    if recorded is None:  # none (or torn): adopt the file as it is
        record_sha256(Path(path), actual)
        return True
    return recorded == actual
