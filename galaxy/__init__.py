"""galaxy: batch classification of galaxy morphology (spiral / elliptical).

    import galaxy
    model = galaxy.load_model()
    table = model.classify(["cutouts/"])
"""

from galaxy.version import __version__

__all__ = ["__version__", "classify_on_ray", "load_model"]


def load_model(model_dir=None, **options):
    """Load a model directory (default: the shipped model); see `galaxy.api.Model`."""
    from galaxy.api import load_model as _load

    return _load(model_dir, **options)


def classify_on_ray(inputs, out_dir, address=None, model_dir=None, shard_size: int = 4096, actors=None, **options):
    """Classify `inputs` (files, folders) over a Ray cluster into OUT_DIR's Parquet parts.

    The Python form of `galaxy classify INPUTS -o OUT_DIR --ray [ADDRESS]`: `address` None
    starts (or uses the already initialised) local cluster; `options` are ClassifyConfig fields
    (backend, decoder, catalog, keep_columns, ...). Returns the manifest (parts, rows, failed,
    metadata); read the catalog with `pyarrow.parquet.read_table(out_dir)`.
    """
    from engine.distributed import classify_on_ray as run
    from galaxy.config import ClassifyConfig

    import os

    # one path (a Path or bytes too: no list of paths), and one kept column given as a string; names as Python
    # holds them (`os.fsdecode`: bytes from os.listdir(b".") had been read as a sequence of byte values)
    if isinstance(inputs, (str, bytes, os.PathLike)):
        inputs = (inputs,)
    inputs = tuple(os.fsdecode(os.fspath(i)) for i in inputs)
    if isinstance(options.get("keep_columns"), str):
        options["keep_columns"] = (options["keep_columns"],)
    return run(ClassifyConfig(inputs, str(out_dir), model_dir, **options), address, shard_size, actors)
