"""The commands that score a model and show a catalog: `galaxy evaluate` (labelled data -> report,
plots, predictions), `montage` (a PNG of a catalog's galaxies) and `report` (one HTML page)."""

from __future__ import annotations

from pathlib import Path

import click

from galaxy.config import MAX_PER_ROW, EvaluateConfig
from galaxy.cli_common import run_command as _run
from galaxy.cli_common import only_what_to_act_on as _only_what_to_act_on, figure
from galaxy.cli_common import MODEL as _MODEL, CropFraction, label_columns, vote_options as _vote_options


@click.command()
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
@label_columns
@_vote_options(card_rule=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or progress lines.")
def evaluate(**options):
    """Score MODEL_DIR on labelled DATA: accuracy, AUC, ECE, accuracy at coverage, purity and completeness by
    probability cut, plots, per-image predictions.

    Example: galaxy evaluate galaxy/models/sdss-xception ../shared/data/gz1-sdss/labels.csv -o eval/

    Example: galaxy evaluate runs/new-model ../shared/data/gz1-sdss/labels.csv --compare galaxy/models/sdss-xception
    -o eval/
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


@click.command("montage")
@click.argument("catalog", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="PNG file to write (.png is added to a name without a suffix).")
@click.option("--per-row", default=8, show_default=True, type=click.IntRange(1, MAX_PER_ROW), help="Galaxies per row.")
def montage_command(catalog, out, per_row):
    """A PNG of the most confident spirals, ellipticals and the most uncertain galaxies of CATALOG.

    CATALOG is a catalog file galaxy wrote, or the folder of a `classify --ray` run.

    Example: galaxy montage catalog.csv -o montage.png
    """
    from galaxy.evaluation.montage import montage

    click.echo(f"wrote {_run(montage, catalog, out, per_row)}", err=True)


@click.command("report")
@click.argument("catalog", type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="HTML file to write (.html is added to a name without a suffix).")
@click.option("--per-row", default=8, show_default=True, type=click.IntRange(1, MAX_PER_ROW),
              help="Galaxies per montage row.")
def report_command(catalog, out, per_row):
    """One self-contained HTML page about CATALOG (a catalog file, or a --ray folder): counts, confidence, montage,
    model card.

    Example: galaxy report catalog.csv -o report.html
    """
    from galaxy.evaluation.report import report

    click.echo(f"wrote {_run(report, catalog, out, per_row)}", err=True)
