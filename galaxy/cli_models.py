"""The commands that make and check what a model folder holds besides its weights, and list the models:
`galaxy export` (ONNX), `quantize` (int8), `calibrate` (temperature), `compile` (TensorRT engine),
`check-backends` (reduced precision against fp32) and `models`."""

from __future__ import annotations

from pathlib import Path

import click

from galaxy.card import ONNX_OPSET
from galaxy.errors import GalaxyError
from galaxy.files import same_file
from galaxy.config import CalibrateConfig, CheckConfig, CompileConfig, ExportConfig, QuantizeConfig
from galaxy.cli_common import run_command as _run
from galaxy.cli_common import only_what_to_act_on as _only_what_to_act_on, figure
from galaxy.cli_common import MODEL as _MODEL, Number, label_columns


@click.command()
@click.argument("model_dir", type=_MODEL)
@click.option("--images", "parity_images", multiple=True, type=click.Path(exists=True),
              help="Real images (files or folders) for the parity check (default: the shipped samples).")
@click.option("--tolerance", default=1e-4, show_default=True, type=Number(min=0),
              help="Largest |p_onnx - p_torch| accepted.")
@click.option("--opset", default=ONNX_OPSET, show_default=True)
def export(model_dir, parity_images, tolerance, opset):
    """Export MODEL_DIR to ONNX (MODEL_DIR/model.onnx) and check it against PyTorch.

    Example: galaxy export models/mine
    """
    from galaxy.training.export import export_model_dir

    _only_what_to_act_on()  # the line below says what was written; -v shows the steps
    record = _run(export_model_dir, ExportConfig(model_dir, tuple(parity_images), tolerance, opset))
    parity = record["parity"]
    click.echo(f"wrote {Path(model_dir) / record['file']}: opset {record['opset']}, parity max |dp| "
               f"{parity['max_abs_dp']:.2e} on {parity['images']} images", err=True)


@click.command()
@click.argument("model_dir", type=_MODEL)
@click.option("--calibration", required=True, type=click.Path(exists=True),
              help="Labelled training data (CSV or class folders); validation images are left out.")
@label_columns
@click.option("--images", default=256, show_default=True, type=click.IntRange(min=16), help="Calibration images.")
@click.option("--method", default="ptq-sensitive", show_default=True,
              type=click.Choice(["ptq-sensitive", "ptq", "qat"]),
              help="ptq-sensitive: measure each layer's int8 error on training images and keep the most "
                   "sensitive in fp32 until labels agree with fp32; ptq: every layer int8; qat: fake-quant "
                   "fine-tune (seeded) towards the fp32 model's outputs, then ptq.")
@click.option("--evaluation-images", default=1024, show_default=True, type=click.IntRange(min=0),
              help="Other training images the agreement with fp32 is measured on (recorded; 0: none, for ptq and "
                   "qat; ptq-sensitive needs at least 64 to rank its layers).")
@click.option("--unlabeled", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="qat: folders of unlabeled images added to the fine-tune.")
@click.option("--ship", is_flag=True,
              help="Also write MODEL_DIR/int8.json (calibration ranges, nodes kept fp32, a fingerprint): what "
                   "rebuilds this int8 model on first use where no training data is at hand (ptq-sensitive, ptq).")
def quantize(**options):
    """Build the int8 (static QDQ) ONNX model of MODEL_DIR, calibrated on real training images.

    Example: galaxy quantize galaxy/models/sdss-xception --calibration ../shared/data/gz1-sdss/labels.csv
    """
    from engine.quantize import quantize_model

    options["unlabeled"] = tuple(options["unlabeled"])
    path = _run(quantize_model, QuantizeConfig(**options))
    click.echo(f"wrote {path}; check it with galaxy check-backends", err=True)


@click.command()
@click.argument("model_dir", type=_MODEL)
@click.option("--data", required=True, type=click.Path(exists=True),
              help="The labelled data the model was trained on (its validation split is used).")
@label_columns
def calibrate(**options):
    """Fit the temperature of MODEL_DIR on its validation split and store it in the card.

    Every backend then outputs calibrated probabilities. Run check-backends afterwards.

    Example: galaxy calibrate galaxy/models/sdss-xception --data ../shared/data/gz1-sdss/labels.csv
    """
    from engine.calibrate import calibrate_model

    record = _run(calibrate_model, CalibrateConfig(**options))
    spread = record.get("ece_after_crossfit_range")  # (a record of an earlier version has one halving's figure)
    crossfit = (f"two-fold cross-fitted {record['ece_after_crossfit']:.4f}"
                + (f", {spread[0]:.4f}-{spread[1]:.4f} over {record['crossfit_splits']} halvings" if spread else ""))
    click.echo(f"temperature {record['temperature']:.4f}: ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f} "
               f"({crossfit}) on {record['fitted_on_n']} images", err=True)


@click.command("compile")
@click.argument("model_dir", type=_MODEL)
@click.option("--precision", default="fp16", show_default=True, type=click.Choice(["fp16", "int8"]))
@click.option("--calibration", type=click.Path(exists=True),
              help="INT8: labelled training data (CSV or class folders); validation images are left out.")
@label_columns
@click.option("--images", default=512, show_default=True, help="INT8 calibration images.")
@click.option("--force", is_flag=True, help="Rebuild even when a matching engine is cached.")
def compile_engine(**options):
    """Build the TensorRT engine of MODEL_DIR for this GPU (cached; needs TensorRT and CUDA).

    Example: galaxy compile galaxy/models/sdss-xception --precision int8
    --calibration ../shared/data/gz1-sdss/labels.csv
    """
    from engine.tensorrt_build import compile_model

    path = _run(compile_model, CompileConfig(**options))
    click.echo(f"wrote {path}; classify with --backend "
               f"{'tensorrt' if options['precision'] == 'fp16' else 'tensorrt-int8'}", err=True)


@click.command("check-backends")
@click.argument("model_dir", type=_MODEL)
@click.option("--data", required=True, type=click.Path(exists=True),
              help="The labelled data the model was trained on (its validation split is used).")
@click.option("--backend", "backends", multiple=True, default=("torch", "onnxruntime-int8"), show_default=True,
              help="A backend to check; repeat, or separate with commas, for several.")
@label_columns
def check_backends(**options):
    """Check reduced-precision backends against fp32 on the validation split; record in the card.

    Example: galaxy check-backends galaxy/models/sdss-xception --data ../shared/data/gz1-sdss/labels.csv
    """
    from engine.checks import check_model_backends
    from engine.machine import int8_arithmetic

    # "torch,onnxruntime-int8", as the default shows them, had been refused as one name
    names = (name.strip() for value in options["backends"] for name in value.split(","))
    options["backends"] = tuple(dict.fromkeys(name for name in names if name))
    report = _run(check_model_backends, CheckConfig(**options))
    checked_now = {"onnxruntime", *options["backends"]}
    here = int8_arithmetic()
    for name, rec in report["results"].items():
        # a kept int8 check of another CPU int8 arithmetic does not hold here (`galaxy models` says which do)
        elsewhere = name == "onnxruntime-int8" and rec.get("arithmetic", here) != here
        click.echo(f"{name:<18} {rec['precision']:<5} {rec['images_per_s']:>7.1f} img/s  accuracy {rec['accuracy']:.4f}"
                   + (f"  agreement {rec['label_agreement']:.4f}  {'passed' if rec['passed'] else 'FAILED'}"
                      if "label_agreement" in rec else "")
                   + ("" if name in checked_now else f"  (kept: checked {rec.get('checked', 'earlier')}"
                      + (f" on {rec['arithmetic']} CPUs, not this {here} one)" if elsewhere else ", not now)")))
    for name, reason in report.get("not_checked", {}).items():
        click.echo(f"{name:<18} not checked: {reason}")


@click.command()
@click.argument("model_dirs", nargs=-1, type=_MODEL)
def models(model_dirs):
    """List models with their cards: the shipped ones, plus any MODEL_DIRS given.

    Example: galaxy models models/mine
    """
    from engine.backends import checks_here, holds_check, int8_checks_holding
    from engine.int8_models import shipped_int8
    from engine.machine import int8_arithmetic
    from galaxy.card import default_model_dir, load_card, shipped_model_dirs, speeds_by_machine

    default = default_model_dir()
    this_cpu = int8_arithmetic()  # the int8 checks that hold here are of its arithmetic
    failed = 0
    listed = list(map(Path, shipped_model_dirs()))
    for named in map(Path, model_dirs):  # a folder named again (the shipped one, by another path) is listed once
        if not any(same_file(named, earlier) for earlier in listed):
            listed.append(named)
    for model_dir in listed:
        try:  # one broken folder is said, and the others still listed (the first had ended the command)
            card = load_card(model_dir)
        except GalaxyError as exc:
            click.echo(f"Error: {exc}", err=True)
            failed += 1
            continue
        val = card.metrics.get("validation", {})
        spec = card.input_spec
        mark = "  (the default: used without --model)" if model_dir == default else ""
        click.echo(f"{card.name}  {model_dir}{mark}\n  {card.architecture}, {spec.size} px, "
                   f"centre crop {spec.crop_fraction:g}, "
                   f"classes {', '.join(card.classes)}\n  validation: accuracy {figure(val.get('accuracy'))}, "
                   f"balanced {figure(val.get('balanced_accuracy'))}, ROC AUC {figure(val.get('roc_auc'))}"
                   f" (n={val.get('n', '?')})\n  weights sha256 {card.weights_sha256[:16]}...; trained with: "
                   f"{card.training.get('command', '?')}")
        records = checks_here(card)  # (int8's: of this CPU's int8 arithmetic, which may be kept apart)
        passed = [name for name, rec in records.items() if rec.get("passed") and "label_agreement" in rec]
        holds = {name: holds_check(name, card, records[name], model_dir) for name in passed}
        checked = [f"{name} {records[name]['precision']} ({100 * records[name]['label_agreement']:.2f}% labels kept"
                   + (f" on {this_cpu} CPUs" if name == "onnxruntime-int8" else "")
                   + ("; its recipe ships" if name == "onnxruntime-int8" and shipped_int8(model_dir, card) else "")
                   + ")" for name in passed if holds[name]]
        if checked:
            click.echo(f"  checked backends (validation split, against fp32): {', '.join(checked)}")
        stale = [name for name in passed if not holds[name]]
        if stale:
            click.echo(f"  checked on another model or precision than it would run here: {', '.join(stale)} "
                       "(rerun check-backends)")
        elsewhere = sorted(set(int8_checks_holding(card, model_dir)) - {this_cpu})
        if "onnxruntime-int8" not in records and elsewhere:
            click.echo(f"  onnxruntime-int8 checked on {', '.join(elsewhere)} CPUs only: this CPU's int8 arithmetic "
                       f"({this_cpu}) gives other outputs, so `auto` does not use it here until "
                       "check-backends runs on such a CPU")
        for machine, speeds in speeds_by_machine(card.backends).items():
            earlier = speeds.get("measured_before", {})  # kept from an earlier check: not one run's figures
            figures = ", ".join(f"{name} {value:,.0f}" + (f" (measured {earlier[name]})" if name in earlier else "")
                                for name, value in speeds.items() if name not in ("measured", "measured_before"))
            click.echo(f"  engine images/s on {machine}" + (f", {speeds['measured']}" if "measured" in speeds else "")
                       + f": {figures}")
    if failed:
        raise SystemExit(1)
