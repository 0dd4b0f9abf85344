"""The `galaxy` command line: click options -> a frozen config -> a library function."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path

import click

from galaxy.card import ONNX_OPSET
from galaxy.errors import GalaxyError, end_at_once_on_interrupt, exit_status, interruption, raise_terminated
from galaxy.version import __version__
from galaxy.progress import progress_interval
from galaxy.config import (MAX_THREADS, CalibrateConfig, CheckConfig, CompileConfig, ClassifyConfig, EvaluateConfig,
                           ExportConfig, QuantizeConfig)
from galaxy.cli_common import GalaxyGroup as _Galaxy, command_line as _command_line, run_command as _run
from galaxy.cli_common import only_what_to_act_on as _only_what_to_act_on, figure
from galaxy.cli_common import MODEL as _MODEL, CropFraction, Number, vote_options as _vote_options
from galaxy.cli_framing import framing
from galaxy.cli_train import distill, train
from galaxy.console import filter_native_stderr

log = logging.getLogger("galaxy")


def _not_astropy(record: logging.LogRecord) -> bool:
    return not (record.name == "astropy" or record.name.startswith("astropy."))


@click.group(cls=_Galaxy)
@click.version_option(__version__, prog_name="galaxy")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx, verbose):
    """Classify galaxy cutouts (JPEG, PNG, FITS) as spiral or elliptical."""
    before = set(logging.getLogger().handlers)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in set(logging.getLogger().handlers) - before:  # astropy's logger prints its records itself:
        handler.addFilter(_not_astropy)  # through this handler too, -v showed each FITS header note twice
    ctx.meta["galaxy.verbose"] = verbose
    try:  # a bad GALAXY_PROGRESS_INTERVAL is refused before a run makes its work folders
        progress_interval()
    except GalaxyError as exc:
        raise click.UsageError(str(exc)) from None
    encoding = sys.getfilesystemencoding()
    if encoding.replace("-", "").lower() != "utf8":  # file names are decoded in it: a catalog's paths and ids
        # would differ from a UTF-8 machine's (a rerun there classified the file again as a new one)
        log.warning("the locale's encoding is %s, not UTF-8: file names are read in it, so catalogs name non-ASCII "
                    "files otherwise than under a UTF-8 locale (run with LC_ALL=C.UTF-8 or PYTHONUTF8=1); catalogs are "
                    "written in UTF-8", encoding)
    # astropy's notes on each FITS header it repairs (3-4 lines a file): hidden, or with -v every one (Python's
    # default filter had shown each note once per code line, a number that changed with the threads' timing).
    # By module, so astropy is not imported for a JPEG run; what stops a file from being read still goes to the
    # errors file with its reason.
    warnings.filterwarnings("always" if verbose else "ignore", module=r"astropy\.io\.fits(\.|$)")


cli.add_command(train)
cli.add_command(distill)
cli.add_command(framing)


@cli.command()
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


@cli.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Catalog to write: .csv, .ecsv, .parquet (.pq) or .fits (.fit) (with --ray: a folder).")
@click.option("--model", "model_dir", type=_MODEL,
              help="A shipped model's name (sdss-xception, sdss-xception-compact) or a model folder "
                   "(default: the shipped default; see `galaxy models`).")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False),
              help="A table (CSV, FITS, Parquet, ECSV) with a column of image paths.")
@click.option("--path-column", help="Path column of --catalog (default: the first of png_loc, file_loc, file, path).")
@click.option("--id-column", help="Id column of --catalog (default: id_str, objid or id; else file stems).")
@click.option("--keep-columns", default="", help="Comma-separated --catalog columns copied to the output, e.g. ra,dec,redshift.")
@click.option("--format", "output_format", type=click.Choice(["csv", "ecsv", "parquet", "fits"]),
              help="Output format, whatever OUTPUT's extension (default: from the extension).")
@click.option("--hdu", help="FITS HDU index or EXTNAME (default: the first with image data).")
@click.option("--band-columns", help="--catalog rows of one FITS file per band: band=column pairs, e.g. "
                                     "g=g_path,r=r_path,i=i_path (one galaxy per row).")
@click.option("--bands", help="FITS bands shown as R,G,B: names (i,r,g) or plane numbers (2,1,0); "
                              "default: from the headers, else wavelength order (reddest -> R).")
@click.option("--backend", default="auto", show_default=True,
              help="onnxruntime, onnxruntime-int8, torch, torch-compile, torch-cuda, tensorrt, tensorrt-int8, "
                   "or auto (GPU: TensorRT, else torch-cuda; CPU: the fastest checked backend).")
@click.option("--decoder", default="auto", show_default=True,
              help="Decode pipeline: reference, dali, dali-gpu, nvjpeg, or auto (see the README).")
@click.option("--tta", is_flag=True, help="Average over the 8 D4 rotations/flips of each image (8x the work).")
@click.option("--crop-fraction", type=CropFraction(auto=True),
              help="Centre crop read from each cutout, instead of the model's (for a survey framed otherwise): "
                   "a fraction of the side, or auto: measured from the first 256 inputs so their galaxies "
                   "appear at the size the model was trained on (see galaxy framing).")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--workers", default=0, type=click.IntRange(0, MAX_THREADS), help="Decode threads (0: one per CPU).")
@click.option("--threads", default=0, type=click.IntRange(0, MAX_THREADS),
              help="Inference threads for one batch at a time (0: on a CPU, one batch per core, each on one thread).")
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming an earlier run on OUTPUT.")
@click.option("--commit-every", default=2048, show_default=True, type=click.IntRange(min=1),
              help="Rows per crash-safe commit (a kill loses at most this many finished rows) ...")
@click.option("--commit-seconds", default=2.0, show_default=True, type=Number(min=0),
              help="... or seconds of work per commit, whichever comes first.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bar and no summary line: only what needs acting on (failures, interruption).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run on a Ray cluster (ADDRESS, e.g. auto or ray://head:10001; alone: a local cluster). "
                   "OUTPUT is then a folder of Parquet parts (bookkeeping in OUTPUT/_galaxy/).")
@click.option("--shard-size", default=4096, show_default=True, help="--ray: inputs per shard (one part each).")
@click.option("--actors", type=int, help="--ray: engines to run (default: one per GPU, else per CPU).")
def classify(inputs, quiet, ray_address, shard_size, actors, **options):
    """Classify INPUTS (image files and folders, searched recursively) into a catalog.

    A rerun on the same OUTPUT resumes: images already in it are skipped (crash-safe: rows
    are committed in chunks under OUTPUT.partial/ while the run works).

    Exit code 0 when every image was classified, 3 when some could not be read (they are
    listed with the reason in OUTPUT.errors.csv), 2 for usage errors, 1 for other errors (a
    broken model folder, a file the system refuses), 130 after Ctrl-C and 143 after SIGTERM
    (what was classified until then is written and the files are closed; a rerun goes on).

    Example: galaxy classify examples/sdss -o catalog.csv
    """
    from engine.run import classify as run_classify

    _only_what_to_act_on()
    options["keep_columns"] = tuple(c.strip() for c in options["keep_columns"].split(",") if c.strip())
    config = ClassifyConfig(inputs=tuple(inputs), progress=not quiet, command=_command_line(), **options)
    if ray_address is not None:
        from engine.distributed import classify_on_ray
        from galaxy.catalog.write import errors_path

        try:
            manifest = _run(classify_on_ray, config, None if ray_address == "local" else ray_address, shard_size,
                            actors)
        except KeyboardInterrupt as exc:  # the parts written so far stay; the merge (unique ids, errors) has not run
            click.echo(f"interrupted ({interruption(exc)}): the parts written so far are in {config.output}; rerun "
                       "the same command to finish (it classifies the shards without a part and retries the failed "
                       "inputs, then makes ids unique and merges the errors)", err=True)
            sys.exit(exit_status(exc))
        errors = f"; errors in {errors_path(config.output)}" if manifest["failed"] else ""
        if not quiet:
            now, n = manifest.get("classified_now", manifest["rows"]), manifest.get("retried", 0)
            earlier = f" (and {manifest['rows'] - now} from an earlier run)" if manifest["rows"] > now else ""
            retried = f", {n} failed input{'s' if n > 1 else ''} retried" if n else ""
            resumed = manifest["shards_resumed"]
            click.echo(f"classified {now}{earlier} in {len(manifest['parts'])} parts ({resumed} "
                       f"shard{'s' if resumed != 1 else ''} resumed{retried}), failed {manifest['failed']}, "
                       f"{manifest['actors']} actors, {manifest['seconds']} s -> {config.output}{errors}", err=True)
        elif errors:
            click.echo(f"failed {manifest['failed']} of {manifest['rows'] + manifest['failed']}{errors}", err=True)
        sys.exit(3 if manifest["failed"] else 0)
    summary = _run(run_classify, config)
    errors = f"; errors in {summary.errors}" if summary.failed else ""
    if not quiet:
        resumed = f" (and {summary.resumed} from an earlier run)" if summary.resumed else ""
        crop = f", centre crop {summary.crop_fraction:g}" if summary.crop_fraction is not None else ""
        reference = f" ({summary.by_reference:,} by the reference reader)" if summary.by_reference else ""
        click.echo(f"classified {summary.classified}{resumed}, failed {summary.failed}, "
                   f"{summary.images_per_min:,.0f} images/min ({summary.seconds:.1f} s, {summary.decoder} decode"
                   f"{reference}, "
                   f"{summary.backend} on {summary.device}{crop}) -> {summary.output}{errors}", err=True)
    elif errors:
        # of every input listed: a rerun's line had left out the rows of the run before ("failed 6 of 6")
        click.echo(f"failed {summary.failed} of {summary.classified + summary.resumed + summary.failed}{errors}",
                   err=True)
    if summary.interrupted is not None:
        click.echo(f"interrupted ({interruption(summary.interrupted)}): the {summary.total} images classified "
                   f"so far are in {summary.output}; rerun the same command to go on", err=True)
        sys.exit(exit_status(summary.interrupted))
    if summary.failed:
        sys.exit(3)


@cli.command()
@click.argument("model_dir", type=_MODEL)
@click.option("--calibration", required=True, type=click.Path(exists=True),
              help="Labelled training data (CSV or class folders); validation images are left out.")
@click.option("--label-column", default="label", show_default=True)
@click.option("--path-column", default="file", show_default=True)
@click.option("--images", default=256, show_default=True, type=click.IntRange(min=16), help="Calibration images.")
@click.option("--method", default="ptq-sensitive", show_default=True, type=click.Choice(["ptq-sensitive", "ptq", "qat"]),
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


@cli.command()
@click.argument("model_dir", type=_MODEL)
@click.option("--data", required=True, type=click.Path(exists=True),
              help="The labelled data the model was trained on (its validation split is used).")
@click.option("--label-column", default="label", show_default=True)
@click.option("--path-column", default="file", show_default=True)
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


@cli.command("compile")
@click.argument("model_dir", type=_MODEL)
@click.option("--precision", default="fp16", show_default=True, type=click.Choice(["fp16", "int8"]))
@click.option("--calibration", type=click.Path(exists=True),
              help="INT8: labelled training data (CSV or class folders); validation images are left out.")
@click.option("--label-column", default="label", show_default=True)
@click.option("--path-column", default="file", show_default=True)
@click.option("--images", default=512, show_default=True, help="INT8 calibration images.")
@click.option("--force", is_flag=True, help="Rebuild even when a matching engine is cached.")
def compile_engine(**options):
    """Build the TensorRT engine of MODEL_DIR for this GPU (cached; needs TensorRT and CUDA).

    Example: galaxy compile galaxy/models/sdss-xception --precision int8 --calibration ../shared/data/gz1-sdss/labels.csv
    """
    from engine.tensorrt_build import compile_model

    path = _run(compile_model, CompileConfig(**options))
    click.echo(f"wrote {path}; classify with --backend {'tensorrt' if options['precision'] == 'fp16' else 'tensorrt-int8'}",
               err=True)


@cli.command("check-backends")
@click.argument("model_dir", type=_MODEL)
@click.option("--data", required=True, type=click.Path(exists=True),
              help="The labelled data the model was trained on (its validation split is used).")
@click.option("--backend", "backends", multiple=True, default=("torch", "onnxruntime-int8"), show_default=True,
              help="A backend to check; repeat, or separate with commas, for several.")
@click.option("--label-column", default="label", show_default=True)
@click.option("--path-column", default="file", show_default=True)
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


@cli.command()
@click.argument("model_dir", type=_MODEL)
@click.argument("data", type=click.Path(exists=True))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for report.json, predictions.csv, reliability.png, coverage.png and "
                   "purity_completeness.png.")
@click.option("--split", default="val", show_default=True, type=click.Choice(["val", "all"]),
              help="val: only the model's validation ids (for its own training data); all: every image.")
@click.option("--tta", is_flag=True, help="D4 test-time augmentation.")
@click.option("--crop-fraction", type=CropFraction(auto=False),
              help="Centre crop every scored model reads with, instead of each card's: how a model fares "
                   "when a survey frames its galaxies larger (a smaller crop) or smaller (a larger one).")
@click.option("--ensemble", multiple=True, type=_MODEL,
              help="Another model averaged with MODEL_DIR (repeatable): score the ensemble.")
@click.option("--compare", type=_MODEL,
              help="A second model scored on the same images: paired McNemar test, agreement, and the "
                   "labels both models reject (label_suspects.csv).")
@click.option("--by-column", help="CSV column whose values group the images (e.g. gz1_name): accuracy "
                                  "within each group, i.e. the recall of each finer class.")
@click.option("--backend", default="onnxruntime", show_default=True)
@click.option("--decoder", default="auto", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--path-column", default="file", show_default=True)
@_vote_options(card_rule=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or progress lines.")
def evaluate(**options):
    """Score MODEL_DIR on labelled DATA: accuracy, AUC, ECE, accuracy at coverage, purity and completeness by
    probability cut, plots, per-image predictions.

    Example: galaxy evaluate galaxy/models/sdss-xception ../shared/data/gz1-sdss/labels.csv -o eval/

    Example: galaxy evaluate runs/new-model ../shared/data/gz1-sdss/labels.csv --compare galaxy/models/sdss-xception -o eval/
    """
    from engine.evaluate import evaluate as run_evaluation

    options["progress"] = not options.pop("quiet")
    if not options["progress"]:
        _only_what_to_act_on()
    options["ensemble"] = tuple(options["ensemble"])
    report = _run(run_evaluation, EvaluateConfig(**options))
    coverage, auc = report["accuracy_at_coverage"], report.get("roc_auc")  # None: one class only, or not 2 classes
    click.echo(f"n {report['n']}: accuracy {report['accuracy']:.4f}, balanced {report['balanced_accuracy']:.4f}, "
               f"ROC AUC {figure(auc)}, ECE {report['ece']:.4f}, "
               f"most confident half {coverage['0.5']:.4f} -> {Path(options['out_dir']) / 'report.json'}", err=True)
    if "comparison" in report:
        c = report["comparison"]
        click.echo(f"vs {c['model']['name']}: accuracy {c['accuracy']:.4f}, only this right {c['only_this_right']}, "
                   f"only it right {c['only_other_right']} (McNemar p {c['mcnemar_p']:.3g}); the two agree on "
                   f"{c['agreement']:.4f}, and against the label on {c['agree_against_label']} "
                   f"({c['agree_against_label_fraction']:.2%}) -> {options['out_dir']}/label_suspects.csv", err=True)


@cli.command("montage")
@click.argument("catalog", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="PNG file to write (.png is added to a name without a suffix).")
@click.option("--per-row", default=8, show_default=True, type=click.IntRange(min=1), help="Galaxies per row.")
def montage_command(catalog, out, per_row):
    """A PNG of the most confident spirals, ellipticals and the most uncertain galaxies of CATALOG.

    CATALOG is a catalog file galaxy wrote, or the folder of a `classify --ray` run.

    Example: galaxy montage catalog.csv -o montage.png
    """
    from galaxy.evaluation.montage import montage

    click.echo(f"wrote {_run(montage, catalog, out, per_row)}", err=True)


@cli.command("report")
@click.argument("catalog", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write (.html is added to a name without a suffix).")
@click.option("--per-row", default=8, show_default=True, type=click.IntRange(min=1), help="Galaxies per montage row.")
def report_command(catalog, out, per_row):
    """One self-contained HTML page about CATALOG (a catalog file, or a --ray folder): counts, confidence, montage, model card.

    Example: galaxy report catalog.csv -o report.html
    """
    from galaxy.evaluation.report import report

    click.echo(f"wrote {_run(report, catalog, out, per_row)}", err=True)


@cli.command()
@click.argument("model_dirs", nargs=-1, type=_MODEL)
def models(model_dirs):
    """List models with their cards: the shipped ones, plus any MODEL_DIRS given.

    Example: galaxy models models/mine
    """
    from engine.backends import checks_here, holds_check, int8_checks
    from engine.int8_models import shipped_int8
    from engine.machine import int8_arithmetic
    from galaxy.card import default_model_dir, load_card, shipped_model_dirs, speeds_by_machine

    default = default_model_dir()
    this_cpu = int8_arithmetic()  # the int8 checks that hold here are of its arithmetic
    failed = 0
    for model_dir in map(Path, (*shipped_model_dirs(), *model_dirs)):
        try:  # one broken folder is said, and the others still listed (the first had ended the command)
            card = load_card(model_dir)
        except GalaxyError as exc:
            click.echo(f"Error: {exc}", err=True)
            failed += 1
            continue
        val = card.metrics.get("validation", {})
        spec = card.input_spec
        mark = "  (the default: used without --model)" if model_dir == default else ""
        click.echo(f"{card.name}  {model_dir}{mark}\n  {card.architecture}, {spec.size} px, centre crop {spec.crop_fraction:g}, "
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
        elsewhere = sorted(set(int8_checks(card.backends)) - {this_cpu})
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


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def bench(ctx):
    """Throughput benchmark (the same as python bench.py; pass --help for its options).

    Example: galaxy bench --quick
    """
    from engine.benchmark import main as run_benchmark

    run_benchmark(ctx.args, prog="galaxy bench")


def main():
    """The `galaxy` program. Unless -v is given, native libraries' known chatter on stderr
    (per-file decoder errors already in the errors file, Ray's C++ log lines) is dropped."""
    signal.signal(signal.SIGTERM, raise_terminated)  # also for `python -m galaxy.cli`
    from engine.allocator import tune_allocator

    tune_allocator()  # freed image arrays kept in the process: the reference reader 2.5x faster
    verbose = any(arg in ("-v", "--verbose") for arg in sys.argv[1:2])
    restore = None if verbose else filter_native_stderr()
    try:
        cli(prog_name="galaxy")
    except SystemExit as exc:  # the work is saved or said: a Ctrl-C or SIGTERM while the libraries' exit
        # handlers run (DALI's, Ray's) ends the process at once, with its status
        end_at_once_on_interrupt(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)
        raise
    finally:
        if restore is not None:
            restore()


if __name__ == "__main__":
    main()
