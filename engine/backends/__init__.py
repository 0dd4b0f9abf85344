"""Inference backends behind one small surface.

Each backend module has `load(model_dir, card, options) -> Session`; a Session has
`run(tensor) -> probabilities` (float32 (N, K) from float32 (N, C, H, W)), `max_batch`,
`name` and `device` (what really runs it). Optional heavy imports happen inside `load`.
GPU sessions (`accepts_device_tensors`) also take torch CUDA tensors, with no host copy.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
from dataclasses import dataclass

from galaxy.errors import UsageError

log = logging.getLogger(__name__)

# name -> module implementing load(); "auto" is resolved by `pick`.
BACKENDS = {
    "onnxruntime": "engine.backends.onnxruntime",
    "onnxruntime-int8": "engine.backends.onnxruntime_int8",
    "torch": "engine.backends.torch_cpu",
    "torch-compile": "engine.backends.torch_compiled",
    "torch-cuda": "engine.backends.torch_cuda",
    "tensorrt": "engine.backends.tensorrt",
    "tensorrt-int8": "engine.backends.tensorrt_int8",
}
GPU_BACKENDS = ("tensorrt", "tensorrt-int8", "torch-cuda")
# Given only when asked for by name: torch-compile compiles for ~50 s on a cold cache for a
# 1.1-1.5x gain measured here, worth it for a survey, not for a folder of samples.
OPT_IN = ("torch-compile",)
# Backends a classify run on a CPU gives one single-threaded batch per core (`engine.runner.Runner`;
# their Session.run may be called from several threads at once: ONNX Runtime's Run is thread-safe,
# the eager torch module keeps no state between calls). Not int8: decode-bound already, it ran 5%
# slower end to end that way (2-core Zen 5, compact model, 3 rounds: 117,900 -> 111,500/min).
STREAMED = ("onnxruntime", "torch")


@dataclass(frozen=True)
class BackendOptions:
    """Options every backend understands.

    `spin_wait`: let ONNX Runtime's threads spin between parallel sections (its default, the
    fastest engine alone). A classify run turns it off because its decode pipeline shares the
    cores: spinning threads took the decoder's CPU (2-core Zen 5, 1,000 cutouts, DALI decode,
    best of 3: compact int8 end to end 99,772 -> 128,026/min, compact fp32 69,393 -> 73,122,
    full fp32 13,561 -> 13,476; engine alone 8-14% slower without it). The torch backends
    ignore it: their OpenMP threads follow OMP_WAIT_POLICY, read once at import, and PASSIVE
    made torch bf16 slower end to end as well (same machine, 2 runs each: compact 51,150 /
    58,324 -> 48,150 / 45,655, full 16,730 / 17,298 -> 14,895 / 14,131 images/min).

    `streams`: how many batches the caller runs at once, each on `threads` threads (the `Runner`
    of a classify run: one single-threaded stream per core, for the `STREAMED` backends). The
    backends do not read it; `auto` times its candidates that way (`engine.autotune`).
    """

    threads: int = 0
    batch_size: int = 32
    spin_wait: bool = True
    streams: int = 1


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def available(name: str, card, model_dir=None) -> bool:
    """Whether backend `name` can run here in the form that was checked (int8: built, or shipped in
    `model_dir` to be rebuilt on first use)."""
    if name in GPU_BACKENDS:
        from engine.backends.torch_cuda import cuda_available

        if not cuda_available():
            return False
        if name == "tensorrt-int8":
            return False  # offered only when asked for by name: INT8 is checked per model, not assumed
        return name == "torch-cuda" or tensorrt_installed()
    if name in ("torch", "torch-compile"):
        from engine.machine import native_bf16

        return native_bf16()
    if name == "onnxruntime-int8":  # (whether its check holds on this CPU's int8 arithmetic: `check_record`)
        from engine.int8_models import int8_recipe

        return int8_recipe(model_dir, card) is not None
    return name in BACKENDS


def check_record(name: str, card) -> dict | None:
    """The card's check-backends record of `name` that holds on this machine, or None: for int8 the check
    of this CPU's int8 arithmetic (`engine.machine.int8_arithmetic`: a check on a VNNI CPU says nothing
    of an AVX2 one, where uint8 x int8 sums saturate, and the other way round)."""
    if name == "onnxruntime-int8":
        from engine.machine import UNKNOWN_ARITHMETIC, int8_arithmetic

        here = int8_arithmetic()  # an arithmetic not known to be the same (no flags read) is never one checked
        return None if here == UNKNOWN_ARITHMETIC else int8_checks((card.backends or {}) if card else {}).get(here)
    record = ((card.backends or {}) if card else {}).get("results", {}).get(name)
    return record if isinstance(record, dict) else None


def checks_here(card) -> dict[str, dict]:
    """The card's check-backends records that hold on this machine (`check_record`), by backend, in the
    card's order (int8's last where its results hold none)."""
    results = ((card.backends or {}) if card else {}).get("results", {})
    records = {name: check_record(name, card) for name in dict.fromkeys([*results, "onnxruntime-int8"])}
    return {name: record for name, record in records.items() if record is not None}


def int8_checks(backends: dict) -> dict[str, dict]:
    """The int8 check records of a card's `backends`, by the int8 arithmetic each ran on: those kept in
    "int8_arithmetic", and the latest check (in "results"), under its `record_arithmetic`."""
    checks = {arithmetic: rec for arithmetic, rec in backends.get("int8_arithmetic", {}).items()
              if isinstance(rec, dict)}
    latest = backends.get("results", {}).get("onnxruntime-int8")
    if isinstance(latest, dict):
        checks[record_arithmetic(latest)] = latest
    return checks


def int8_checks_holding(card, model_dir=None) -> dict[str, dict]:
    """The card's int8 checks (`int8_checks`), by int8 arithmetic, that ran the int8 model which would load
    now (`holds_check`): a check of an earlier int8 model of this card is no check of this one."""
    return {arithmetic: rec for arithmetic, rec in int8_checks((card.backends or {}) if card else {}).items()
            if holds_check("onnxruntime-int8", card, rec, model_dir)}


def record_arithmetic(record: dict) -> str:
    """The int8 arithmetic an int8 check record ran on: its own word, or read from the machine it names
    (checks from before the arithmetic was recorded). One that names neither was recorded where the
    code of its day offered int8, a VNNI CPU (the card's `backends.machine` is not asked: a later check
    of another backend elsewhere rewrites it, and a VNNI check had been read as an AVX2 one)."""
    from engine.machine import INT8_EXACT, machine_int8_arithmetic

    return record.get("arithmetic") or machine_int8_arithmetic(record.get("machine")) or INT8_EXACT


def failed_check(name: str, card) -> bool:
    """Whether the card records a check-backends failure of `name` (a GPU backend is offered by `auto`
    without a check, fp16 being the GPU path's precision, but not after one that failed)."""
    record = check_record(name, card)
    return record is not None and record.get("passed") is False


def cpu_candidates(card, model_dir=None) -> list[str]:
    """CPU backends `auto` may choose: ONNX Runtime fp32, and those that passed their check against
    fp32 on the validation split (the card's `backends` record; int8's of this CPU's int8 arithmetic) and can
    run here (opt-in ones aside)."""
    passed = {n for n, rec in checks_here(card).items() if rec.get("passed") and n in BACKENDS
              and n not in GPU_BACKENDS + OPT_IN and available(n, card, model_dir)
              and holds_check(n, card, rec, model_dir)}
    return sorted(passed | {"onnxruntime"})


def holds_check(name: str, card, record: dict, model_dir=None) -> bool:
    """Whether the check in `record` ran the model `name` would load now: int8 the same model (by its
    fingerprint; a check recorded before fingerprints were, by its recipe); torch the same precision (a
    check where it ran fp32, on a CPU without native bf16, says nothing of its bf16 here)."""
    if name in ("torch", "torch-compile"):
        from engine.machine import native_bf16

        return record.get("precision") in (None, "bf16" if native_bf16() else "fp32")
    if name != "onnxruntime-int8":
        return True
    from engine.int8_models import INT8_RECIPE, int8_fingerprint, int8_recipe

    if "fingerprint" in record:
        return int8_fingerprint(model_dir, card) == record["fingerprint"]
    # records from before recipes were recorded checked the plain recipe
    return int8_recipe(model_dir, card) == record.get("recipe", INT8_RECIPE)


def still_choosable(name: str | None, card, model_dir=None) -> bool:
    """Whether `auto` may still run backend `name` here: a checked CPU candidate of this machine, or
    a GPU backend that can run here. A rerun of an output begun with `auto` continues with the backend
    that began it, where it may (timing again can choose another, whose outputs differ in the last
    digits: the rerun was refused as made with other settings)."""
    if name is None or name not in BACKENDS:
        return False
    if name in GPU_BACKENDS:
        return available(name, card, model_dir)
    return name in cpu_candidates(card, model_dir)


def pick(name: str, card=None, model_dir=None, options: BackendOptions | None = None) -> str:
    """The backend a name means.

    `auto` on a machine with an NVIDIA GPU: TensorRT fp16 where TensorRT is installed, else
    PyTorch CUDA fp16. On a CPU it is measured on this machine, not guessed: the fastest of
    `cpu_candidates` timed here on real cutouts the first time (`engine.autotune`, cached per
    CPU, core count, library versions and engine key). Without `model_dir` nothing can be
    timed and ONNX Runtime fp32 is the answer unless it is the only candidate anyway.
    """
    if name == "auto":
        gpu = next((n for n in GPU_BACKENDS if available(n, card) and not failed_check(n, card)), None)
        if gpu:
            log.info("backend auto -> %s (an NVIDIA GPU is present)", gpu)
            return gpu
        candidates = cpu_candidates(card, model_dir)
        if model_dir is None or len(candidates) == 1:
            return "onnxruntime"
        from engine.autotune import measured_choice

        options = options or BackendOptions()
        chosen, record = measured_choice(card, candidates, options.batch_size,
                                         lambda n: load_named(n, model_dir, card, options_for(n, options)),
                                         model_dir, {n: options_for(n, options).streams for n in candidates},
                                         {n: options_for(n, options).threads for n in candidates}, options.spin_wait)
        speeds = ", ".join(f"{n} {v:.0f}" for n, v in record["images_per_s"].items() if v)
        log.info("backend auto -> %s (images/s measured on this machine, %s, %d cores, %s: %s)", chosen,
                 record["machine"]["cpu"], record["machine"]["cores"], record["measured"], speeds)
        return chosen
    require_known(name)
    return name


def require_known(name: str) -> None:
    """Refuse a backend name that is neither `auto` nor a backend (also before a `--ray` run starts its
    actors, which would each fail on it)."""
    if name != "auto" and name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose from {['auto', *BACKENDS]}")


def per_core(options: BackendOptions) -> BackendOptions:
    """`options` as classify runs them on a CPU with several cores: one single-threaded batch per core
    (`streams`; only the `STREAMED` backends take them, `options_for`)."""
    from galaxy.cores import usable_cores

    cores = usable_cores()
    return dataclasses.replace(options, threads=1, streams=cores) if cores > 1 else options


def options_for(name: str, options: BackendOptions) -> BackendOptions:
    """The options backend `name` runs with: `options` asks for streams (one single-threaded batch per
    core), which only the `STREAMED` backends take; the others run one batch on their default threads."""
    if options.streams > 1 and name not in STREAMED:
        return dataclasses.replace(options, threads=0, streams=1)
    return options


def load_named(name: str, model_dir, card, options: BackendOptions, parity_images=()):
    """Load the backend called `name` (not `auto`) for a model; returns its Session."""
    return importlib.import_module(BACKENDS[name]).load(model_dir, card, options, parity_images)


def load(name: str, model_dir, card, options: BackendOptions, parity_images=()):
    """Load backend `name` (or `auto`) for a model; returns its Session."""
    return load_chosen(name, pick(name, card, model_dir, options), model_dir, card, options, parity_images)


def load_chosen(asked: str, chosen: str, model_dir, card, options: BackendOptions, parity_images=()):
    """Load `chosen`, what `pick(asked)` gave. Where `auto` chose TensorRT and it cannot run (a partly
    installed TensorRT, whose PyPI wheel fetches the real one; a plan that fails to build), it falls
    back to PyTorch CUDA with a warning; where it chose a CPU backend that cannot load now (the int8
    model a cached choice names cannot be rebuilt: a read-only cache), to ONNX Runtime fp32, as a
    first measurement drops a candidate that cannot load. A backend named whose check the card records
    as failed runs, as asked, with a warning (it had run with no word at any verbosity)."""
    try:
        session = load_named(chosen, model_dir, card, options, parity_images)
        record = check_record(chosen, card)
        # (of the model that loads now: a failure of plain ptq says nothing of the ptq-sensitive one built since)
        if asked == chosen and failed_check(chosen, card) and holds_check(chosen, card, record, model_dir):
            agreement = record.get("label_agreement")
            log.warning("%s: the card records its check against ONNX Runtime fp32 as failed%s, so `auto` does "
                        "not use it; running it as asked", chosen,
                        f" ({100 * agreement:.2f}% label agreement)" if isinstance(agreement, (int, float)) else "")
        if asked == chosen == "onnxruntime-int8" and not (record and holds_check(chosen, card, record, model_dir)):
            from engine.machine import int8_arithmetic

            here = int8_arithmetic()
            elsewhere = sorted(set(int8_checks_holding(card, model_dir)) - {here})
            if elsewhere:
                log.warning("onnxruntime-int8: checked against ONNX Runtime fp32 on %s CPUs only; this CPU's int8 "
                            "arithmetic (%s) gives other outputs and was not checked, so `auto` does not use it here; "
                            "running it as asked (galaxy check-backends here checks it)", ", ".join(elsewhere), here)
            elif int8_checks(card.backends or {}):
                log.warning("onnxruntime-int8: the card's checks against ONNX Runtime fp32 ran another int8 model "
                            "than the one loading (by fingerprint), so `auto` does not use it; running it as asked "
                            "(galaxy check-backends here checks it)")
        return session
    except Exception as exc:
        instead = ("torch-cuda" if chosen in ("tensorrt", "tensorrt-int8") and available("torch-cuda", card)
                   else "onnxruntime" if chosen not in GPU_BACKENDS + ("onnxruntime",) else None)
        if asked != "auto" or instead is None:
            raise
        log.warning("backend auto: %s cannot run here (%s: %s); using %s", chosen, type(exc).__name__, exc, instead)
        return load_named(instead, model_dir, card, options_for(instead, options), parity_images)
