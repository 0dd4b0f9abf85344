"""`galaxy train` and `galaxy distill`: click options -> a TrainConfig -> `galaxy.training.train.train`.

Distillation is training with a teacher's soft targets and a compact student from scratch,
so both commands build the same TrainConfig; they share the options below and differ in
defaults (architecture, temperature, learning rate) and in what the user must name.
"""

from __future__ import annotations

import os

import click

from galaxy.cli_common import (MODEL, CropFraction, Number, command_line, figure, label_columns, only_what_to_act_on,
                               run_command, vote_options)
from galaxy.config import MAX_THREADS, TrainConfig


def _shared_options(command):
    """Options of every command that trains a network."""
    for option in reversed([
        click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Model directory to write."),
        click.option("--work-dir", type=click.Path(), help="Where checkpoints go (default OUT/checkpoints)."),
        click.option("--name", help="Model name for the card (default: the directory name)."),
        label_columns,
        click.option("--size", default=96, show_default=True, type=click.IntRange(min=8),
                     help="Network input side, pixels."),
        click.option("--crop", "crop_fraction", default=0.5, show_default=True, type=CropFraction(auto=False),
                     help="Centre-crop fraction of each side."),
        click.option("--augment", default="none", show_default=True,
                     help="Training augmentations: all, none, or a comma list of zoom, rotate, flux, noise, blur, "
                          "curve (D4 flips/rotations and a small shift are always on; see the README). Off by "
                          "default: the full model was trained without them; the compact model was distilled with "
                          "all (its card's command), their gain measured in one paired run (README)."),
        click.option("--zoom-range", nargs=2, type=CropFraction(auto=False), default=(0.35, 0.65), show_default=True,
                     help="zoom: the crop fraction is drawn per image from LOW..HIGH."),
        click.option("--apparent-size", nargs=2, type=float, default=None,
                     help="zoom by each galaxy's size instead: its Petrosian radius (measured once per image, as "
                          "galaxy framing does) spans LOW..HIGH of the crop, drawn log-uniformly (e.g. 0.2 0.45), so "
                          "how large a class is framed in the training survey is no cue (README, Framing)."),
        click.option("--scale-consistency", default=0.0, show_default=True, type=Number(min=0),
                     help="Weight of a loss that asks the network to call each galaxy shown 1.1-1.5x larger (a "
                          "second view, its own augmentation) what it calls the first view: KL divergence, the first "
                          "view held fixed; each step then costs two views (0: off)."),
        click.option("--unlabeled", multiple=True, type=click.Path(exists=True, file_okay=False),
                     help="Folder of unlabelled cutouts the teacher labels for the student; repeatable."),
        click.option("--unlabeled-framing", default="off", show_default=True, type=click.Choice(["off", "auto"]),
                     help="auto: each teacher reads the --unlabeled cutouts at the centre crop that shows their "
                          "galaxies at its training scale (measured as galaxy framing does, on an even sample of "
                          "256), the labelled ones at its own crop; off: every image at the teacher's crop."),
        click.option("--teacher-targets", type=click.Path(exists=True, dir_okay=False),
                     help="Soft targets from a file instead of teachers: the soft_targets.npz of an earlier run's "
                          "checkpoints folder, made from the same images (e.g. a teacher trained and run on a GPU "
                          "machine, its weights left there); the card records its teachers and sha256."),
        click.option("--teacher-views", default="8", show_default=True, type=click.Choice(["1", "8"]),
                     help="Teacher test-time views: 8 averages the D4 rotations and flips (with --teacher-targets: "
                          "the file's, which this must name)."),
        click.option("--soft-weight", default=1.0, show_default=True, type=Number(min=0),
                     help="Weight of the soft-target loss."),
        click.option("--fits-views", default=0, show_default=True, type=click.IntRange(min=0),
                     help="FITS robustness: per labelled training image, N copies of its flux (the JPEG inverted "
                          "with random softening, unit and pedestal) made into a composite exactly as a FITS input "
                          "is, plus its r band alone; --fits-probability of the labelled samples are drawn from "
                          "them, with the image's label and soft targets."),
        click.option("--fits-probability", default=0.3, show_default=True, type=Number(0, 1)),
        click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1)),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2),
                     help="Images per step (at least 2: batch normalisation needs two to normalise by)."),
        click.option("--weight-decay", default=0.05, show_default=True, type=Number(min=0)),
        click.option("--patience", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Stop after this many epochs without a better validation loss (0: run all epochs)."),
        click.option("--calibrate/--no-calibrate", default=True, show_default=True,
                     help="Fit the temperature on the validation split and store it in the card."),
        click.option("--val-fraction", default=0.2, show_default=True),
        click.option("--seed", default=0, show_default=True,
                     help="Seeds the split, initial weights, order and augmentation."),
        click.option("--train-seed", type=int,
                     help="Seeds the initial weights, order and augmentation (FITS views included) instead of "
                          "--seed, which then fixes only the split: reruns of one recipe on one split, to "
                          "measure how far its figures move by chance (default: --seed)."),
        click.option("--workers", default=0, type=click.IntRange(0, MAX_THREADS),
                     help="Image reading threads (0: one per CPU)."),
        click.option("--limit", type=click.IntRange(min=1), help="Use at most this many images per split (smoke tests)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or progress lines."),
        click.option("--resume", type=click.Path(exists=True, dir_okay=False),
                     help="Continue from a checkpoint (WORK_DIR/last.pt) of the same command (other training "
                          "options are refused); the run ends as it would have without the stop, the best epoch "
                          "before it included."),
    ]):
        command = option(command)
    return command


def _apparent_size(values) -> tuple[float, float] | None:
    """--apparent-size LOW HIGH as floats (TrainConfig checks them), None when not given."""
    return (float(values[0]), float(values[1])) if values else None


def _train_and_report(options: dict) -> None:
    from galaxy.training.augment import parse_augmentations
    from galaxy.training.train import train as run_training

    options["augment"] = run_command(parse_augmentations, options["augment"])
    options["teacher_views"] = int(options["teacher_views"])
    for key in ("unlabeled", "teachers", "zoom_range"):
        options[key] = tuple(options.get(key, ()))
    options["apparent_size"] = _apparent_size(options.get("apparent_size"))
    if options.get("images_dir"):  # recorded absolute: calibrate, check-backends and quantize read a vote
        # table's images by the card's rule, from any folder (relative, they worked only where it trained)
        options["images_dir"] = os.path.abspath(options["images_dir"])
    if "classes" in options:
        options["classes"] = tuple(c.strip() for c in options["classes"].split(",") if c.strip())
    options["progress"] = not options.pop("quiet")
    if not options["progress"]:
        only_what_to_act_on()
    config = run_command(lambda: TrainConfig(command=command_line(), **options))  # its checks: usage errors
    card = run_command(run_training, config)
    val = card.metrics["validation"]
    click.echo(f"wrote {config.out_dir}: validation accuracy {val['accuracy']:.4f}, "
               f"balanced {figure(val['balanced_accuracy'])}, ROC AUC {figure(val.get('roc_auc'))}",
               err=True)


@click.command()
@click.argument("data", type=click.Path(exists=True))
@_shared_options
@click.option("--classes", default="elliptical,spiral", show_default=True, help="Class names, output order.")
@click.option("--arch", "architecture", default="legacy_xception", show_default=True, help="timm model name.")
@click.option("--init", default="scratch", show_default=True,
              help="scratch, imagenet, default (the shipped full Xception, sdss-xception), or a weights file/model dir.")
@click.option("--drop-rate", default=0.0, show_default=True, type=Number(0, 1, max_open=True),
              help="Dropout before the classifier (student noise).")
@click.option("--teacher", "teachers", multiple=True, type=MODEL,
              help="Model folder whose soft targets the student learns (repeat for an ensemble; "
                   "default with --unlabeled and no --teacher-targets: the --init model).")
@click.option("--soft-temperature", default=1.0, show_default=True, type=Number(min=0, min_open=True),
              help="Temperature of the soft-target loss.")
@click.option("--lr", default=1e-3, show_default=True, type=Number(min=0, min_open=True))
@click.option("--freeze-epochs", default=0, show_default=True, type=click.IntRange(min=0),
              help="Train the head alone this many epochs, then also the deepest third as long, then all.")
@click.option("--layer-decay", default=1.0, show_default=True, type=Number(0, 1, min_open=True),
              help="Learning rate factor per depth group below the head (discriminative rates; 1: one rate).")
@vote_options
def train(**options):
    """Train a classifier on DATA: class folders, a CSV with path and label columns, or a Galaxy Zoo vote table.

    With --unlabeled, self-training: a teacher's soft targets on the unlabelled (and training)
    images join the labels (Noisy Student).

    Example: galaxy train ../shared/data/gz1-sdss/labels.csv -o models/mine

    Example: galaxy train ../shared/data/gz1-sdss/labels.csv -o models/ns --init default --unlabeled ../shared/data/unlabeled-sdss/images
    """
    _train_and_report(options)


@click.command()
@click.argument("teachers", nargs=-1, type=MODEL)
@click.option("--data", required=True, type=click.Path(exists=True),
              help="The labelled data the teacher was trained on (CSV or class folders; the same split is used).")
@_shared_options
@click.option("--arch", "architecture", default="xception_compact_w50_d2", show_default=True,
              help="Student: a timm model name, e.g. xception_compact_w{25,35,50,75}_d{2,4,8}.")
@click.option("--drop-rate", default=0.1, show_default=True, type=Number(0, 1, max_open=True),
              help="Dropout before the student's classifier.")
@click.option("--soft-temperature", default=2.0, show_default=True, type=Number(min=0, min_open=True),
              help="Distillation temperature (Hinton et al. 2015).")
@click.option("--lr", default=2e-3, show_default=True, type=Number(min=0, min_open=True))
def distill(**options):
    """Distil TEACHERS (model folders, averaged) into a compact student trained from scratch.

    The student learns the teachers' temperature-softened outputs (D4-averaged) on the labelled
    training split and any --unlabeled cutouts, plus the labels. --teacher-targets FILE instead
    of TEACHERS: the outputs an earlier run stored (its checkpoints/soft_targets.npz).

    Example: galaxy distill galaxy/models/sdss-xception --data ../shared/data/gz1-sdss/labels.csv --unlabeled ../shared/data/unlabeled-sdss/images -o runs/compact
    """
    if not options["teachers"] and not options["teacher_targets"]:
        raise click.UsageError("name the TEACHERS (model folders or names), or give --teacher-targets FILE")
    _train_and_report(options)
