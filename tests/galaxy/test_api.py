import numpy as np
from PIL import Image

import galaxy
from tests.conftest import EXAMPLES


def test_api_classifies_paths_tables_and_arrays():
    model = galaxy.load_model(backend="onnxruntime")
    files = sorted(EXAMPLES.glob("*.jpeg"))[:6]
    errors = []
    table = model.classify([str(p) for p in files] + [str(EXAMPLES / "labels.csv")], errors=errors)
    assert list(table["id"]) == [p.stem for p in files]
    assert table.colnames == ["id", "path", "p_elliptical", "p_spiral", "label"]
    assert table["p_spiral"].description == "calibrated probability of class spiral"  # as the catalogs say
    assert table["id"].description and table["label"].description
    assert len(errors) == 1 and errors[0][0].endswith("labels.csv")
    from astropy.table import Table

    by_table = model.classify(Table({"id": ["x", "y"], "file": [str(files[0]), str(files[1])]}))
    assert list(by_table["id"]) == ["x", "y"]
    np.testing.assert_allclose(by_table["p_spiral"], table["p_spiral"][:2], atol=1e-5)
    arrays = [np.asarray(Image.open(p), np.float32) / 255 for p in files[:2]]
    np.testing.assert_allclose(model.classify_arrays(arrays)[:, 1], table["p_spiral"][:2], atol=1e-4)


def test_classify_arrays_checks_its_input():
    import pytest

    from galaxy.errors import UsageError

    model = galaxy.load_model(backend="onnxruntime")
    pixels = np.asarray(Image.open(sorted(EXAMPLES.glob("*.jpeg"))[0]).convert("RGB"))  # uint8 (H, W, 3)
    floats = model.classify_arrays(pixels.astype(np.float32)[None] / 255)
    np.testing.assert_allclose(model.classify_arrays(pixels[None]), floats, atol=1e-6)  # uint8 is scaled by 1/255
    one = model.classify_arrays(pixels)  # one (H, W, 3) image
    assert one.shape == (1, 2)
    np.testing.assert_allclose(one, floats, atol=1e-6)
    import re

    for bad, words in [(pixels.astype(np.float32), "values from 0 to 231: expected floats in [0, 1]"),
                       (pixels[..., 0], f"shape {pixels.shape[:2]}: expected (N, H, W, 3)"),
                       (pixels[None, ..., :2], f"shape {pixels[..., :2].shape}: expected (H, W, 3)"),
                       (pixels.astype(np.int16)[None], "dtype int16: expected floats in [0, 1] or uint8"),
                       (np.where(pixels == pixels.max(), np.nan, pixels / 255.0), "NaN or infinite"),
                       (pixels[:1, :1], "image 0: 1 x 1 pixels is too small for a cutout"),
                       (pixels[:8, :8], "image 0: 8 x 8 pixels is too small for a cutout (at least 16"),  # as files
                       # a mask was dropped: the pixels under it were classified as valid
                       (np.ma.masked_array(pixels / 255.0, mask=pixels == pixels.max()), "masked array with")]:
        with pytest.raises(UsageError, match=re.escape(words)):
            model.classify_arrays(bad)
    unmasked = np.ma.masked_array(pixels / 255.0, mask=np.zeros(pixels.shape, bool))  # nothing masked: as the array
    np.testing.assert_allclose(model.classify_arrays(unmasked), floats, atol=1e-6)


def test_the_same_stem_in_two_folders_gets_the_ids_the_cli_writes(tmp_path):
    import csv

    from click.testing import CliRunner

    from galaxy.cli import cli

    files = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    for folder, chosen in (("a", files), ("b", files[:2])):
        (tmp_path / folder).mkdir()
        for path in chosen:
            (tmp_path / folder / path.name).symlink_to(path)
    inputs = [str(tmp_path / "a"), str(tmp_path / "b")]
    model = galaxy.load_model(backend="onnxruntime", batch_size=2)  # repeats fall in later batches
    expected = [p.stem for p in files] + [f"{p.stem}#2" for p in files[:2]]
    assert list(model.classify(inputs)["id"]) == expected
    assert [i for part in model.classify_iter(inputs) for i in part["id"]] == expected
    result = CliRunner().invoke(cli, ["classify", *inputs, "-o", str(tmp_path / "c.csv"), "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "c.csv", newline="") as fh:
        assert [row["id"] for row in csv.DictReader(fh)] == expected


def test_load_model_takes_the_fits_and_tta_options_classify_takes(tmp_path):
    """load_model(hdu=...) raised TypeError: the API could not read a galaxy from an extension, choose its
    bands or average the D4 views, as `galaxy classify --hdu/--bands/--tta` do."""
    import csv

    from astropy.io import fits
    from click.testing import CliRunner

    from galaxy.cli import cli
    from galaxy.io.images import read_raster
    from galaxy.io.roundtrip import RoundTripDraw, flux_cube

    jpeg = sorted(EXAMPLES.glob("*.jpeg"))[0]
    planes = flux_cube(read_raster(jpeg), RoundTripDraw(0.1, "lupton", 1e-9, 0.01))  # g, r, i
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.stack(planes), name="SCI"),
                  fits.ImageHDU(np.ones((64, 64), np.float32), name="WHT")]).writeto(tmp_path / "g.fits")
    for options, args in (({"hdu": "SCI", "bands": "0,1,2"}, ["--hdu", "SCI", "--bands", "0,1,2"]),
                          ({"hdu": 1, "tta": True}, ["--hdu", "1", "--tta"])):
        api = galaxy.load_model(backend="onnxruntime", **options).classify([str(tmp_path / "g.fits")])
        out = tmp_path / f"{len(args)}-{args[-1]}.csv"
        result = CliRunner().invoke(cli, ["classify", str(tmp_path / "g.fits"), "-o", str(out), "-q",
                                          "--backend", "onnxruntime", *args])
        assert result.exit_code == 0, result.output
        row = next(csv.DictReader(line for line in open(out) if not line.startswith("#")))
        assert abs(float(api["p_spiral"][0]) - float(row["p_spiral"])) < 1e-5, options
    plain = galaxy.load_model(backend="onnxruntime", hdu="SCI").classify([str(tmp_path / "g.fits")])
    swapped = galaxy.load_model(backend="onnxruntime", hdu="SCI", bands="0,1,2").classify([str(tmp_path / "g.fits")])
    assert float(plain["p_spiral"][0]) != float(swapped["p_spiral"][0])  # the bands option is not ignored


def _many_cutouts(folder, copies=4):
    """The sample cutouts under `copies` names each: enough for several decode chunks."""
    import shutil

    folder.mkdir()
    for k in range(copies):
        for path in sorted(EXAMPLES.glob("*.jpeg")):
            shutil.copy(path, folder / f"{k}-{path.name}")
    return sorted(str(p) for p in folder.iterdir())


def test_two_threads_sharing_a_model_get_their_own_images_results(shared_data):
    """Every classify drove the model's one DALI graph: from two threads at once rows carried another
    image's probability (124 of 256 in a review), with no error. Distinct galaxies: copies of one
    cutout would hide a mix-up."""
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(str(p) for p in (shared_data / "images").glob("*.jpeg"))[:320]
    model = galaxy.load_model()
    serial = dict(zip(model.classify(files)["path"], model.classify(files)["p_spiral"]))
    halves = [files[:160], files[160:]]
    for _ in range(4):  # (a run of the code before ended in a segmentation fault in its second round)
        with ThreadPoolExecutor(2) as pool:
            tables = list(pool.map(model.classify, halves))
        assert [list(t["path"]) for t in tables] == halves
        assert max(abs(serial[p] - q) for t in tables for p, q in zip(t["path"], t["p_spiral"])) < 1e-5
    # the race is timing's: deterministically, no two runs may decode through one pipeline at once
    shared, open_streams, most = model._runner.pipeline, [0], [0]
    real_decode = shared.decode

    def counted(items):
        open_streams[0] += 1
        most[0] = max(most[0], open_streams[0])
        try:
            yield from real_decode(items)
        finally:
            open_streams[0] -= 1

    shared.decode = counted
    first, second = model.classify_iter(halves[0]), model.classify_iter(halves[1])  # interleaved in one thread
    rows = [row for pair in zip(first, second) for table in pair for row in zip(table["path"], table["p_spiral"])]
    assert len(rows) == len(files) and max(abs(serial[p] - q) for p, q in rows) < 1e-5
    assert most[0] == 1


def test_a_model_used_in_forked_worker_processes_gives_the_parents_results(tmp_path):
    """A Model (its DALI decoder) hung in a multiprocessing worker forked from the process that loaded it.
    ONNX Runtime fp32 named: where `auto` picks torch bf16 (a CPU with native bf16 on which int8 is not
    checked), a galaxy's bf16 output moves by ~4e-4 with the batch it sits in (80 here, 40 in each child)."""
    import multiprocessing

    files = _many_cutouts(tmp_path / "in", copies=2)
    model = galaxy.load_model(backend="onnxruntime")
    parent = list(model.classify(files)["p_spiral"])

    global _FORKED_MODEL
    _FORKED_MODEL = model
    with multiprocessing.get_context("fork").Pool(2) as pool:
        parts = pool.map_async(_classify_in_child, [files[:40], files[40:]]).get(timeout=120)
    np.testing.assert_allclose(parts[0] + parts[1], parent, atol=1e-5)
    assert len(model.classify(files[:5])) == 5  # and the parent's still works


_FORKED_MODEL = None


def _classify_in_child(files):
    return list(_FORKED_MODEL.classify(files)["p_spiral"])


def test_the_api_reads_tables_as_the_cli_reads_catalogs_and_says_what_it_left_out(tmp_path):
    """A review of the API: a Table's objid was ignored (ids differed from the CLI's), masked cells became
    the text '--', a DataFrame was iterated as its column names, a missing path was found only after every
    row before it was classified (and thrown away), and unreadable inputs vanished without a word."""
    import pytest
    from astropy.table import MaskedColumn, Table

    from galaxy.errors import UsageError

    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:3]]
    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    table = Table({"objid": MaskedColumn(["x1", "x2", "x1", "x9"], mask=[False, False, False, True]),
                   "FILE_LOC": MaskedColumn([*files, "masked"], mask=[False, False, False, True])})
    errors = []
    out = model.classify(table, errors=errors)
    assert list(out["id"]) == ["x1", "x2", "x1#2"]
    assert len(errors) == 1 and errors[0][0] == "" and "--" not in errors[0][0]
    frame = model.classify(table[:3].to_pandas())
    assert list(frame["id"]) == ["x1", "x2", "x1#2"]
    with pytest.raises(UsageError, match=r"input .*nothere.jpeg does not exist"):
        model.classify([*files, str(tmp_path / "nothere.jpeg")])
    (tmp_path / "broken.jpeg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match=r"1 input\(s\) could not be read and are not in the results"):
        assert len(model.classify([*files, str(tmp_path / "broken.jpeg")])) == 3


def test_load_model_refuses_options_it_would_take_wrongly():
    import pytest

    from galaxy.errors import UsageError

    for options, says in (({"crop_fraction": "auto"}, "galaxy framing"), ({"crop_fraction": 1.5}, r"\[0.05, 1\]"),
                          ({"crop_fraction": 0.01}, r"\[0.05, 1\] \(below 0.05"), ({"threads": 2000}, "up to 1024"),
                          ({"hdu": True}, "hdu=True"), ({"hdu": 1.5}, "hdu=1.5"),
                          ({"threads": -1}, "threads=-1"), ({"tta": "no"}, "tta='no'")):
        with pytest.raises(UsageError, match=says):
            galaxy.load_model(**options)
    assert galaxy.load_model(backend="onnxruntime", batch_size=5000).batch_size == 256  # what the runner holds


def test_a_classify_table_has_nan_positions_for_every_row_without_one_and_says_how_it_read(tmp_path):
    """A JPEG's ra was masked or NaN depending on whether its batch held a FITS file with a position, and
    the Table did not say the crop, TTA or bands it was read with."""
    import shutil

    from astropy.io import fits

    from galaxy.io.images import read_raster
    from tests.galaxy.test_sky_columns import _fits_cutouts

    folder = tmp_path / "in"
    folder.mkdir()
    _fits_cutouts(folder / "z-fits", n_files=2)
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:5]:
        shutil.copy(path, folder)
    # a FITS file without a position, in the third batch of two: masked_fraction came before ra and dec
    fits.PrimaryHDU(np.moveaxis(read_raster(sorted(EXAMPLES.glob("*.jpeg"))[5]), -1, 0)[:, ::-1].astype(np.float32)
                    ).writeto(folder / "plain.fits")
    model = galaxy.load_model(backend="onnxruntime", decoder="reference", batch_size=2, crop_fraction=0.55)
    table = model.classify([str(folder)])
    assert len(table) == 8 and table["ra"].unit == "deg"
    assert table.colnames[-3:] == ["ra", "dec", "masked_fraction"]  # as the catalogs order them
    assert getattr(table["ra"], "mask", None) is None or not table["ra"].mask.any()
    assert np.isnan(table["ra"][:6]).all() and np.isfinite(table["ra"][6:]).all()
    assert np.isnan(table["masked_fraction"][:5]).all() and list(table["masked_fraction"][5:]) == [0.0] * 3
    assert table.meta["crop_fraction"] == 0.55 and table.meta["tta"] is False


def test_api_errors_carry_the_rows_id_and_the_bar_counts_them(tmp_path, capsys):
    """errors=[] held (path, stage, reason) only: rows naming no file could not be told apart, and the
    progress bar never counted a failure (it ended at 1/3); review of the API, session 39."""
    import pickle

    from astropy.table import Table

    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:2]]
    (tmp_path / "text.jpeg").write_text("not an image")
    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    errors = []
    out = model.classify(Table({"objid": ["g1", "g2", "g3", "g4"],
                                "path": [files[0], "", files[1], str(tmp_path / "text.jpeg")]}),
                         errors=errors, progress=True)
    assert list(out["id"]) == ["g1", "g3"]
    assert [e.id for e in errors] == ["g2", "g4"]
    path, stage, reason = errors[1]  # still the documented 3-tuple
    assert path.endswith("text.jpeg") and stage == "decode" and reason == errors[1].reason
    assert errors[0] == ("", "read", errors[0].reason) and "empty path" in errors[0].reason
    assert pickle.loads(pickle.dumps(errors[1])).id == "g4"
    assert "4/4" in capsys.readouterr().err


def test_an_iterator_of_paths_is_read_as_the_run_goes(tmp_path):
    """A generator of paths was read whole before the first batch (a slow source waited; one that raised
    midway lost every row classified before it); review of the API, session 39."""
    import pytest

    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))] * 5  # 200
    model = galaxy.load_model(backend="onnxruntime", decoder="reference", batch_size=2)
    taken = []

    def source(broken=False):
        for path in files:
            taken.append(path)
            yield path
        yield str(tmp_path / "gone.jpeg")  # missing: that row's failure, not a refusal of the call
        if broken:
            raise OSError("the source broke")

    parts = model.classify_iter(source())
    assert len(next(parts)) == 2 and len(taken) < len(files)  # read ahead a window, not the whole source
    errors = []
    assert sum(len(part) for part in parts) == len(files) - 2
    rows, errors = 0, []
    with pytest.raises(OSError, match="the source broke"):
        for part in model.classify_iter(source(broken=True), errors=errors):
            rows += len(part)
    assert rows > 0  # what came before the break (less a read-ahead window) was delivered


def test_a_missing_path_from_an_iterator_is_that_rows_failure(tmp_path):
    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:3]]
    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    errors = []
    table = model.classify(iter([files[0], str(tmp_path / "gone.jpeg"), *files[1:]]), errors=errors)
    assert len(table) == 3 and len(errors) == 1 and errors[0][0].endswith("gone.jpeg") and errors[0].id == "gone"


def test_a_float_id_column_is_read_as_whole_numbers_or_refused_where_digits_are_lost():
    """pandas reads an integer objid column with a missing value as float64: the API wrote
    '5.877246481808755e+17', another galaxy's digits; review of the API, session 39."""
    import pandas as pd
    import pytest

    from galaxy.errors import UsageError

    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:2]]
    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    small = pd.DataFrame({"objid": [12.0, float("nan")], "path": files})
    assert list(model.classify(small)["id"]) == ["12", files[1].rsplit("/", 1)[1][:-5]]
    big = pd.DataFrame({"objid": [587724648180875538, None], "path": files})
    assert big["objid"].dtype.kind == "f"
    with pytest.raises(UsageError, match=r"id column .objid. .* past 9,007,199,254,740,992, .*dtype=\{'objid': str\}"):
        model.classify(big)
    for column in (np.array([2.0 ** 53 + 1, np.nan]), np.array([16777217, np.nan], np.float32)):  # stored as 2**53,
        with pytest.raises(UsageError, match="which may have lost digits"):  # 2**24: another galaxy's id
            model.classify(pd.DataFrame({"objid": column, "path": files}))
    as_text = pd.DataFrame({"objid": ["587724648180875538", None], "path": files})
    assert model.classify(as_text)["id"][0] == "587724648180875538"


def test_classify_arrays_takes_what_numpy_reads_as_images():
    """A torch tensor or a PIL image was taken for a sequence of rows ("image 0 has shape (64, 3)"), nested
    lists too, a generator was refused by len(), and a 1-D object array of images of different sizes by its
    shape; review of the API, session 39."""
    import torch

    model = galaxy.load_model(backend="onnxruntime")
    images = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.jpeg"))[:2]]
    pixels = [np.asarray(image) for image in images]
    want = model.classify_arrays(np.stack(pixels))
    np.testing.assert_allclose(model.classify_arrays(torch.from_numpy(pixels[0])), want[:1], atol=1e-6)
    np.testing.assert_allclose(model.classify_arrays(images[0]), want[:1], atol=1e-6)
    np.testing.assert_allclose(model.classify_arrays((pixels[0] / 255).tolist()), want[:1], atol=1e-5)
    np.testing.assert_allclose(model.classify_arrays(p for p in pixels), want, atol=1e-6)
    np.testing.assert_allclose(model.classify_arrays([torch.from_numpy(p) for p in pixels]), want, atol=1e-6)
    ragged = np.empty(2, object)
    ragged[0], ragged[1] = pixels[0], pixels[1][:100, :90]
    assert model.classify_arrays(ragged).shape == (2, 2)
    import pytest

    from galaxy.errors import UsageError

    for bad in ("a.jpeg", 3, {"a": pixels[0]}):
        with pytest.raises(UsageError, match="images of type"):
            model.classify_arrays(bad)


def test_load_model_refuses_bools_and_strings_for_numbers_and_takes_bands_as_a_list():
    """batch_size='8' was a TypeError, threads=True a RuntimeError in autotune, crop_fraction=True read as a
    crop of 1, bands=['i', 'r', 'g'] an AttributeError; review of the API, session 39."""
    import pytest

    from galaxy.errors import UsageError

    for options, says in (({"batch_size": "8"}, "batch_size='8'"), ({"batch_size": 0}, "batch_size=0"),
                          ({"threads": True}, "threads=True"), ({"workers": 1.0}, "workers=1.0"),
                          ({"crop_fraction": True}, "crop_fraction=True"), ({"bands": 3}, "bands=3"),
                          ({"bands": ["i", None]}, "bands=")):
        with pytest.raises(UsageError, match=says):
            galaxy.load_model(backend="onnxruntime", **options)
    listed = galaxy.load_model(backend="onnxruntime", bands=["i", "r", "g"])
    assert listed.spec.fits_bands == galaxy.load_model(backend="onnxruntime", bands="i,r,g").spec.fits_bands


def test_the_api_takes_bytes_and_path_like_names_and_gives_the_catalogs_ids(tmp_path):
    """A bytes name (`os.listdir(b".")`, how non-UTF-8 names are listed) was read as a sequence of byte values
    or named "b'x.jpeg'", an os.DirEntry refused; a non-UTF-8 name gave a Table no format could write
    (surrogates), its id not the catalogs' `\\xNN`; numpy ints for threads failed in JSON; an empty result's
    columns were float and could not be stacked; errors=True failed after the run; review of the API, session 44."""
    import os
    import shutil
    import warnings

    import pytest
    from astropy.table import Table, vstack

    from galaxy.errors import UsageError

    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(files[0], tree / "x.jpeg")
    shutil.copy(files[1], os.path.join(os.fsencode(tree), b"caf\xe9.jpeg"))
    model = galaxy.load_model(backend="onnxruntime", threads=np.int64(1), batch_size=np.int64(8))
    table = model.classify(os.fsencode(tree))
    assert list(table["id"]) == ["caf\\xe9", "x"] and table["path"][0].endswith("caf\\xe9.jpeg")
    table.write(tmp_path / "t.ecsv")  # (surrogates: UnicodeEncodeError in every format)
    assert list(Table.read(tmp_path / "t.ecsv")["id"]) == ["caf\\xe9", "x"]
    assert list(model.classify([os.fsencode(tree / "x.jpeg")])["id"]) == ["x"]
    assert sorted(model.classify(list(os.scandir(tree)))["id"]) == ["caf\\xe9", "x"]
    empty = model.classify([])
    assert len(vstack([empty, table])) == 2
    import pandas as pd  # a Series' gap is an empty path, as a table's (it had been the file 'nan'); a Row a table
    failures = []
    assert list(model.classify(pd.Series([str(tree / "x.jpeg"), None]), errors=failures)["id"]) == ["x"]
    assert [f.path for f in failures] == [""] and failures[0].reason.startswith("empty path")
    assert list(model.classify(Table({"id": ["a", "b"], "file": [str(tree / "x.jpeg")] * 2})[1])["id"]) == ["b"]
    with pytest.raises(UsageError, match="errors=True: give a list"):
        model.classify([str(tree)], errors=True)
    with warnings.catch_warnings(record=True) as caught:  # the warning names the caller's line, not the API's
        warnings.simplefilter("always")
        model.classify([str(tree), str(EXAMPLES / "labels.csv")])
    assert [w.filename for w in caught] == [__file__]


def test_classify_arrays_reads_a_generator_in_chunks_and_names_what_to_do_with_other_images():
    """A generator was held whole (1.4 GB for 2,000 cutouts), then all its tensors; a PIL image in mode L or
    RGBA was a shape error, a list holding a tensor that requires grad a raw RuntimeError (review, session 44)."""
    import pytest
    import torch

    import galaxy.api as api
    from galaxy.errors import UsageError

    model = galaxy.load_model(backend="onnxruntime")
    image = Image.open(sorted(EXAMPLES.glob("*.jpeg"))[0])
    pixels = np.asarray(image.convert("RGB"))
    read = []

    def cutouts():
        for k in range(2 * api.ARRAY_CHUNK + 3):
            read.append(k)
            yield pixels
    seen = []
    original = model._runner.infer_all
    model._runner.infer_all = lambda tensors: seen.append((len(read), len(tensors))) or original(tensors)
    out = model.classify_arrays(cutouts())
    assert out.shape == (2 * api.ARRAY_CHUNK + 3, 2) and np.allclose(out, out[0], atol=1e-6)
    assert seen == [(api.ARRAY_CHUNK, api.ARRAY_CHUNK), (2 * api.ARRAY_CHUNK, api.ARRAY_CHUNK),
                    (2 * api.ARRAY_CHUNK + 3, 3)]  # read a chunk at a time
    for mode in ("L", "RGBA"):
        with pytest.raises(UsageError, match=f"mode '{mode}': convert it first"):
            model.classify_arrays(image.convert(mode))
    with pytest.raises(UsageError, match="image 0 of type Tensor cannot be read as an array"):
        model.classify_arrays([torch.rand(64, 64, 3, requires_grad=True), torch.rand(64, 64, 3)])


def test_classify_arrays_with_errors_gives_a_bad_image_a_nan_row_and_classifies_the_rest():
    """`classify_arrays` stopped at the first bad image, so a generator's one blank or NaN image threw away every
    result before it; with errors=[] it is a NaN row and an ArrayFailure (left by session 44's review). A list of grey PIL
    images stacked to (N, H, W) and was read as one image of N rows."""
    import pytest

    from galaxy.api import ArrayFailure
    from galaxy.errors import UsageError

    model = galaxy.load_model(backend="onnxruntime")
    image = Image.open(sorted(EXAMPLES.glob("*.jpeg"))[0])
    pixels = np.asarray(image.convert("RGB"))
    good = model.classify_arrays(pixels)
    nan = np.where(pixels == pixels.max(), np.nan, pixels / 255.0)
    images = [pixels, np.zeros_like(pixels), pixels[:8, :8], pixels, nan]
    with pytest.raises(UsageError, match="image 1"):  # without errors=: the first one raises, as before
        model.classify_arrays(iter(images))
    errors = []
    out = model.classify_arrays(iter(images), errors=errors)
    assert out.shape == (5, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[[0, 3]], np.vstack([good, good]), atol=1e-6)
    assert np.isnan(out[[1, 2, 4]]).all()
    assert [e.index for e in errors] == [1, 2, 4] and all(isinstance(e, ArrayFailure) for e in errors)
    assert "blank" in errors[0].reason and "too small" in errors[1].reason and "NaN" in errors[2].reason
    errors = []
    assert np.isnan(model.classify_arrays(np.stack([np.zeros_like(pixels)] * 2), errors=errors)).all()
    assert [e.index for e in errors] == [0, 1]
    with pytest.raises(UsageError, match="give a list"):
        model.classify_arrays(pixels, errors="yes")
    with pytest.raises(UsageError, match="expected arrays"):  # no images at all: refused, errors= or not
        model.classify_arrays("x.jpeg", errors=[])
    with pytest.raises(UsageError, match=r"images of shape \(5, 96, 96\): expected \(N, H, W, 3\)"):
        model.classify_arrays(np.zeros((5, 96, 96), np.float32), errors=[])  # grey images: not one of 5 rows
    errors = []
    out = model.classify_arrays([image.convert("L"), image.convert("L")], errors=errors)
    assert np.isnan(out).all() and all("mode 'L': convert it first" in e.reason for e in errors)


def test_classify_refuses_pixels_numbers_and_opened_fits_files_naming_what_to_pass(tmp_path):
    """classify(image_array) took each row of pixels for a file name (N failures, each a printed array, "File
    name too long"); None, 42 and an ImageHDU were raw TypeErrors, an HDUList's HDUs were read as paths."""
    import pytest
    import torch
    from astropy.io import fits

    from galaxy.errors import UsageError

    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    jpeg = sorted(EXAMPLES.glob("*.jpeg"))[0]
    pixels = np.asarray(Image.open(jpeg).convert("RGB"))
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((3, 64, 64), np.float32))]).writeto(tmp_path / "g.fits")
    with fits.open(tmp_path / "g.fits") as hdul:
        for bad, says in ((pixels, r"ndarray \(.*\) holds numbers, not paths: .* use classify_arrays"),
                          (pixels[None] / 255.0, "use classify_arrays"),
                          (torch.from_numpy(pixels.copy()), "classify_arrays"),
                          (Image.open(jpeg), "classify_arrays"), ([str(jpeg), pixels], "an input of type ndarray"),
                          (iter([pixels]), "an input of type ndarray"), (None, "inputs None of type NoneType"),
                          (42, "inputs 42 of type int: expected a path"),
                          (hdul, "HDUList .*pass the file's path"), (hdul[1], "ImageHDU .*pass the file's path")):
            errors = []
            with pytest.raises(UsageError, match=says):
                model.classify(bad, errors=errors)
            assert errors == []
    assert list(model.classify(np.array([str(jpeg)]))["id"]) == [jpeg.stem]  # an array of text holds paths


def test_a_tables_cells_are_read_as_the_cli_reads_a_catalogs(tmp_path):
    """A Table's path cell was str() of it: re-classifying a catalog galaxy wrote lost the row its `\\xNN` escape
    names (a file name that is not UTF-8), a cell with spaces around it named no file, bytes in an object column
    became "b'...'" and non-UTF-8 bytes in a bytes column U+FFFD; `--catalog` strips, decodes and unescapes them."""
    import os
    import shutil

    import pandas as pd
    from astropy.table import Table
    from click.testing import CliRunner

    from galaxy.cli import cli

    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(files[0], tree / "x.jpeg")
    odd = os.path.join(os.fsencode(tree), b"caf\xe9.jpeg")
    shutil.copy(files[1], odd)
    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    written = model.classify([str(tree)])
    written.write(tmp_path / "out.ecsv")
    errors = []
    again = model.classify(Table.read(tmp_path / "out.ecsv"), errors=errors)
    assert errors == [] and list(again["id"]) == ["caf\\xe9", "x"] and list(again["path"]) == list(written["path"])
    np.testing.assert_allclose(again["p_spiral"], written["p_spiral"], atol=1e-6)
    x = str(tree / "x.jpeg")
    cells = Table({"path": np.array([f"  {x}  ", os.fsencode(x), odd], dtype=object), "id": [" g1 ", "g2", " "]})
    out = model.classify(cells, errors=errors)
    assert errors == [] and list(out["id"]) == ["g1", "g2", "caf\\xe9"]  # a blank id: the file's stem
    assert list(out["path"]) == [x, x, written["path"][0]]
    packed = model.classify(Table({"path": np.array([odd, os.fsencode(x)], dtype="S")}), errors=errors)
    assert errors == [] and list(packed["id"]) == ["caf\\xe9", "x"]
    with open(tmp_path / "c.csv", "w") as fh:  # the same cells as a catalog: the CLI reads them alike
        fh.write(f"path,id\n  {x}  , g1 \n{written['path'][0]},\n")
    result = CliRunner().invoke(cli, ["classify", "--catalog", str(tmp_path / "c.csv"), "-o", str(tmp_path / "o.csv"),
                                      "-q", "--backend", "onnxruntime", "--decoder", "reference"])
    assert result.exit_code == 0, result.output
    cli_rows = pd.read_csv(tmp_path / "o.csv", comment=None)
    api_rows = model.classify(pd.read_csv(tmp_path / "c.csv", dtype=str, keep_default_na=False))
    assert list(cli_rows["id"]) == list(api_rows["id"]) == ["g1", "caf\\xe9"]
    np.testing.assert_allclose(cli_rows["p_spiral"], api_rows["p_spiral"], atol=1e-5)


def test_a_folder_of_no_image_is_refused_as_the_cli_refuses_it(tmp_path):
    """A folder holding no image the readers take (only x.tiff) gave an empty Table without a word, where
    `galaxy classify` exits 2 saying "no images found in ..."; from an iterator it is that row's failure."""
    import re

    import pytest
    from click.testing import CliRunner

    from galaxy.cli import cli
    from galaxy.errors import UsageError

    folder = tmp_path / "tifonly"
    folder.mkdir()
    (folder / "x.tiff").write_bytes(b"II*\x00")
    result = CliRunner().invoke(cli, ["classify", str(folder), "-o", str(tmp_path / "o.csv"), "-q"])
    assert result.exit_code == 2 and f"no images found in {folder}" in result.output
    said = re.search(r"no images found in .*", result.output).group().split(": ")[-1]  # the CLI's wording
    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    for inputs in (str(folder), [folder]):
        with pytest.raises(UsageError, match=re.escape(f"no images found in {folder}: {said}")):
            model.classify(inputs)
    assert len(model.classify([])) == 0  # no inputs at all: an empty Table, as before
    errors = []
    jpeg = str(sorted(EXAMPLES.glob("*.jpeg"))[0])
    assert len(model.classify([str(folder), jpeg])) == 1  # one image among the inputs: as the CLI, classified
    assert len(model.classify(iter([str(folder), jpeg]), errors=errors)) == 1
    assert [(e.path, e.reason) for e in errors] == [(str(folder), "is a folder, not an image file")]


def test_pandas_na_and_nat_are_gaps_as_none_and_nan_are():
    """A Series' pd.NA or pd.NaT became the file '<NA>' or 'NaT' (None and NaN were gaps: empty paths), and in
    a Table's object column a path or id of them was that text too."""
    import pandas as pd
    from astropy.table import Table

    jpeg = str(sorted(EXAMPLES.glob("*.jpeg"))[0])
    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    errors = []
    assert len(model.classify(pd.Series([jpeg, pd.NA, pd.NaT, None, np.nan], dtype=object), errors=errors)) == 1
    assert [(e.path, e.reason.startswith("empty path")) for e in errors] == [("", True)] * 4
    errors = []
    table = Table({"path": np.array([jpeg, pd.NA, np.nan], dtype=object), "id": np.array([pd.NA, "g", "h"], object)})
    assert list(model.classify(table, errors=errors)["id"]) == [sorted(EXAMPLES.glob("*.jpeg"))[0].stem]
    assert [(e.id, e.path) for e in errors] == [("g", ""), ("h", "")]


def test_a_dataframe_naming_a_column_twice_or_in_two_levels_or_cases_is_refused_naming_them():
    """columns=['path', 'id', 'id'] was an AttributeError inside astropy's Table.from_pandas, MultiIndex columns a
    raw KeyError, and columns 'PATH' and 'Path' "needs a path column"; the CLI refuses a catalog naming its path
    or id column twice."""
    import re

    import pandas as pd
    import pytest
    from astropy.table import Table

    from galaxy.errors import UsageError

    jpeg = str(sorted(EXAMPLES.glob("*.jpeg"))[0])
    model = galaxy.load_model(backend="onnxruntime", decoder="reference")
    for frame, says in ((pd.DataFrame([[jpeg, "a", "b"]], columns=["path", "id", "id"]), "column 'id' 2 times"),
                        (pd.DataFrame([[jpeg, "a"]], columns=pd.MultiIndex.from_tuples([("x", "path"), ("x", "id")])),
                         "MultiIndex columns [('x', 'path'), ('x', 'id')]"),
                        (pd.DataFrame([[jpeg, jpeg]], columns=["PATH", "Path"]),
                         "'PATH' and 'Path' both name the path"),
                        (Table([[jpeg], ["a"], ["b"]], names=["path", "ID", "Id"]), "'ID' and 'Id' both name the id"),
                        (pd.DataFrame({"x": [jpeg]}), "needs a path column")):
        with pytest.raises(UsageError, match=re.escape(says)):
            model.classify(frame)
    kept = pd.DataFrame([[jpeg, "a", 1, 2]], columns=["path", "id", "n", "n"])  # a column it does not read: no matter
    assert list(model.classify(kept)["id"]) == ["a"]


def test_a_models_repr_names_it_and_a_tables_meta_records_what_the_catalog_of_that_run_does(tmp_path):
    """repr(model) was the default object repr; the Table's meta lacked the catalog's run record (InputSpec,
    temperature, version, the run fingerprint, where int8 its model and arithmetic)."""
    from click.testing import CliRunner

    from galaxy.catalog.written import read_catalog_metadata
    from galaxy.cli import cli

    jpeg = str(sorted(EXAMPLES.glob("*.jpeg"))[0])
    model = galaxy.load_model(backend="onnxruntime", decoder="reference", crop_fraction=0.55)
    text = repr(model)
    assert model.card.name in text and model.card.weights_sha256[:12] in text and model.backend in text
    assert f"input {model.spec.size} px (crop 0.55)" in text
    table = model.classify([jpeg])
    result = CliRunner().invoke(cli, ["classify", jpeg, "-o", str(tmp_path / "c.ecsv"), "-q", "--backend",
                                      "onnxruntime", "--decoder", "reference", "--crop-fraction", "0.55"])
    assert result.exit_code == 0, result.output
    catalog = read_catalog_metadata(tmp_path / "c.ecsv")
    same = {"run", "model", "weights", "temp", "spec", "version", "backend", "device", "decoder", "software", "cwd"}
    assert same <= set(catalog) and {key: str(table.meta[key]) for key in same} == {key: catalog[key] for key in same}
    assert table.meta["crop_fraction"] == 0.55 and "command" not in table.meta and "complete" not in table.meta
    table.write(tmp_path / "api.ecsv")  # written, it describes itself as a catalog does
    assert read_catalog_metadata(tmp_path / "api.ecsv")["spec"] == catalog["spec"]


def test_load_models_refusals_of_bands_and_hdu_name_its_parameters_not_the_command_lines_flags():
    """load_model(bands="q") said "--bands 'q': ...", a flag the Python caller never wrote."""
    import pytest

    from galaxy.errors import UsageError

    for options, says in (({"bands": "q"}, "bands='q': 'q' is not a band name"),
                          ({"hdu": -1}, "hdu='-1': an HDU index"),
                          ({"bands": "i,r,g,z"}, "bands takes 1 to 3 bands"), ({"hdu": " "}, "hdu is empty")):
        with pytest.raises(UsageError, match=says) as caught:
            galaxy.load_model(backend="onnxruntime", **options)
        assert "--" not in str(caught.value)
