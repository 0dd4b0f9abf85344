"""The Python API: load a model once, classify paths or arrays, get astropy Tables.

    import galaxy
    model = galaxy.load_model()                      # the shipped default model
    table = model.classify(["a.jpeg", "b.fits"])    # astropy Table: id, path, p_*, label
    for rows in model.classify_iter(paths):          # streams, one Table per batch
        ...
"""

from __future__ import annotations

import itertools
import os
import re
import reprlib
import warnings
from typing import NamedTuple

import numpy as np

from galaxy.catalog.formats import FITS_COLUMNS, SKY_COLUMNS, catalog_descriptions, probability_column
from galaxy.catalog.in_memory import (frame_table, id_cells, missing_cell, not_paths, path_text, stored_cells,
                                      table_columns)
from galaxy.catalog.text import safe_text
from galaxy.config import MAX_THREADS, MIN_CROP
from galaxy.errors import UsageError


class InputFailure(tuple):
    """An input `classify` could not read: unpacks as the (path, stage, reason) 3-tuple; `.id` is the id
    its row would have had (the table's id cell, the FITS OBJID or the file stem; "" where none), as in
    `galaxy classify`'s errors file, so that rows naming no file can be told apart."""

    def __new__(cls, path: str, stage: str, reason: str, ident: str = ""):
        failure = super().__new__(cls, (path, stage, reason))
        failure.id = ident
        return failure

    path = property(lambda self: self[0])
    stage = property(lambda self: self[1])
    reason = property(lambda self: self[2])

    def __repr__(self):
        return f"InputFailure(id={self.id!r}, path={self.path!r}, stage={self.stage!r}, reason={self.reason!r})"

    def __reduce__(self):  # pickles (e.g. across processes) with its id
        return (InputFailure, (self.path, self.stage, self.reason, self.id))


class ArrayFailure(NamedTuple):
    """An image `classify_arrays(images, errors=[])` refused: its index in `images` and the reason; its
    row of probabilities is NaN."""

    index: int
    reason: str


def _whole(value) -> bool:
    """An int that is not a bool (True would pass isinstance(value, int) as 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_options(crop_fraction, threads, workers, tta, batch_size=32) -> None:
    """Refuse options the runner would take wrongly (a raw ValueError, TypeError or RuntimeError, TTA turned
    on by the string "no", crop_fraction=True read as a crop of 1)."""
    if isinstance(crop_fraction, (bool, np.bool_)) or not (crop_fraction is None or isinstance(crop_fraction, str)
                                                             or isinstance(crop_fraction, (int, float, np.number))):
        raise UsageError(f"crop_fraction={crop_fraction!r}: give a number in (0, 1]")
    if isinstance(crop_fraction, str):
        if crop_fraction == "auto":
            raise UsageError("crop_fraction='auto' measures the framing of a run's cutouts, which a loaded model "
                             "has not seen: measure it with `galaxy framing DIR` and pass the crop it prints")
        raise UsageError(f"crop_fraction {crop_fraction!r}: give a number in (0, 1]")
    if crop_fraction is not None and not MIN_CROP <= crop_fraction <= 1:  # as the command line refuses it
        raise UsageError(f"crop_fraction {crop_fraction}: give a number in [{MIN_CROP}, 1] (below {MIN_CROP} a "
                         "423 px cutout leaves under 22 px to read)")
    for name, value in (("threads", threads), ("workers", workers)):
        if not _whole(value) or not 0 <= value <= MAX_THREADS:
            raise UsageError(f"{name}={value!r}: a whole number up to {MAX_THREADS}, 0 for one per core")
    if not _whole(batch_size) or batch_size < 1:
        raise UsageError(f"batch_size={batch_size!r}: a whole number >= 1")
    if not isinstance(tta, bool):
        raise UsageError(f"tta={tta!r}: True or False")


class Model:
    """A loaded model: its card and a runner (backend session, decode pipeline; engine/runner.py).

    Attributes:
        card: the ModelCard (classes, InputSpec, metrics).
        backend: the backend really in use, e.g. "onnxruntime fp32 on CPUExecutionProvider".
    """

    def __init__(self, model_dir=None, backend: str = "auto", decoder: str = "auto", batch_size: int = 32,
                 threads: int = 0, workers: int = 0, crop_fraction: float | None = None, tta: bool = False,
                 hdu=None, bands: str | None = None):
        """Options as `galaxy classify` names them: `crop_fraction` (a number; see `galaxy framing`), `tta`
        (the 8 rotations/flips averaged), `hdu` (a FITS HDU's index or EXTNAME) and `bands` ("i,r,g" or
        "2,1,0", or a list of them: the FITS bands shown as R, G, B)."""
        from engine.artifacts import resolve_model
        from engine.machine import installed_versions
        from engine.runner import Runner
        from galaxy.config import ClassifyConfig
        from galaxy.io.fits import hdu_value
        from galaxy.io.bands import parse_bands

        _check_options(crop_fraction, threads, workers, tta, batch_size)
        if isinstance(hdu, (bool, np.bool_)) or not (hdu is None or isinstance(hdu, str) or _whole(hdu)):
            raise UsageError(f"hdu={hdu!r}: an HDU's index (a whole number) or its EXTNAME")
        threads, workers, batch_size = int(threads), int(workers), int(batch_size)  # (numpy ints: not JSON)
        crop_fraction = None if crop_fraction is None else float(crop_fraction)
        if bands is not None and not isinstance(bands, str):  # a list, as a user would write it
            if not isinstance(bands, (list, tuple)) or not all(isinstance(b, (str, int)) and not isinstance(b, bool)
                                                               for b in bands):
                raise UsageError(f"bands={bands!r}: give \"i,r,g\" or \"2,1,0\" (or a list of band names or indices)")
            bands = ",".join(map(str, bands))
        try:
            planes, extension = parse_bands(bands), hdu_value(None if hdu is None else str(hdu))
        except UsageError as exc:  # worded for `galaxy classify --bands/--hdu`: named as this call names them
            said = re.sub(r"--(bands|hdu) (?=')", r"\1=", str(exc))
            raise UsageError(re.sub(r"--(bands|hdu)\b", r"\1", said)) from None
        self.model_dir, self.card = resolve_model(model_dir)
        spec = self.card.input_spec.with_crop(crop_fraction)  # the centre crop read instead of the card's
        self.spec = spec.replace(fits_bands=planes) if planes else spec
        self._runner = Runner(self.model_dir, self.card, backend, decoder, batch_size, threads, workers, tta=tta,
                              spec=self.spec, hdu=extension)
        self.backend = f"{self._runner.backend} on {self._runner.session.device}"
        self.batch_size = self._runner.batch_size  # as the runner holds it (at most MAX_BATCH)
        # the options as `galaxy classify`'s config, which a catalog's metadata records (`_metadata`)
        self._config = ClassifyConfig((), "", None if model_dir is None else os.fsdecode(model_dir),
                                      hdu=None if hdu is None else str(hdu), bands=bands, backend=backend,
                                      decoder=decoder, tta=tta, crop_fraction=crop_fraction, batch_size=batch_size,
                                      workers=workers, threads=threads, progress=False)
        self._software = installed_versions()

    def __repr__(self):
        weights = self.card.weights_sha256[:12] or "unknown"
        return (f"<galaxy Model {self.card.name!r}: weights {weights}, {self.backend}, input {self.spec.size} px "
                f"(crop {self.spec.crop_fraction:g}), classes {list(self.card.classes)}>")

    def _metadata(self) -> dict:
        """What a catalog `galaxy classify` writes records of its run (`catalog_metadata`: the run fingerprint with
        the int8 model and arithmetic where int8, InputSpec, temperature, version, backend, device, decoder,
        software, config, date), but "complete" and "command", which a command's run alone has."""
        from galaxy.catalog.metadata import catalog_metadata

        metadata = catalog_metadata(self.card, self._runner.session, self._config, self.spec,
                                    decoder=self._runner.pipeline.name, software=self._software)
        return {k: v for k, v in metadata.items() if k not in ("complete", "command")}

    def _table(self, ids, paths, probabilities, columns=()):
        from astropy.table import Table

        # ids and paths as the catalogs write them: a file name that is not UTF-8 with its bytes as \\xNN (as
        # Python holds it, no table format could write it; `galaxy.catalog.text.existing_file` finds the file)
        table = Table({"id": np.array([safe_text(i) for i in ids], dtype=str),
                       "path": np.array([safe_text(p) for p in paths], dtype=str)})
        for k, name in enumerate(self.card.classes):
            table[probability_column(name)] = probabilities[:, k].astype(np.float32)
        table["label"] = np.array([self.card.classes[k] for k in probabilities.argmax(axis=1)], dtype=str)
        for name in FITS_COLUMNS:  # the sky position from FITS headers, where they give one; the masked share
            if any(name in c for c in columns):
                table[name] = [float(c.get(name, "nan")) for c in columns]
                if name in SKY_COLUMNS:
                    table[name].unit = "deg"
        for name, text in catalog_descriptions(self.card.classes).items():  # as the catalogs describe them
            if name in table.colnames:
                table[name].description = text
        table.meta.update(self._metadata())  # as a catalog of the same run records it
        table.meta.update({"crop_fraction": self.spec.crop_fraction, "tta": self._runner.tta,
                           "fits_bands": list(self.spec.fits_bands)})  # how it was read, in a notebook's terms
        return table

    def classify_arrays(self, images, errors: list | None = None) -> np.ndarray:
        """Class probabilities for RGB images already read.

        Args:
            images: an array (N, H, W, 3), one image (H, W, 3), or a sequence (or iterable) of (H, W, 3)
                arrays (sizes may differ); anything numpy reads as an array counts as one (a CPU torch
                tensor, a PIL image, nested lists). Floats in [0, 1], or uint8 in [0, 255], which are
                scaled by 1/255.
            errors: if given, an image refused as below gets a row of NaN and one `ArrayFailure`
                (index, reason) appended here, and the others are classified (a generator's one bad
                image had thrown away every result before it); if not, the first such image raises.

        Returns:
            float32 (N, K) probabilities in the card's class order; (1, K) for one image.

        Raises:
            UsageError: an image of another shape or dtype, floats outside [0, 1] (e.g. 0-255), NaN
                or infinite values, or blank (one value in every band across the crop), as the readers refuse it;
                `images` that are no images at all (a string, a 2-D array), with `errors` or not.
        """
        from galaxy.io.arrays import crop_resize_checked, image_batch, rgb_unit, streamed
        from galaxy.io.images import normalise

        if errors is not None and not callable(getattr(errors, "append", None)):
            raise UsageError(f"errors={errors!r}: give a list (errors=[]) to collect the failures")

        def tensor(image, index: int) -> np.ndarray | None:
            try:
                return normalise(crop_resize_checked(rgb_unit(image, index), self.spec, index), self.spec)
            except UsageError as exc:
                if errors is None:
                    raise
                errors.append(ArrayFailure(index, str(exc)))
                return None

        def probabilities(batch, first: int) -> np.ndarray:  # ARRAY_CHUNK images at a time: their tensors alone
            tensors = [tensor(image, i) for i, image in enumerate(batch, first)]
            read = [i for i, t in enumerate(tensors) if t is not None]
            out = np.full((len(tensors), len(self.card.classes)), np.nan, np.float32)
            if read:
                out[read] = self._runner.infer_all(np.stack([tensors[i] for i in read]))
            return out

        if streamed(images):  # an iterator (a generator of images read one by one): read as it goes, a chunk held
            source, parts, first = iter(images), [], 0
            while chunk := list(itertools.islice(source, ARRAY_CHUNK)):
                parts.append(probabilities(image_batch(chunk), first))
                first += len(chunk)
        else:
            images = image_batch(images)
            parts = [probabilities(images[i:i + ARRAY_CHUNK], i) for i in range(0, len(images), ARRAY_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.card.classes)), np.float32)

    def classify_iter(self, inputs, errors: list | None = None, progress: bool = False):
        """Yield one astropy Table per batch for image files / folders / an astropy Table (`_classify_iter`)."""
        yield from self._classify_iter(inputs, errors, progress)

    def _classify_iter(self, inputs, errors: list | None = None, progress: bool = False):
        """Yield one astropy Table per batch for image files / folders / an astropy Table.

        Args:
            inputs: paths (files or folders; a list is checked before any work, an iterator is read as
                the run goes, a missing path then being that row's failure), or a Table (astropy, or a
                pandas DataFrame) with a path
                column and optionally an id column (the first of `galaxy.catalog.formats.PATH_COLUMNS`
                / `ID_COLUMNS` it has, in any case, as `galaxy classify --catalog` reads them).
            errors: if given, one `InputFailure` per input that could not be read is appended: a
                (path, stage, reason) tuple with the row's id as `.id`; if not, a warning says how many
                inputs are left out of the results.
            progress: show progress (a tqdm.auto widget in Jupyter, a bar on a terminal,
                plain lines in a log).

        Ids are unique across the call, by the catalog's rule (`galaxy.catalog.write.UniqueIds`): a
        file's stem (or the table's id), and `stem#2`, `stem#3`, ... for a repeat, in listing order,
        as `galaxy classify` writes them.
        """
        from galaxy.progress import progress as reporter

        if errors is not None and not callable(getattr(errors, "append", None)):  # found at the first failure, it
            raise UsageError(f"errors={errors!r}: give a list (errors=[]) to collect the failures")  # lost the run

        from engine.listing import Item, iter_inputs, require_inputs
        from galaxy.catalog.read import cell_path
        from galaxy.catalog.write import UniqueIds

        refusal = not_paths(inputs)  # (first: a BinTableHDU has `columns`, as a DataFrame has)
        if refusal is not None:
            raise refusal
        if hasattr(inputs, "columns") and not hasattr(inputs, "colnames"):  # a pandas DataFrame (iterating one
            inputs = frame_table(inputs)  # gave its column names as paths)
        if hasattr(inputs, "colnames") and hasattr(inputs, "table") and hasattr(inputs, "index"):  # an astropy Row
            inputs = inputs.table[inputs.index:inputs.index + 1]  # (its cells had been zipped as columns: TypeError)
        if hasattr(inputs, "colnames"):
            column, id_column = table_columns(inputs.colnames, "table")
            ids = id_cells(inputs[id_column], id_column) if id_column else [None] * len(inputs)
            # each path read as `galaxy classify --catalog` reads it: spaces around it dropped, a bytes cell as
            # the file name it holds (not "b'x.jpeg'"), the \xNN escapes of a catalog galaxy wrote read back
            items = (Item(cell_path(p), i) for p, i in zip(stored_cells(inputs[column]), ids))
        elif isinstance(inputs, (str, bytes, os.PathLike, list, tuple)):
            names = [path_text(p) for p in ([inputs] if isinstance(inputs, (str, bytes, os.PathLike)) else inputs)]
            if names:  # before any work, as `galaxy classify` checks them: a missing path (found on the way, it
                require_inputs(names)  # threw away every row before it), or folders of no image (an empty Table)
            items = iter_inputs(names)
        else:  # an iterator (a generator, a file's lines): read as it goes, as a source may be long or slow;
            # a missing path is then that row's failure ("no such file"), not a refusal of the whole call
            try:
                source = iter(inputs)
            except TypeError:  # (None, a number: a raw TypeError)
                raise UsageError(f"inputs {reprlib.repr(inputs)} of type {type(inputs).__name__}: expected a path, "
                                 "a list or an iterator of paths, or a Table with a path column") from None

            def listed(value):  # (a value that is no path at all fails as its row too: str() of it names it)
                if missing_cell(value):  # a pandas Series' gap (None, NaN, NA, NaT): as a table's missing path
                    return [Item("")]  # reads, an empty path (it had been the file 'nan', '<NA>' or 'NaT')
                refusal = not_paths(value, "an input")
                if refusal is not None:  # an image among paths: a usage mistake, not a file that failed
                    raise refusal
                try:
                    name = path_text(value)
                except UsageError:
                    return [Item(str(value))]
                if not os.path.lexists(name):
                    return [Item(name)]
                found = iter_inputs([name])
                first = next(found, None)  # a folder of no image: its row's failure ("is a folder"), not nothing
                return [Item(name)] if first is None else itertools.chain([first], found)

            items = (item for value in source for item in listed(value))
        failed = [0]

        def on_error(failure):
            failed[0] += 1
            bar.update(1)
            bar.set_postfix_str(f"{failed[0]} failed")
            if errors is not None:
                errors.append(InputFailure(safe_text(failure.path), failure.stage, failure.reason,
                                           safe_text(failure.id or "")))

        total = len(inputs) if hasattr(inputs, "colnames") else None
        bar = reporter("classifying", "img", total=total, enabled=progress)
        seen = UniqueIds()  # on the ids as written, as the catalogs' (two names may escape to one)
        for result in self._runner.run(items, on_error, lambda ident: seen.take(safe_text(str(ident)))):
            yield self._table(result.ids, result.paths, result.probabilities, result.columns)
            bar.update(len(result.ids))
        bar.close()
        if failed[0] and errors is None:  # rows missing from a notebook's table, unsaid
            warnings.warn(f"{failed[0]} input(s) could not be read and are not in the results; pass errors=[] to "
                          "get each one's path and reason", stacklevel=3)  # (the caller of classify(_iter))

    def classify(self, inputs, errors: list | None = None, progress: bool = False):
        """All results as one astropy Table (see `classify_iter`)."""
        from astropy.table import vstack

        tables = list(self._classify_iter(inputs, errors, progress))
        if not tables:
            return self._table([], [], np.zeros((0, len(self.card.classes)), np.float32))
        table = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
        for name in FITS_COLUMNS:  # a batch without a FITS position had no column: masked there, NaN in the
            if name in table.colnames and getattr(table[name], "mask", None) is not None:  # others; NaN for all
                unit, description = table[name].unit, table[name].description
                table[name] = table[name].filled(np.nan)
                table[name].unit, table[name].description = unit, description
        # last and in one order, as the catalogs have them (stacked, a first batch without a position put
        # masked_fraction before ra and dec)
        return table[[*(n for n in table.colnames if n not in FITS_COLUMNS), *(n for n in FITS_COLUMNS
                                                                              if n in table.colnames)]]


ARRAY_CHUNK = 256  # images `classify_arrays` crops, resizes and holds as tensors at a time


def load_model(model_dir=None, **options) -> Model:
    """Load a model: a folder or a shipped model's name (default: the shipped default); options as for `Model`."""
    return Model(model_dir, **options)
