"""`galaxy framing`: how large the galaxies of a set of cutouts appear, against a model's training images."""

from __future__ import annotations

import json
from itertools import islice

import click

from galaxy.cli_common import MODEL, run_command
from galaxy.errors import UsageError
from galaxy.io.framing import FEW, REGION, SAMPLE, card_framing, framing_report, nothing_measured


def measure(inputs, model_dir, sample: int, hdu) -> dict:
    """The framing report of INPUTS against the model (`galaxy.io.framing.framing_report`).

    Raises:
        UsageError: the card records no training framing, INPUTS name no image, or no cutout was
            measured (why: none could be read, or none shows a galaxy).
    """
    from engine.artifacts import resolve_model
    from engine.listing import iter_inputs, require_inputs
    from galaxy.io.fits import hdu_value

    model_dir, card = resolve_model(model_dir)
    card_framing(card)  # before listing or reading anything
    require_inputs(inputs)
    items = iter_inputs(inputs)
    paths = [item.path for item in (islice(items, sample) if sample else items)]
    report = framing_report(card, paths, card.input_spec, hdu=hdu_value(hdu))
    if not report["measured"]["measured"]:
        raise UsageError(nothing_measured(len(paths), report["unreadable"]))
    return report


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_dir", type=MODEL, help="Model to compare with (default: the one classify uses here).")
@click.option("--sample", default=SAMPLE, show_default=True, type=click.IntRange(0, 10**9),
              help="Cutouts measured: the first ones in listing order (0: all).")
@click.option("--hdu", help="FITS HDU index or EXTNAME (default: the first with image data).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def framing(inputs, model_dir, sample, hdu, as_json):
    """How large the galaxies of INPUTS appear (Petrosian radius / cutout side) against the model's
    training cutouts, and the centre crop that shows them at the training scale.

    Every survey frames its cutouts its own way; a network is most accurate at the framing it was
    trained on. Pass the crop this prints to `galaxy classify --crop-fraction` (or use
    `--crop-fraction auto`, which measures the same way). The median also depends on the mix of
    galaxies (in gz1-sdss, face-on spirals 0.120-0.124, edge-on disks 0.137, ellipticals 0.154):
    compare sets of a similar mix.

    Example: galaxy framing ../shared/data/unlabeled-sdss/images
    """
    report = run_command(measure, inputs, model_dir, sample, hdu)
    if as_json:
        click.echo(json.dumps(report))
        return
    train, mine = report["training"], report["measured"]
    click.echo(f"{report['model']} was trained on cutouts whose galaxies have a median Petrosian radius of "
               f"{train['median']:.3f} of the side (quartiles {train['p25']:.3f}-{train['p75']:.3f}, "
               f"{train['measured']} images), read through a centre crop of {report['model_crop_fraction']:g}.")
    more = " or more" if report["lower_bound"] else ""
    click.echo(f"These cutouts ({mine['measured']} measured of {mine['images']}): median {mine['median']:.3f}{more} "
               f"(quartiles {mine['p25']:.3f}-{mine['p75']:.3f}): the galaxies appear {report['scale']:.2f}x{more} "
               "the training size.")
    if report["lower_bound"]:
        click.echo(f"The median is the limit of the search ({REGION:g} of the side): most galaxies fill more of their "
                   "cutouts than it can measure.", err=True)
    if report["at_crop_1"] is None:
        click.echo(f"Centre crop that matches the training scale: --crop-fraction {report['crop_fraction']:g}")
    else:
        click.echo(f"No centre crop matches the training scale: even the whole cutout (--crop-fraction 1) shows the "
                   f"galaxies {report['at_crop_1']:.2f}x{more} the training size; the model sees them larger than it "
                   "learned them.")
    if mine["measured"] < FEW:
        galaxies = "galaxy" if mine["measured"] == 1 else "galaxies"
        click.echo(f"Only {mine['measured']} {galaxies} measured: a median of so few is uncertain; measure at least "
                   f"{FEW} before setting a survey's crop by it.", err=True)
    if report["unreadable"]:
        bad = report["unreadable"]
        click.echo(f"{len(bad)} cutout{'s' if len(bad) > 1 else ''} could not be read, e.g. {bad[0]['path']}: "
                   f"{bad[0]['reason']}", err=True)
    if report["no_galaxy"]:
        empty = report["no_galaxy"]
        click.echo(f"{len(empty)} cutout{'s' if len(empty) > 1 else ''} show{'s' if len(empty) == 1 else ''} no galaxy "
                   f"above the noise near the centre (not measured), e.g. {empty[0]}", err=True)
