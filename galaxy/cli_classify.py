"""`galaxy classify`: click options -> a ClassifyConfig -> `engine.run.classify` (or, with --ray,
`engine.distributed.classify_on_ray`), and the line that sums up the run."""

from __future__ import annotations

import sys

import click

from galaxy.errors import exit_status, interruption
from galaxy.config import MAX_THREADS, ClassifyConfig
from galaxy.cli_common import command_line as _command_line, run_command as _run
from galaxy.cli_common import only_what_to_act_on as _only_what_to_act_on
from galaxy.cli_common import MODEL as _MODEL, CropFraction, Number


@click.command()
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
@click.option("--keep-columns", default="",
              help="Comma-separated --catalog columns copied to the output, e.g. ra,dec,redshift.")
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
