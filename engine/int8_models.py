"""Which int8 model the int8 backend loads, and the recipe a model folder ships to rebuild it.

The int8 models themselves are built by engine/quantize.py (`galaxy quantize`): one per method
(recipe), cached beside the fp32 ONNX under the card's engine key + recipe name. The backend loads
what `int8_choice` names: the model folder's shipped recipe (below), else the first recipe of
RECIPES that is built; `check-backends` records which, and its fingerprint.

A ptq or ptq-sensitive model ships as the recipe that rebuilds it without data (`quantize --ship`:
MODEL_DIR/int8.json holds the calibration ranges, the nodes kept fp32 and the built model's
fingerprint); the int8 backend rebuilds it on first use into the cache and loads it only if the
fingerprint comes out the same, i.e. it is the model that `check-backends` checked (which records the
fingerprint of what it ran; `auto` offers int8 only while the model it would load has that one). The fingerprint
hashes the graph and its quantized initializers, not outputs: int8 arithmetic differs between CPUs
(VNNI or not), the model does not.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.artifacts import cache_dir, cached_onnx_path, intact, onnx_model, recorded_sha256, replace_recorded
from galaxy.errors import BackendUnavailable, UsageError
from galaxy.files import free_bytes, remove_quietly, sweep_stale_work_files, write_atomically

log = logging.getLogger(__name__)

# The logits are quantized too (uint8 steps of ~0.04): the compact model's int8 probabilities take 330
# distinct values on the 1,039 validation galaxies (fp32: 969), two exactly 0.5. Keeping the head fp32
# was tried (2026-11-29, 2-core Zen 5) and not kept: the compact model's search then kept 4 nodes fp32,
# its validation agreement fell to 99.42% (fails the 99.5% check) and its engine to 2,876 img/s.
INT8_RECIPE = "qdq-u8s8-perchannel-percentile99.999-v1"
SENSITIVE_RECIPE = "qdq-u8s8-perchannel-percentile99.999-sensitive-fp32-v1"
QAT_RECIPE = "qat-fakequant-u8s8-seed0-v1-then-" + INT8_RECIPE
# method -> recipe (the cache key), in the order the int8 backend prefers a built one: as measured on
# the compact models (README), ptq-sensitive agreed best with fp32, qat no better than ptq.
RECIPES = {"ptq-sensitive": SENSITIVE_RECIPE, "qat": QAT_RECIPE, "ptq": INT8_RECIPE}
SHIPPED_INT8 = "int8.json"  # in a model folder: the recipe that rebuilds its checked int8 model
SHIPPABLE = ("ptq-sensitive", "ptq")  # qat's tuned weights live only in the cache
# The fingerprint of a damaged file: no check holds for it; a shipped recipe is rebuilt over it,
# a model built here is passed over (`galaxy quantize` builds it again).
UNREADABLE = "unreadable"


def int8_path(card, method: str = "ptq") -> Path:
    if method not in RECIPES:
        raise UsageError(f"unknown int8 method {method!r}; expected one of {', '.join(RECIPES)}")
    return cache_dir() / "onnx" / f"{card.engine_key}-{RECIPES[method]}.onnx"


def built_int8(card) -> tuple[str, Path] | None:
    """(recipe, path) of the int8 model the backend uses: the first of RECIPES built (and readable),
    or None."""
    for method, recipe in RECIPES.items():
        path = int8_path(card, method)
        if path.is_file() and as_built(path) and model_fingerprint(path) != UNREADABLE:
            return recipe, path
    return None


def as_built(path: Path) -> bool:
    """Whether a cached int8 model is the file that was built (its sha256 against the one recorded beside
    it, `engine.artifacts.intact`): its fingerprint covers the quantizer's nodes and weights, not every
    attribute, and a file changed in place (a node's pads) had kept its checked fingerprint."""
    if intact(path):
        return True
    try:
        stat = path.stat()
    except OSError:  # removed by another process since: nothing to say
        return False
    _say_damaged(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return False


@functools.lru_cache(maxsize=32)
def _say_damaged(path: str, inode: int, size: int, mtime_ns: int) -> None:
    """Said once per version of a damaged file (a run asks up to five times which int8 model it loads)."""
    del inode, size, mtime_ns
    log.warning("the int8 model %s is not the file that was built (its sha256 differs from the one recorded "
                "beside it): passed over (a shipped recipe's is built again)", path)


def build_int8(pre, path, reader, ranges, nodes_to_exclude=(), nodes_to_quantize=()):
    """The one int8 build (QDQ, U8S8, per-channel weights, percentile 99.999) of the pre-processed
    fp32 ONNX `pre` into `path`. `ranges`: ONNX Runtime's calibration cache; when the file exists its
    ranges are used and `reader` (a CalibrationDataReader, or None) is not read."""
    import contextlib
    import sys

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # the calibrator prints its progress ("Collecting tensor data ...") to stdout, which is for results
    with contextlib.redirect_stdout(sys.stderr):
        quantize_static(str(pre), str(path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile, calibration_cache_path=str(ranges),
                        nodes_to_exclude=list(nodes_to_exclude), nodes_to_quantize=list(nodes_to_quantize),
                        extra_options={"CalibPercentile": 99.999})


def model_fingerprint(path) -> str:
    """sha256 of an ONNX model's graph (each node's op type, inputs, outputs, in order) and initializers
    (name, dtype, shape, bytes, by name): what the quantizer computed, whatever CPU later runs it and
    whatever producer fields the file carries. Remembered per file version (inode, size, mtime): a
    run asks several times (which model loads, whether its check holds, the autotune key)."""
    stat = os.stat(path)
    return _fingerprint(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _fingerprint(path: str, inode: int, size: int, mtime_ns: int) -> str:
    del inode, size, mtime_ns  # the cache key: another version of the file is hashed again
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError, onnx's own: a damaged file in the cache
        log.warning("the int8 model %s cannot be read (%s)", path, str(exc)[:200])
        return UNREADABLE
    digest = hashlib.sha256()
    for node in model.graph.node:
        digest.update(f"{node.op_type}({','.join(node.input)})->{','.join(node.output)};".encode())
    for tensor in sorted(model.graph.initializer, key=lambda t: t.name):
        array = numpy_helper.to_array(tensor)
        digest.update(f"{tensor.name}:{array.dtype}:{array.shape};".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Int8Choice:
    """The int8 model the backend would load: its recipe and fingerprint, and where it is (None: the
    folder's shipped recipe, to be rebuilt into the cache on first use)."""

    recipe: str
    fingerprint: str
    path: Path | None
    shipped: dict | None = None


def int8_choice(model_dir, card) -> Int8Choice | None:
    """Which int8 model the backend loads, without building anything; None when there is none.

    A folder that ships its int8 model (`int8.json`) decides it: a cache entry of the same engine
    key and recipe built by another `galaxy quantize` (of a copy of the model, or without --ship)
    is rebuilt over, not loaded, since the check was of the shipped one. Where the shipped recipe
    was found here to rebuild into another model (another onnxruntime), the model built here, if
    any, is the one (`galaxy quantize` is then the way out, and `auto` trusts it only once checked).
    """
    shipped = shipped_int8(model_dir, card)
    if shipped is not None and not _rebuild_failed(card, shipped):
        path = int8_path(card, shipped["method"])
        ready = path.is_file() and as_built(path) and model_fingerprint(path) == shipped["fingerprint"]
        return Int8Choice(shipped["recipe"], shipped["fingerprint"], path if ready else None, shipped)
    found = built_int8(card)
    return Int8Choice(found[0], model_fingerprint(found[1]), found[1]) if found else None


def require_int8(model_dir, card) -> tuple[str, Path]:
    """(recipe, path) of the int8 model `int8_choice` names, rebuilding a shipped one into the cache
    (seconds, no data needed) when the cache does not hold exactly it.

    Raises:
        BackendUnavailable: there is none, or the shipped recipe rebuilds into another model and
            nothing was built here instead.
    """
    choice = int8_choice(model_dir, card)
    shipped = shipped_int8(model_dir, card) if choice is None else None
    if shipped is not None:  # (int8_choice passes over a shipped recipe only where it rebuilt into another model)
        marker = _rebuild_marker(card, shipped)
        failed = BackendUnavailable(
            f"the int8 model {Path(model_dir) / SHIPPED_INT8} ships was rebuilt here into another model than the "
            f"one checked (with onnxruntime {_ort_version()}; remembered in {marker}): build one here with "
            "`galaxy quantize` (delete that file to try the rebuild again)")
        failed.lasting = True
        raise failed
    if choice is None:
        raise BackendUnavailable(
            f"no int8 model for {card.name} yet: build it once with "
            "`galaxy quantize MODEL_DIR --calibration LABELLED_DATA` (real training images)")
    if choice.path is not None:
        return choice.recipe, choice.path
    if int8_path(card, choice.shipped["method"]).is_file():
        log.info("the int8 model in the cache is not the one %s ships: rebuilding it from %s", card.name,
                 SHIPPED_INT8)
    try:
        return choice.recipe, _rebuild(model_dir, card, choice.shipped)
    except BackendUnavailable:
        found = built_int8(card)
        if found is None:
            raise
        log.warning("using the int8 model built here (%s): the shipped one could not be rebuilt", found[1].name)
        return found


def int8_fingerprint(model_dir, card) -> str | None:
    """The fingerprint of the int8 model the backend would load (`int8_choice`); None when there is none."""
    choice = int8_choice(model_dir, card)
    return choice.fingerprint if choice else None


def int8_recipe(model_dir, card) -> str | None:
    """The recipe of the int8 model the backend would load (`int8_choice`); None when there is none."""
    choice = int8_choice(model_dir, card)
    return choice.recipe if choice else None


def _rebuild_marker(card, shipped: dict) -> Path:
    return int8_path(card, shipped["method"]).with_suffix(".rebuild-differs.json")


def _rebuild_failed(card, shipped: dict) -> bool:
    """Whether the shipped recipe was found here to rebuild into another model, with this onnxruntime."""
    try:
        found = json.loads(_rebuild_marker(card, shipped).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(found, dict):  # not a marker this module wrote: nothing is known
        return False
    # and from the fp32 model it was built from: a marker written from a damaged (since rebuilt) or older
    # torch's export had kept int8 off for good (review of the derived engines)
    fp32 = recorded_sha256(cached_onnx_path(card))
    return (found.get("shipped_fingerprint") == shipped.get("fingerprint")
            and found.get("onnxruntime") == _ort_version() and (fp32 is None or found.get("fp32_sha256") == fp32))


def shipped_int8(model_dir, card) -> dict | None:
    """The int8 recipe MODEL_DIR ships for these weights (`quantize --ship`), or None."""
    path = Path(model_dir) / SHIPPED_INT8 if model_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        shipped = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable int8 recipe %s (%s)", path, exc)
        return None
    if shipped.get("weights_sha256") != card.weights_sha256:
        return None
    if shipped.get("recipe") != RECIPES.get(shipped.get("method")):  # shipped by an earlier galaxy
        log.info("%s ships an int8 model of the recipe %s, which this version no longer builds (it builds %s): "
                 "`galaxy quantize --ship` and `galaxy check-backends` again", path, shipped.get("recipe"),
                 RECIPES.get(shipped.get("method")))
        return None
    if "temperature" in shipped and shipped["temperature"] != card.temperature:  # recalibrated since `--ship`
        log.info("%s ships an int8 model of temperature %g, and the card now holds %g: it no longer applies",
                 path, shipped["temperature"], card.temperature)
        return None
    return shipped


def shape_inferred(pre: Path) -> Path:
    """The side file ONNX Runtime's quantizer writes beside `pre` (and removes unless it fails reading it)."""
    return pre.with_name(f"{pre.stem}-inferred{pre.suffix}")


def free_space(folder: Path) -> str:
    """The space left on `folder`'s file system, in words ("unknown" where it cannot be read)."""
    free = free_bytes(folder)
    return "unknown" if free is None else f"{free / 2**20:,.0f} MiB"


def short_of_space(folder: Path) -> bool:
    """Whether `folder`'s file system has too little left for an int8 build (or its space cannot be read)."""
    free = free_bytes(folder)
    return free is None or free < 256 * 2**20  # a model of 20-85 MB and its work files


def private_files(out: Path, *suffixes: str) -> list[Path]:
    """Hidden work files beside `out`, private to this process: `.<stem>.<pid><suffix>`. (They were
    `.with_suffix` of a pid-named stem, which replaced the pid: processes of a job array building the
    same int8 model at once shared, and deleted, each other's files.)"""
    sweep_stale_work_files(out.parent, f".{out.stem}.")  # a killed build's (they were never removed)
    return [out.with_name(f".{out.stem}.{os.getpid()}{suffix}") for suffix in suffixes]


def _rebuild(model_dir, card, shipped: dict) -> Path:
    """Build the shipped int8 model from its ranges and fp32 nodes into the cache; return its path."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = int8_path(card, shipped["method"])
    out.parent.mkdir(parents=True, exist_ok=True)
    pre, tmp, ranges = private_files(out, ".pre.onnx", ".tmp.onnx", ".ranges.json")
    started = time.time()
    try:
        ranges.write_text(json.dumps(shipped["ranges"]))
        fp32 = onnx_model(Path(model_dir), card, canonical=True)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        build_int8(pre, tmp, None, ranges, shipped.get("excluded_nodes", []))
        rebuilt = model_fingerprint(tmp)
        if rebuilt != shipped.get("fingerprint"):
            write_atomically(_rebuild_marker(card, shipped), lambda path: path.write_text(json.dumps(
                {"shipped_fingerprint": shipped.get("fingerprint"), "rebuilt_fingerprint": rebuilt,
                 "onnxruntime": _ort_version(), "fp32_sha256": recorded_sha256(fp32)}) + "\n"))
            why = (f"onnxruntime {_ort_version()} here, {shipped.get('onnxruntime')} when shipped"
                   if shipped.get("onnxruntime") != _ort_version() else
                   f"the same onnxruntime {_ort_version()}; the model's temperature or the exported ONNX changed"
                   " since `--ship`")
            differs = BackendUnavailable(
                f"the int8 model rebuilt from {Path(model_dir) / SHIPPED_INT8} differs from the one checked ({why}): "
                "build one here with `galaxy quantize` (it is used instead, and `auto` offers it once "
                "`galaxy check-backends` has passed it)")
            differs.lasting = True
            raise differs
        replace_recorded(tmp, out)
    except OSError as exc:  # a read-only or full cache: named, not the hidden temporary file
        raise BackendUnavailable(f"cannot build the shipped int8 model into {out.parent} ({exc.strerror or exc}): "
                                 "set GALAXY_CACHE to a folder that can be written") from None
    except (BackendUnavailable, KeyboardInterrupt):
        raise
    except Exception as exc:  # ONNX Runtime's tools write files on a full disk short without an error, then
        # fail reading them back (protobuf's DecodeError): said with the space left, not as that traceback
        if short_of_space(out.parent):
            raise BackendUnavailable(f"cannot build the shipped int8 model into {out.parent} ({type(exc).__name__}: "
                                     f"{exc}; {free_space(out.parent)} free there): free space, or set GALAXY_CACHE "
                                     "to another folder") from None
        failed = BackendUnavailable(f"cannot build the shipped int8 model of {card.name} from {SHIPPED_INT8} "
                                    f"({type(exc).__name__}: {exc}): build one here with `galaxy quantize`")
        failed.lasting = True  # not the disk: the next run would fail alike (not measured again each run)
        raise failed from None
    finally:
        remove_quietly(pre, tmp, ranges, shape_inferred(pre))
    record = {key: shipped[key] for key in ("method", "recipe", "weights_sha256", "excluded_nodes") if key in shipped}
    record |= {"rebuilt_from": str(Path(model_dir) / SHIPPED_INT8), "fingerprint": shipped["fingerprint"],
               "seconds": round(time.time() - started, 1)}
    write_atomically(out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))
    log.info("rebuilt the shipped int8 model of %s (%s) in %.1f s", card.name, shipped["method"], record["seconds"])
    return out


def ship_int8(model_dir, card, method: str = "ptq-sensitive") -> Path:
    """Write MODEL_DIR/int8.json from the record of the int8 model built by `method` (`quantize --ship`);
    return its path."""
    built = int8_path(card, method)
    record_path = built.with_suffix(".json")
    record = json.loads(record_path.read_text()) if method in SHIPPABLE and record_path.is_file() else {}
    if "ranges" not in record:
        raise UsageError(f"no shippable {method} int8 build of {card.name}: build it with `galaxy quantize "
                         "--method ptq-sensitive` (or ptq) first; qat's tuned weights cannot ship as ranges")
    shipped = {key: record[key] for key in ("method", "recipe", "weights_sha256", "calibration_images",
                                            "training_agreement", "excluded_nodes", "ranges") if key in record}
    shipped["fingerprint"] = model_fingerprint(built)
    path = Path(model_dir) / SHIPPED_INT8
    text = json.dumps(shipped | {"temperature": card.temperature, "onnxruntime": _ort_version()}, indent=1) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))
    return path


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
