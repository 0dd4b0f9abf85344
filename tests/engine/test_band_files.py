"""One galaxy per catalog row from one FITS file per band (--band-columns) == the same galaxy as a cube."""

import csv
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.io.images import read_raster
from galaxy.io.roundtrip import RoundTripDraw, write_cube, flux_cube
from tests.conftest import EXAMPLES


def _band_catalog(tmp_path, n=4):
    """Real cutouts as g, r, i flux: one cube per galaxy and one file per band, in bands.csv."""
    rows = []
    for k, jpeg in enumerate(sorted(EXAMPLES.glob("*.jpeg"))[:n]):
        how = RoundTripDraw(0.1, "lupton", 10.0 ** -(9 + k), 0.01)
        objid = jpeg.stem
        write_cube(tmp_path / f"{objid}.fits", read_raster(jpeg), how)
        row = {"objid": objid, "cube": f"{objid}.fits"}
        for band, plane in zip("gri", flux_cube(read_raster(jpeg), how)):
            fits.PrimaryHDU(plane).writeto(tmp_path / f"{objid}_{band}.fits")
            row[f"{band}_file"] = f"{objid}_{band}.fits"
        rows.append(row)
    with open(tmp_path / "bands.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_band_columns_give_the_cube_result(tmp_path):
    rows = _band_catalog(tmp_path)
    runner = CliRunner()
    # columns in any order: the band names, not the column order, decide R, G, B
    result = runner.invoke(cli, ["classify", "--catalog", str(tmp_path / "bands.csv"), "--band-columns",
                                 "r=r_file,i=i_file,g=g_file", "-o", str(tmp_path / "bands_out.csv"), "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["classify", "--catalog", str(tmp_path / "bands.csv"), "--path-column", "cube",
                                 "-o", str(tmp_path / "cube_out.csv"), "-q"])
    assert result.exit_code == 0, result.output
    bands, cubes = Table.read(tmp_path / "bands_out.csv"), Table.read(tmp_path / "cube_out.csv")
    assert list(bands["id"].astype(str)) == [r["objid"] for r in rows]
    assert all(p.count(";") == 2 and p.endswith("_g.fits") for p in bands["path"])  # --band-columns order
    np.testing.assert_allclose(bands["p_spiral"], cubes["p_spiral"], atol=1e-4)


def test_band_columns_need_pairs_and_a_catalog(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["classify", str(EXAMPLES), "--band-columns", "g=g_file,r=r_file", "-o",
                                 str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "--catalog" in result.output
    (tmp_path / "c.csv").write_text("objid,g_file\n1,a.fits\n")
    result = runner.invoke(cli, ["classify", "--catalog", str(tmp_path / "c.csv"), "--band-columns", "g", "-o",
                                 str(tmp_path / "y.csv")])
    assert result.exit_code == 2 and "band=column" in result.output


@pytest.mark.parametrize("value, words", [
    ("c=i,b=r,a=g", "'c' is not a band name"), ("foo=g_file,r=r_file", "'foo' is not a band name"),
    ("g=g_file,g=r_file,i=i_file", "the band 'g' twice"), ("SDSS g=g_file,g=r_file", "the band 'g' twice"),
    ("g=g_file,r=g_file", "the column 'g_file' twice"),
])
def test_band_columns_name_known_bands_and_each_band_and_column_once(tmp_path, value, words):
    """The band names decide the colours: unknown names were taken in column order (the same galaxy
    0.70 elliptical as c,b,a and 0.40 spiral as i,r,g), and a band named twice silently dropped one."""
    (tmp_path / "c.csv").write_text("objid,g_file,r_file,i_file\n1,a.fits,b.fits,c.fits\n")
    result = CliRunner().invoke(cli, ["classify", "--catalog", str(tmp_path / "c.csv"), "--band-columns", value, "-o",
                                      str(tmp_path / "y.csv")])
    assert result.exit_code == 2 and words in result.output, result.output


def test_band_files_take_the_position_any_of_them_gives_and_refuse_files_of_another_field(tmp_path):
    """The sky position came from the first band file only: empty when the g file had none though
    r and i had one, and a g file 80 degrees from the others was combined without a word."""
    from galaxy.errors import ImageReadError
    from galaxy.io.fits import read_band_files
    from galaxy.spec import InputSpec

    jpeg = sorted(EXAMPLES.glob("*.jpeg"))[0]
    planes = flux_cube(read_raster(jpeg), RoundTripDraw(0.1, "lupton", 1e-9, 0.01))
    where = {"g": None, "r": (150.0, 2.0), "i": (150.0 + 5 / 3600, 2.0)}
    for band, plane in zip("gri", planes):
        header = fits.Header()
        if where[band]:
            header["RA"], header["DEC"] = where[band]
        fits.PrimaryHDU(plane, header).writeto(tmp_path / f"{band}.fits")
    files = {band: str(tmp_path / f"{band}.fits") for band in "gri"}
    _, meta = read_band_files(files, InputSpec())
    assert (meta["ra"], meta["dec"]) == (150.0, 2.0)  # the r file's: the first that has one
    fits.setval(tmp_path / "g.fits", "RA", value=8.56)
    fits.setval(tmp_path / "g.fits", "DEC", value=-37.4)
    with pytest.raises(ImageReadError, match="not of one galaxy: the r file's centre is"):
        read_band_files(files, InputSpec())


def test_a_ray_run_reads_band_files_as_one_machine_does(tmp_path, default_model):
    """--band-columns was refused with --ray: a survey stored one file per band could not use a cluster."""
    import pyarrow.parquet as pq

    from engine.ray_actor import ShardClassifier
    from engine.ray_manifest import write_manifest
    from engine.ray_shards import write_shards
    from engine.run import classify
    from galaxy.config import ClassifyConfig

    _band_catalog(tmp_path, n=3)
    config = ClassifyConfig((), str(tmp_path / "out"), catalog=str(tmp_path / "bands.csv"), id_column="objid",
                            band_columns="r=r_file,i=i_file,g=g_file", backend="onnxruntime", decoder="reference",
                            progress=False)
    out = tmp_path / "out"
    shards = write_shards(config, out, 2)
    classifier = ShardClassifier(config, str(default_model[0]), str(out))
    for shard in shards:
        classifier.classify_shard(shard.index, shard.path)
    write_manifest(out, shards, {"rows": 3, "errors": 0}, 0, 1, 0.0)
    single = tmp_path / "single.parquet"
    classify(ClassifyConfig(**{**config.__dict__, "output": str(single)}))
    ray, one = pq.read_table(out), pq.read_table(single)
    assert ray.column("path").to_pylist() == one.column("path").to_pylist()
    assert all(p.count(";") == 2 for p in ray.column("path").to_pylist())
    np.testing.assert_allclose(ray.column("p_spiral").to_numpy(), one.column("p_spiral").to_numpy(), atol=1e-6)


@pytest.mark.parametrize("first, again, changed", [
    (["--bands", "0,1,2"], ["--bands", "2,1,0"], "bands [0, 1, 2] then, [2, 1, 0] now"),
    ([], ["--hdu", "1"], 'hdu not given then, "1" now'),
    (["--band-columns", "g=g_file,r=r_file,i=i_file"], ["--band-columns", "g=r_file,r=g_file,i=i_file"],
     'band_columns "g=g_file,r=r_file,i=i_file" then, "g=r_file,r=g_file,i=i_file" now'),
    # the same files named in another order: another path for each galaxy (its rows were written twice)
    (["--band-columns", "g=g_file,r=r_file,i=i_file"], ["--band-columns", "i=i_file,r=r_file,g=g_file"],
     'band_columns "g=g_file,r=r_file,i=i_file" then, "i=i_file,r=r_file,g=g_file" now')])
def test_a_rerun_that_reads_the_files_otherwise_is_refused(tmp_path, first, again, changed):
    """A rerun with other --bands was taken: its catalog's metadata named the new bands over rows made
    with the old (a galaxy's label differed between the two readings)."""
    _band_catalog(tmp_path, n=2)
    source = ["--catalog", str(tmp_path / "bands.csv")] + ([] if "--band-columns" in first else ["--path-column",
                                                                                                 "cube"])
    out = str(tmp_path / "out.csv")
    runner = CliRunner()
    command = ["classify", *source, "-o", out, "-q", "--backend", "onnxruntime"]
    result = runner.invoke(cli, [*command, *first])
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli, [*command, *first]).exit_code == 0  # the same reading: nothing to do
    result = runner.invoke(cli, [*command, *again])
    assert result.exit_code == 2 and f"other settings ({changed}); use --overwrite" in result.output, result.output
    if first:  # written otherwise, read alike: spaces
        assert runner.invoke(cli, [*command, first[0], first[1].replace(",", " , ")]).exit_code == 0


def test_a_rerun_skips_a_galaxy_only_where_each_of_its_band_files_was_done(tmp_path, monkeypatch):
    """Band files were keyed as one path, their names joined by ';': a rerun naming the catalog by its
    absolute path wrote every row again (ids #2), and a '..' in one name cancelled the name before it, so a
    row whose g file was changed was taken as done (its old probabilities kept)."""
    from engine.run import classify
    from galaxy.config import ClassifyConfig

    rows = _band_catalog(tmp_path, n=3)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for row in rows:  # the same file, named through a folder: joined, 'g;sub/../r' had read as 'r'
        row["r_file"] = f"sub/../{row['r_file']}"
    with open("bands.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def run(catalog):
        return classify(ClassifyConfig((), "out.csv", catalog=catalog, band_columns="g=g_file,r=r_file,i=i_file",
                                       backend="onnxruntime", progress=False))

    assert run("bands.csv").classified == 3
    again = run(str(tmp_path / "bands.csv"))
    assert (again.classified, again.resumed) == (0, 3)
    rows[0]["g_file"] = rows[1]["g_file"]  # another galaxy's g image: a new row
    with open("bands.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert run("bands.csv").classified == 1
    assert [r["id"] for r in csv.DictReader(line for line in open("out.csv") if not line.startswith("#"))] == [
        *(r["objid"] for r in rows), f"{rows[0]['objid']}#2"]


def test_a_band_file_name_holding_a_semicolon_keys_as_that_file(tmp_path):
    """A done row's path joins its band files with ';': a name holding one is cut where the files exist."""
    from engine.journal_rows import band_files, band_key, input_key

    folder = str(tmp_path)
    for name in ("a;b.fits", "c.fits", "d.fits"):
        (tmp_path / name).write_bytes(b"")
    assert band_files("a;b.fits;c.fits;d.fits", 3, folder) == ["a;b.fits", "c.fits", "d.fits"]
    key = band_key(["a;b.fits", "c.fits", f"{folder}/d.fits"], folder, str)  # spelled otherwise: one key
    assert input_key("a;b.fits;c.fits;d.fits", folder, str, None, 3) == key
    assert input_key("a;b.fits", folder, str, None, 3) == os.path.realpath(f"{folder}/a;b.fits")  # one file


def test_a_catalog_written_before_the_reading_settings_were_recorded_resumes(tmp_path):
    """Outputs begun before --hdu/--bands/--band-columns were recorded could not be resumed with the
    options they were made with: the missing keys read as "not given"."""
    import json

    _band_catalog(tmp_path, n=2)
    out = tmp_path / "out.csv"
    command = ["classify", "--catalog", str(tmp_path / "bands.csv"), "--path-column", "cube", "-o", str(out), "-q",
               "--backend", "onnxruntime", "--bands", "0,1,2", "--hdu", "0"]
    assert CliRunner().invoke(cli, command).exit_code == 0
    sidecar = tmp_path / "out.csv.meta.json"
    meta = json.loads(sidecar.read_text())
    meta["run"] = {k: v for k, v in meta["run"].items() if k not in ("reading", "hdu", "bands", "band_columns")}
    sidecar.write_text(json.dumps(meta))  # as the version before wrote it
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    changed = [*command[:-4], "--bands", "2,1,0", "--hdu", "0"]  # its config says what it was read with
    result = CliRunner().invoke(cli, changed)
    assert result.exit_code == 2 and "bands [0, 1, 2] then, [2, 1, 0] now" in result.output, result.output


def test_a_rerun_naming_another_id_or_path_column_is_refused(tmp_path):
    """A rerun with another --id-column was taken: the catalog held ids of two columns (1 from objid
    beside B from alt). A catalog written when only the FITS reading settings were recorded (version 1)
    resumes, and its config says which columns it was made with."""
    import json
    import shutil

    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.jpeg").write_bytes(files[0].read_bytes()[:500])
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["objid", "alt", "file", "other_file"], ["1", "A", files[0].name, files[0].name],
                                  ["2", "B", "broken.jpeg", files[1].name]])
    out = tmp_path / "out.csv"
    command = ["classify", "--catalog", str(tmp_path / "c.csv"), "-o", str(out), "-q", "--backend", "onnxruntime"]
    assert CliRunner().invoke(cli, command).exit_code == 3  # broken.jpeg failed
    shutil.copy(files[1], tmp_path / "broken.jpeg")  # mended: a rerun classifies it
    for option, changed in ((["--id-column", "alt"], 'id_column "objid" then, "alt" now'),
                            (["--path-column", "other_file"], 'path_column "file" then, "other_file" now')):
        result = CliRunner().invoke(cli, [*command, *option])
        assert result.exit_code == 2 and f"other settings ({changed})" in result.output, result.output
    # naming the columns the first run found by default is no change: the broken file is retried
    result = CliRunner().invoke(cli, [*command, "--id-column", "objid", "--path-column", "file"])
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in csv.DictReader(line for line in open(out) if not line.startswith("#"))] == ["1", "2"]

    named = [*command, "--id-column", "alt", "--overwrite"]
    assert CliRunner().invoke(cli, named).exit_code == 0
    sidecar = tmp_path / "out.csv.meta.json"
    meta = json.loads(sidecar.read_text())
    assert meta["run"]["id_column"] == "alt" and meta["run"]["path_column"] == "file" and meta["run"]["reading"] == 2
    meta["run"] = {**{k: v for k, v in meta["run"].items() if k not in ("id_column", "path_column")}, "reading": 1}
    meta["config"] = {**meta["config"], "path_column": None}  # the version before recorded what was given
    sidecar.write_text(json.dumps(meta))  # as the version before wrote it
    assert CliRunner().invoke(cli, named[:-1]).exit_code == 0, "a catalog of the version before resumes"
    result = CliRunner().invoke(cli, command)  # its config says --id-column alt
    assert result.exit_code == 2 and 'id_column "alt" then, "objid" now' in result.output, result.output


def test_a_band_file_whose_header_names_another_band_is_refused(tmp_path):
    """An i file with FILTER = 'g' (two columns swapped) was read as the band its column said, in the wrong
    colour, without a word."""
    from galaxy.errors import ImageReadError
    from galaxy.io.fits import read_band_files
    from galaxy.spec import InputSpec

    planes = flux_cube(read_raster(sorted(EXAMPLES.glob("*.jpeg"))[0]), RoundTripDraw(0.1, "lupton", 1e-9, 0.01))
    for band, plane in zip("gri", planes):
        fits.PrimaryHDU(plane, fits.Header({"FILTER": f"SDSS {band}"})).writeto(tmp_path / f"{band}.fits")
    files = {band: str(tmp_path / f"{band}.fits") for band in "gri"}
    read_band_files(files, InputSpec())  # each file the band its header names
    with pytest.raises(ImageReadError, match="its header names band i, and --band-columns gives it as band g"):
        read_band_files({"g": files["i"], "r": files["r"], "i": files["g"]}, InputSpec())


def test_ks_and_k_are_one_band_to_the_header_check(tmp_path):
    """2MASS writes FILTER = 'k' for Ks: --band-columns j=...,h=...,ks=... was refused as columns swapped."""
    from galaxy.io.fits import read_band_files
    from galaxy.spec import InputSpec

    planes = flux_cube(read_raster(sorted(EXAMPLES.glob("*.jpeg"))[0]), RoundTripDraw(0.1, "lupton", 1e-9, 0.01))
    for band, plane in zip("jhk", planes):
        fits.PrimaryHDU(plane, fits.Header({"FILTER": band})).writeto(tmp_path / f"{band}.fits")
    read_band_files({"j": str(tmp_path / "j.fits"), "h": str(tmp_path / "h.fits"), "ks": str(tmp_path / "k.fits")},
                    InputSpec(fits_bands=("ks", "h", "j")))


def test_a_ray_folder_of_the_version_before_compares_its_columns_as_the_defaults():
    """A --ray folder recorded the columns as given (None when not): read as the defaults the catalog gives,
    it resumes without them or naming the same columns, and is refused another id column."""
    from engine.fingerprint import changed_settings

    earlier = {"path_column": None, "id_column": None, "reading": 1, "tta": False}
    defaults = {"path_column": "file", "id_column": "objid"}
    now = {"path_column": "file", "id_column": "objid", "reading": 2, "tta": False}
    assert changed_settings(earlier, now, defaults) is None
    assert changed_settings(earlier, {**now, "id_column": "alt"}, defaults) == 'id_column "objid" then, "alt" now'
