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
import sys
import warnings
from typing import NamedTuple

import numpy as np

from galaxy.catalog.formats import SKY_COLUMNS, catalog_descriptions, probability_column
from galaxy.catalog.text import safe_text
from galaxy.config import MAX_THREADS, MIN_CROP
from galaxy.errors import UsageError


def _cell(value) -> str | None:
    """A table cell as text; None for a masked (missing) one, which astropy prints as '--'."""
    return None if value is None or value is np.ma.masked else str(value)


def _table_columns(names: list, what: str) -> tuple[str, str | None]:
    """(path column, id column or None) of a Table's or DataFrame's column `names`: the first of PATH_COLUMNS /
    ID_COLUMNS present, in any case, as `galaxy classify --catalog` takes them.

    Raises:
        UsageError: no path column; two columns that name the path or id column in different cases ('PATH'
            and 'Path': neither had been taken, and the message said there was no path column).
    """
    from galaxy.catalog.formats import ID_COLUMNS, PATH_COLUMNS
    from galaxy.catalog.read import case_clash, first_present

    for candidates, kind in ((PATH_COLUMNS, "path"), (ID_COLUMNS, "id")):
        clash = case_clash(candidates, names)
        if clash:
            raise UsageError(f"the {what}'s columns {' and '.join(map(repr, clash))} both name the {kind} column "
                             f"{clash[0].casefold()!r} (read in any case): rename all but the one to use")
    column = first_present(PATH_COLUMNS, names)
    if column is None:
        raise UsageError(f"the {what} needs a path column (one of {list(PATH_COLUMNS)}); has {names}")
    return column, first_present(ID_COLUMNS, names)  # objid too, as the CLI reads a catalog


def _frame_table(frame):
    """An astropy Table of a pandas DataFrame's path and id columns (`_table_columns`), the only ones read.

    Raises:
        UsageError: MultiIndex columns (a raw KeyError), or the path or id column named twice (astropy's
            Table.from_pandas had raised AttributeError; the CLI refuses a catalog naming a column twice).
    """
    from astropy.table import Table

    if getattr(frame.columns, "nlevels", 1) > 1:
        raise UsageError(f"the DataFrame has MultiIndex columns {list(frame.columns)[:4]}: give it one level of names, "
                         "e.g. frame.columns = ['_'.join(map(str, c)) for c in frame.columns]")
    names = [str(name) for name in frame.columns]
    used = [name for name in _table_columns(names, "DataFrame") if name is not None]
    twice = next((name for name in used if names.count(name) > 1), None)
    if twice is not None:
        raise UsageError(f"the DataFrame names column {twice!r} {names.count(twice)} times: rename all but the one "
                         "to use")
    picked = frame.iloc[:, [names.index(name) for name in used]]
    picked.columns = used  # (as text: a column named by a number reads as its digits)
    return Table.from_pandas(picked)


def _missing(value) -> bool:
    """Whether a path or id cell is a gap: None, masked, a float NaN, or pandas' NA or NaT (an object or string
    column's gap, which had been the file '<NA>'). pandas is optional: where it is not imported, no value is its."""
    if value is None or value is np.ma.masked:
        return True
    if isinstance(value, (float, np.floating)):
        return value != value
    pandas = sys.modules.get("pandas")
    return pandas is not None and (value is pandas.NA or value is pandas.NaT)


def _stored_cells(column) -> list:
    """A table column's cells as stored, None where masked: astropy gives a bytes column's cells decoded as UTF-8
    with replacement characters (a file name that is not UTF-8 then named no file), so they are read from its
    data."""
    values = getattr(column, "data", column)  # (an astropy Column's values; a MaskedArray where masked)
    return [None if masked or _missing(value) else value
            for value, masked in zip(np.ma.getdata(values).tolist(), np.ma.getmaskarray(values).tolist())]


def _id_cells(column, name: str) -> list:
    """An id column's cells as text. A floating-point column (what pandas makes of an integer column with a
    missing value) gives its whole numbers as integers; one at or past the first its dtype cannot tell from
    its neighbour (2**53, float32's 2**24) may have lost digits (SDSS objids are ~6e17), so it is refused
    rather than written as '5.877246481808755e+17'.

    Raises:
        UsageError: a whole-number float id at or past that limit.
    """
    from galaxy.catalog.read import cell_id

    values = np.ma.asarray(column)
    if values.dtype.kind != "f":  # read as `galaxy classify --catalog` reads an id (spaces around it dropped)
        return [cell_id(i) for i in _stored_cells(column)]
    exact = 2 ** (np.finfo(values.dtype).nmant + 1)  # from here a whole number may be another rounded (float32: 2**24)
    cells = []
    for value in column:
        if _missing(value) or not np.isfinite(value):  # a gap takes the file's stem
            cells.append(None if _missing(value) else _cell(value))
        elif float(value).is_integer():
            if abs(value) >= exact:  # 2**53 itself may be 2**53 + 1 rounded: another galaxy's id
                raise UsageError(f"id column {name!r} holds floating-point numbers such as {float(value)!r}, past "
                                 f"{exact:,}, which may have lost digits (pandas makes an integer column with a "
                                 f"missing value float): read it as text, e.g. pd.read_csv(..., "
                                 f"dtype={{{name!r}: str}})")
            cells.append(str(int(value)))
        else:
            cells.append(_cell(value))
    return cells


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


def _pixels(value) -> bool:
    """Whether `value` is an array of numbers (a numpy array, a torch tensor, a PIL image): pixels, never a
    path. An array of text (numpy str or bytes, a pandas Series of str: dtype kind U, S or O) may hold paths."""
    if not (hasattr(value, "__array__") or hasattr(value, "__array_interface__")):
        return False
    if hasattr(value, "colnames") or hasattr(value, "columns"):  # a Table, a Row, a DataFrame: a path column
        return False
    return getattr(getattr(value, "dtype", None), "kind", None) not in ("U", "S", "O")  # (numpy's, pandas' dtypes)


def _not_paths(value, what: str = "inputs") -> UsageError | None:
    """The refusal of `classify` inputs that are no paths and no table: pixels (each row of an image had been
    taken for a file name: N failures, each naming a printed array, "File name too long"), an opened FITS file
    or HDU (a raw TypeError, or its HDUs read as paths); None for anything else."""
    kind = type(value).__name__
    if type(value).__module__.startswith("astropy.io.fits"):  # HDUList, ImageHDU, BinTableHDU, FITS_rec
        return UsageError(f"{what} of type {kind} (an opened FITS file's contents): classify reads files; pass the "
                          "file's path (load_model(hdu=...) picks the HDU), or the pixels as (H, W, 3) RGB to "
                          "classify_arrays")
    if _pixels(value):
        shape = getattr(value, "shape", None)
        return UsageError(f"{what} of type {kind}{f' {tuple(shape)}' if shape else ''} holds numbers, not paths: "
                          "for images already in memory use classify_arrays(images)")
    return None


def _path_text(value) -> str:
    """A path as str: a bytes name (`os.listdir(b".")`, how non-UTF-8 names are listed) or an os.PathLike
    (Path, os.DirEntry) as Python holds file names, undecodable bytes as surrogate escapes (`str()` of bytes
    had named "b'x.jpeg'", a bare bytes been read as a sequence of byte values)."""
    refusal = _not_paths(value, "an input")
    if refusal is not None:
        raise refusal
    try:
        return os.fsdecode(os.fspath(value))
    except TypeError:
        raise UsageError(f"input {value!r} of type {type(value).__name__}: expected a path (str, bytes or "
                         "os.PathLike)") from None


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
        for name in SKY_COLUMNS:  # the sky position from FITS headers, where they give one
            if any(name in c for c in columns):
                table[name] = [float(c.get(name, "nan")) for c in columns]
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

        refusal = _not_paths(inputs)  # (first: a BinTableHDU has `columns`, as a DataFrame has)
        if refusal is not None:
            raise refusal
        if hasattr(inputs, "columns") and not hasattr(inputs, "colnames"):  # a pandas DataFrame (iterating one
            inputs = _frame_table(inputs)  # gave its column names as paths)
        if hasattr(inputs, "colnames") and hasattr(inputs, "table") and hasattr(inputs, "index"):  # an astropy Row
            inputs = inputs.table[inputs.index:inputs.index + 1]  # (its cells had been zipped as columns: TypeError)
        if hasattr(inputs, "colnames"):
            column, id_column = _table_columns(inputs.colnames, "table")
            ids = _id_cells(inputs[id_column], id_column) if id_column else [None] * len(inputs)
            # each path read as `galaxy classify --catalog` reads it: spaces around it dropped, a bytes cell as
            # the file name it holds (not "b'x.jpeg'"), the \xNN escapes of a catalog galaxy wrote read back
            items = (Item(cell_path(p), i) for p, i in zip(_stored_cells(inputs[column]), ids))
        elif isinstance(inputs, (str, bytes, os.PathLike, list, tuple)):
            names = [_path_text(p) for p in ([inputs] if isinstance(inputs, (str, bytes, os.PathLike)) else inputs)]
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
                if _missing(value):  # a pandas Series' gap (None, NaN, NA, NaT): as a table's missing path
                    return [Item("")]  # reads, an empty path (it had been the file 'nan', '<NA>' or 'NaT')
                refusal = _not_paths(value, "an input")
                if refusal is not None:  # an image among paths: a usage mistake, not a file that failed
                    raise refusal
                try:
                    name = _path_text(value)
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
        for name in SKY_COLUMNS:  # a batch without a FITS position had no column: masked there, NaN in the
            if name in table.colnames and getattr(table[name], "mask", None) is not None:  # others; NaN for all
                unit, description = table[name].unit, table[name].description
                table[name] = table[name].filled(np.nan)
                table[name].unit, table[name].description = unit, description
        return table


ARRAY_CHUNK = 256  # images `classify_arrays` crops, resizes and holds as tensors at a time


def load_model(model_dir=None, **options) -> Model:
    """Load a model: a folder or a shipped model's name (default: the shipped default); options as for `Model`."""
    return Model(model_dir, **options)
