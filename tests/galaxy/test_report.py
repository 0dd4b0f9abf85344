"""Pictures: the montage picks the right galaxies, the report is one self-contained page that a
real browser renders."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from galaxy.catalog.write import CatalogWriter
from galaxy.cli import cli
from galaxy.evaluation.montage import select
from tests.conftest import EXAMPLES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _catalog(tmp_path, p_spiral):
    files = sorted(EXAMPLES.glob("*.jpeg"))
    path = tmp_path / "cat.parquet"
    writer = CatalogWriter(path, ("elliptical", "spiral"), {"model": "test"})
    p = np.asarray(p_spiral, np.float32)
    writer.write([f"g{i}" for i in range(len(p))], [str(files[i % len(files)]) for i in range(len(p))],
                 np.stack([1 - p, p], axis=1))
    writer.close()
    return path


def test_montage_rows_are_the_most_confident_and_the_most_uncertain(tmp_path):
    path = _catalog(tmp_path, [0.9, 0.01, 0.5, 0.99, 0.45, 0.2, 0.001, 0.7])
    chosen = select(path, per_row=3)
    assert [e["id"] for e in chosen["spiral"]] == ["g3", "g0", "g7"]
    assert [e["id"] for e in chosen["elliptical"]] == ["g6", "g1", "g5"]
    assert [e["id"] for e in chosen["uncertain"]] == ["g2", "g4"]  # g7 is already a spiral
    everyone = select(path, per_row=20)
    assert [len(everyone[k]) for k in ("spiral", "elliptical", "uncertain")] == [3, 5, 0]


def test_montage_rows_hold_only_their_kind_and_nobody_twice(tmp_path):
    chosen = select(_catalog(tmp_path, [0.999, 0.97, 0.8, 0.6]), per_row=8)  # all spirals, a small catalog
    assert [e["id"] for e in chosen["spiral"]] == ["g0", "g1", "g2", "g3"]
    assert chosen["elliptical"] == [] and chosen["uncertain"] == []  # not P(spiral) 0.999 as an elliptical
    chosen = select(_catalog(tmp_path, [0.999, 0.97, 0.8, 0.6, 0.3, 0.1]), per_row=2)
    ids = [e["id"] for key in ("spiral", "elliptical", "uncertain") for e in chosen[key]]
    assert ids == ["g0", "g1", "g5", "g4", "g3", "g2"] and len(set(ids)) == len(ids)


def test_cut_ids_end_with_an_ellipsis():
    from galaxy.evaluation.montage import short_id

    assert short_id("587735344261759100") == "587735344261759100"
    assert short_id("587735344261759100#2") == "587735344261759100#2" and len(short_id("x" * 40)) == 20
    # two DR8 objIDs of one field, repeated: cut at the end they had shown one label
    assert short_id("1237648720693755918#12") == "123764872…3755918#12"
    assert short_id("1237648720693755918#12") != short_id("1237648720693755934#12")


def test_montage_from_another_folder_finds_the_images_and_counts_what_it_cannot(tmp_path, monkeypatch, caplog):
    work = tmp_path / "work"
    shutil.copytree(EXAMPLES, work / "cutouts", ignore=shutil.ignore_patterns("*.csv"))
    monkeypatch.chdir(work)
    result = CliRunner().invoke(cli, ["classify", "cutouts", "-o", "catalog.fits", "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    caplog.set_level("WARNING")
    result = CliRunner().invoke(cli, ["montage", str(work / "catalog.fits"), "-o", "m.png", "--per-row", "3"])
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if r.name.startswith("galaxy")]  # paths are from work/, recorded as cwd
    for image in sorted((work / "cutouts").glob("*.jpeg"))[:30]:
        image.unlink()
    caplog.clear()
    CliRunner().invoke(cli, ["montage", str(work / "catalog.fits"), "-o", "m.png", "--per-row", "3"])
    assert re.search(r"montage: [1-9] of 9 galaxies could not be read", caplog.text)


def test_a_moved_project_folder_reads_its_relative_paths_from_the_catalogs_folder(tmp_path, monkeypatch, caplog):
    """The folder a catalog was classified in, renamed with its images: every galaxy had been drawn
    "unreadable" (review, session 45)."""
    work = tmp_path / "work"
    shutil.copytree(EXAMPLES, work / "cutouts", ignore=shutil.ignore_patterns("*.csv"))
    monkeypatch.chdir(work)
    result = CliRunner().invoke(cli, ["classify", "cutouts", "-o", "catalog.csv", "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    work.rename(tmp_path / "moved")
    caplog.set_level("WARNING")
    result = CliRunner().invoke(cli, ["montage", str(tmp_path / "moved" / "catalog.csv"), "-o", "m.png"])
    assert result.exit_code == 0, result.output
    assert "which no longer exists: its relative paths are read from" in caplog.text
    assert "could not be read" not in caplog.text


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8\xff not really")
    for f in sorted(EXAMPLES.glob("*.jpeg"))[:12]:
        shutil.copy(f, folder)
    out = folder / "catalog.csv"
    result = CliRunner().invoke(cli, ["classify", str(folder), "-o", str(out), "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 3  # the broken file
    return out


def test_montage_png_shows_the_galaxies(classified, tmp_path):
    out = tmp_path / "montage.png"
    result = CliRunner().invoke(cli, ["montage", str(classified), "-o", str(out), "--per-row", "4"])
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out).convert("RGB"), np.float32)
    assert image.shape[1] > image.shape[0] > 300
    assert image.std() > 20  # galaxies on dark sky, not a blank canvas


def test_report_is_one_self_contained_page(classified, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(classified), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<th>classified</th><td>12</td>" in page and "<th>could not be read</th><td>1" in page
    assert re.search(r"<td>1</td><td><code>[^<]*broken\.jpeg</code></td>", page)  # the reason's files, one named
    assert "Model card: sdss-xception" in page and "balanced accuracy" in page  # the shipped model's figures
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "Incomplete catalog" not in page
    assert "The card's figures are of fp32 inference" not in page  # (the fixture ran at fp32)
    assert 'alt="most confident spiral and elliptical galaxies, and the most uncertain"' in page


def test_the_report_of_an_int8_catalog_says_the_cards_figures_are_fp32(classified, tmp_path):
    """The card's fp32 validation figures stood beside a catalog made at int8 (auto's pick on these CPUs)
    without a word (review, session 45)."""
    import json

    for name in ("catalog.csv", "catalog.csv.errors.csv"):
        shutil.copy(classified.parent / name, tmp_path / name)
    meta = json.loads((classified.parent / "catalog.csv.meta.json").read_text())
    meta["backend"] = "onnxruntime-int8 int8"
    (tmp_path / "catalog.csv.meta.json").write_text(json.dumps(meta))
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "catalog.csv"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "this catalog was made at int8 (onnxruntime-int8 int8)" in (tmp_path / "r.html").read_text()


def test_the_report_of_an_interrupted_run_says_it_is_incomplete(tmp_path):
    """complete = false was one row of the metadata table, easy to miss beside counts that looked whole."""
    files = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    path = tmp_path / "cat.parquet"
    writer = CatalogWriter(path, ("elliptical", "spiral"), {"model": "test", "complete": "false"})
    writer.write([f"g{i}" for i in range(3)], [str(f) for f in files], np.array([[0.9, 0.1]] * 3, np.float32))
    writer.close()
    out = tmp_path / "report.html"
    assert CliRunner().invoke(cli, ["report", str(path), "-o", str(out)]).exit_code == 0
    page = out.read_text()
    assert page.index("Incomplete catalog") < page.index("<h2>Counts</h2>")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(classified, tmp_path):
    out = tmp_path / "report.html"
    assert CliRunner().invoke(cli, ["report", str(classified), "-o", str(out)]).exit_code == 0
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "Galaxy morphology: catalog.csv" in dom and dom.count("<img") == 2
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri()],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    dark = (pixels.mean(axis=2) < 60).mean()
    assert 0.02 < dark < 0.6  # the page drew its images (dark sky) on a white page


def _copy_catalog(classified, folder):
    """The fixture's catalog with its sidecar and errors file, in `folder` (tests may damage it)."""
    folder.mkdir(exist_ok=True)
    for name in ("catalog.csv", "catalog.csv.meta.json", "catalog.csv.errors.csv"):
        shutil.copy(classified.parent / name, folder / name)
    return folder / "catalog.csv"


@pytest.mark.parametrize("command", ["report", "montage"])
@pytest.mark.parametrize("name", ["catalog.csv", "catalog.csv.meta.json", "catalog.csv.errors.csv"])
def test_the_catalog_and_its_files_are_never_the_output(classified, tmp_path, command, name):
    catalog = _copy_catalog(classified, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = CliRunner().invoke(cli, [command, str(catalog), "-o", str(tmp_path / "." / name)])
    assert result.exit_code == 2 and f"{name} is " in result.output and "choose another output" in result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_folder_of_a_ray_run_takes_no_picture_inside(tmp_path):
    from galaxy.evaluation.montage import refuse_catalog_files
    from galaxy.errors import UsageError

    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="inside"):
        refuse_catalog_files(tmp_path / "out", tmp_path / "out" / "m.png", "montage")
    refuse_catalog_files(tmp_path / "out", tmp_path / "m.png", "montage")  # beside it is fine


def _failing_write(after: int, error):
    """A Path.write_bytes that writes `after` bytes and then fails with `error` (a full disk, Ctrl-C)."""
    def write_bytes(self, data):
        with open(self, "wb") as fh:
            fh.write(data[:after])
        raise error
    return write_bytes


@pytest.mark.parametrize("command,name", [("montage", "m.png"), ("report", "r.html")])
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(classified, tmp_path, monkeypatch,
                                                                        command, name):
    import errno
    from pathlib import Path

    out = tmp_path / name
    out.write_bytes(b"the previous good file")
    monkeypatch.setattr(Path, "write_bytes", _failing_write(100, OSError(errno.ENOSPC, "No space left on device")))
    result = CliRunner().invoke(cli, [command, str(classified), "-o", str(out), "--per-row", "2"])
    assert result.exit_code == 1
    assert f"Error: {out}: No space left on device (free space and rerun the same command)" in result.output
    assert "classify" not in result.output  # classify's advice is classify's
    assert out.read_bytes() == b"the previous good file" and [p.name for p in tmp_path.iterdir()] == [name]
    monkeypatch.setattr(Path, "write_bytes", _failing_write(100, KeyboardInterrupt()))
    result = CliRunner().invoke(cli, [command, str(classified), "-o", str(out), "--per-row", "2"])
    assert result.exit_code == 130
    assert out.read_bytes() == b"the previous good file" and [p.name for p in tmp_path.iterdir()] == [name]


def test_a_fits_catalog_of_non_ascii_paths_shows_its_galaxies(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "galaxiés à voir"
    folder.mkdir()
    for f in sorted(EXAMPLES.glob("*.jpeg"))[:6]:
        shutil.copy(f, folder / f"é{f.name}")
    monkeypatch.chdir(tmp_path)
    catalog = tmp_path / "out" / "c.fits"
    result = CliRunner().invoke(cli, ["classify", folder.name, "-o", str(catalog), "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    caplog.set_level("WARNING")
    for command, out in (("montage", "m.png"), ("report", "r.html")):
        result = CliRunner().invoke(cli, [command, str(catalog), "-o", str(tmp_path / out), "--per-row", "2"])
        assert result.exit_code == 0, result.output
    assert "could not be read" not in caplog.text  # the paths were opened as named, not as their \xe9 escapes


def _rewritten(classified, tmp_path, change):
    """The fixture's catalog with each row passed through `change(row) -> row`, as tmp_path/x.csv."""
    import csv

    with open(classified, newline="") as fh:
        rows = [change(dict(r)) for r in csv.DictReader(fh)]
    out = tmp_path / "x.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_a_catalog_without_labels_is_counted_by_probability(classified, tmp_path):
    catalog = _rewritten(classified, tmp_path, lambda r: {k: v for k, v in r.items() if k != "label"})
    result = CliRunner().invoke(cli, ["report", str(catalog), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    with open(classified, newline="") as fh:
        spirals = sum(float(line.split(",")[3]) > 0.5 for line in fh.readlines()[1:])
    assert f"<th>label spiral</th><td>{spirals} " in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("command,out", [("montage", "m.png"), ("report", "r.html")])
@pytest.mark.parametrize("change,message", [
    (lambda r: {k: v for k, v in r.items() if k != "p_spiral"}, "x.csv has no p_spiral column"),
    (lambda r: {**r, "p_spiral": "abc"}, "x.csv: row 1 (id '"),
    (lambda r: {**r, "p_spiral": "nan"}, "has p_spiral 'nan', not a probability between 0 and 1"),
])
def test_a_catalog_without_probabilities_is_one_clear_error(classified, tmp_path, command, out, change, message):
    catalog = _rewritten(classified, tmp_path, change)
    result = CliRunner().invoke(cli, [command, str(catalog), "-o", str(tmp_path / out)])
    assert result.exit_code == 2 and message in result.output and result.exception.__class__ is SystemExit
    assert not (tmp_path / out).exists()


@pytest.mark.parametrize("command", ["montage", "report"])
@pytest.mark.parametrize("per_row", ["0", "-2", "65"])
def test_a_row_holds_at_least_one_galaxy(classified, tmp_path, command, per_row):
    result = CliRunner().invoke(cli, [command, str(classified), "-o", str(tmp_path / "x.png"), "--per-row", per_row])
    assert result.exit_code == 2 and "--per-row" in result.output


def test_a_montage_is_a_png_named_as_written(classified, tmp_path):
    result = CliRunner().invoke(cli, ["montage", str(classified), "-o", str(tmp_path / "x.foo")])
    assert result.exit_code == 2 and "x.foo: a montage is written as PNG" in result.output
    assert not list(tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["montage", str(classified), "-o", str(tmp_path / "x11"), "--per-row", "2"])
    assert result.exit_code == 0 and result.output.strip() == f"wrote {tmp_path / 'x11.png'}"
    assert [p.name for p in tmp_path.iterdir()] == ["x11.png"]
    assert Image.open(tmp_path / "x11.png").format == "PNG"


def test_a_catalog_where_every_input_failed_gets_its_report(tmp_path):
    folder = tmp_path / "allbad"
    folder.mkdir()
    for name in ("a.jpeg", "b.jpeg"):
        (folder / name).write_bytes(b"\xff\xd8\xff not really")
    catalog = tmp_path / "allbad.csv"
    assert CliRunner().invoke(cli, ["classify", str(folder), "-o", str(catalog), "-q",
                                    "--backend", "onnxruntime"]).exit_code == 3
    result = CliRunner().invoke(cli, ["report", str(catalog), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "<th>classified</th><td>0</td>" in page and "<th>could not be read</th><td>2" in page
    assert re.search(r"<td>2</td><td><code>[^<]*allbad/a\.jpeg</code></td>", page)  # the reason, with a file
    assert "<img" not in page and "no histogram and no montage" in page


def test_the_model_card_is_shown_only_for_the_temperature_it_describes(tmp_path):
    from galaxy.card import load_card, shipped_model_dirs

    card = load_card(shipped_model_dirs()[0], verify=False)
    pages = {}
    for name, temperature in (("shipped", card.temperature), ("recalibrated", 0.51487)):
        catalog = _catalog(tmp_path / name, [0.9, 0.1])
        writer = CatalogWriter(catalog, ("elliptical", "spiral"),
                               {"model": card.name, "weights": card.weights_sha256, "temp": temperature})
        writer.write(["g0", "g1"], [str(sorted(EXAMPLES.glob("*.jpeg"))[0])] * 2, np.array([[0.1, 0.9], [0.9, 0.1]]))
        writer.close()
        assert CliRunner().invoke(cli, ["report", str(catalog), "-o", str(tmp_path / f"{name}.html")]).exit_code == 0
        pages[name] = (tmp_path / f"{name}.html").read_text()
    assert f"Model card: {card.name}" in pages["shipped"] and "balanced accuracy" in pages["shipped"]
    assert "Model card:" not in pages["recalibrated"] and "balanced accuracy" not in pages["recalibrated"]
    assert f"made at temperature 0.51487 and its card's figures are for temperature {card.temperature:g}" \
        in pages["recalibrated"]


@pytest.mark.parametrize("made", ["tta", "ensemble", "crop"])
def test_the_model_card_is_not_shown_for_another_reading_of_its_weights(tmp_path, made):
    """An evaluate of the mean of two models, or with D4 TTA, or at another crop wrote the first model's
    weights and temperature only, and the report showed that model's card figures as the catalog's."""
    import json

    from galaxy.card import load_card, shipped_model_dirs

    card = load_card(shipped_model_dirs()[0], verify=False)
    spec = card.input_spec.to_dict()
    metadata = {"model": card.name, "weights": card.weights_sha256, "temp": card.temperature,
                "spec": json.dumps(spec | {"crop_fraction": 0.4} if made == "crop" else spec),
                "tta": json.dumps(made == "tta")}
    if made == "ensemble":
        metadata["ensemble"] = json.dumps([{"name": "other-model", "weights": "0" * 64}])
    catalog = tmp_path / "cat.csv"
    writer = CatalogWriter(catalog, ("elliptical", "spiral"), metadata)
    writer.write(["g0"], [str(sorted(EXAMPLES.glob("*.jpeg"))[0])], np.array([[0.1, 0.9]]))
    writer.close()
    assert CliRunner().invoke(cli, ["report", str(catalog), "-o", str(tmp_path / "r.html")]).exit_code == 0
    page = (tmp_path / "r.html").read_text()
    assert "Model card:" not in page and "the card's validation figures do not apply" in page
    said = {"tta": "with D4 test-time augmentation", "ensemble": "as the mean of 2 models (other-model with this one)",
            "crop": f"reading the central 0.4 of each side (the card's {card.input_spec.crop_fraction:g})"}
    assert said[made] in page


def test_a_report_is_html_named_as_written(classified, tmp_path):
    """`report -o rep.pdf` wrote HTML into a .pdf; a montage refuses another suffix, and so does a report now."""
    result = CliRunner().invoke(cli, ["report", str(classified), "-o", str(tmp_path / "rep.pdf")])
    assert result.exit_code == 2 and "rep.pdf: a report is written as HTML" in result.output
    assert not list(tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["report", str(classified), "-o", str(tmp_path / "rep")])
    assert result.exit_code == 0 and result.output.strip() == f"wrote {tmp_path / 'rep.html'}"


@pytest.mark.parametrize("fmt", ["ecsv", "fits", "parquet", "csv"])
def test_report_and_montage_read_a_catalog_written_with_format(tmp_path, fmt):
    """`classify -o e.dat --format ecsv` (the README's example) made a catalog that report and montage
    refused ("name the format with --format", an option neither has): its format is told by its bytes."""
    catalog = tmp_path / "e.dat"
    assert CliRunner().invoke(cli, ["classify", str(EXAMPLES), "-o", str(catalog), "--format", fmt, "-q",
                                    "--backend", "onnxruntime"]).exit_code == 0
    for command, out in (("report", "r.html"), ("montage", "m.png")):
        result = CliRunner().invoke(cli, [command, str(catalog), "-o", str(tmp_path / out)])
        assert result.exit_code == 0, (command, result.output)
    page = (tmp_path / "r.html").read_text()
    assert "<th>classified</th><td>40</td>" in page and "Model card:" in page
    (tmp_path / "plain.dat").write_text("id,p\n")
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "plain.dat"), "-o", str(tmp_path / "p.html")])
    assert result.exit_code == 2 and "cannot tell the format of catalog" in result.output
    assert "--format" not in result.output  # neither command has the option an earlier message named
    if fmt != "csv":  # a known suffix over another format's bytes: said, not a UnicodeDecodeError traceback
        catalog.rename(tmp_path / "mis.csv")
        result = CliRunner().invoke(cli, ["report", str(tmp_path / "mis.csv"), "-o", str(tmp_path / "q.html")])
        assert result.exit_code == 2 and f"is named as a csv catalog but holds a {fmt} one" in result.output


def test_the_report_of_fits_inputs_says_the_card_is_of_jpegs(tmp_path):
    from galaxy.card import load_card, shipped_model_dirs

    card = load_card(shipped_model_dirs()[0], verify=False)
    catalog = tmp_path / "cat.csv"
    writer = CatalogWriter(catalog, ("elliptical", "spiral"),
                           {"model": card.name, "weights": card.weights_sha256, "temp": card.temperature})
    writer.write(["g0", "g1"], ["a.fits", str(sorted(EXAMPLES.glob("*.jpeg"))[0])], np.array([[0.1, 0.9], [0.9, 0.1]]))
    writer.close()
    assert CliRunner().invoke(cli, ["report", str(catalog), "-o", str(tmp_path / "r.html")]).exit_code == 0
    page = (tmp_path / "r.html").read_text()
    assert f"Model card: {card.name}" in page and "1 of these 2 galaxies were read from FITS files" in page


@pytest.mark.parametrize("fmt", ["csv", "ecsv", "fits", "parquet"])
def test_montage_opens_files_whose_names_are_not_utf8_or_hold_escaped_characters(tmp_path, fmt, caplog):
    """A cutout named with the byte 0xE9 (not UTF-8) was classified, and montage could not open it from
    any catalog: CSV, ECSV and Parquet kept the \\xe9 escape, FITS turned it into é."""
    import os

    folder = tmp_path / "cutouts"
    folder.mkdir()
    files = sorted(EXAMPLES.glob("*.jpeg"))
    names = [b"caf\xe9.jpeg", "café.jpeg".encode(), b"tab\tname.jpeg"]
    for name, source in zip(names, files):
        shutil.copy(source, os.path.join(os.fsencode(folder), name))
    out = tmp_path / f"c.{fmt}"
    result = CliRunner().invoke(cli, ["classify", str(folder), "-o", str(out), "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    caplog.set_level("WARNING")
    result = CliRunner().invoke(cli, ["montage", str(out), "-o", str(tmp_path / "m.png"), "--per-row", "3"])
    assert result.exit_code == 0, result.output
    assert "could not be read" not in caplog.text, caplog.text


# Review of report, montage, framing and --ray (2026-11-30)

def test_montage_reads_the_hdu_and_band_files_the_run_read(tmp_path, monkeypatch):
    """A catalog made with --hdu SCI was drawn from the first image HDU (noise), and one of
    --band-columns ("g.fits;r.fits" paths) was all 'unreadable'."""
    import json

    from astropy.io import fits

    from galaxy.evaluation import montage
    from galaxy.io import fits as fits_io
    from galaxy.spec import InputSpec

    rng = np.random.default_rng(0)
    y, x = np.mgrid[:64, :64]
    galaxy = np.exp(-((x - 32) ** 2 + (y - 32) ** 2) / 60.0).astype(np.float32) * 100
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(rng.normal(size=(64, 64)).astype(np.float32), name="WHT"),
                  fits.ImageHDU(galaxy, name="SCI")]).writeto(path)
    spec = InputSpec()
    read = montage._reader({"run": json.dumps({"hdu": "SCI"})}, spec, None)
    assert np.array_equal(read(str(path)), fits_io.read_fits_cutout(path, spec, "SCI")[0])
    assert not np.array_equal(read(str(path)), montage._reader({}, spec, None)(str(path)))
    asked = []
    monkeypatch.setattr(fits_io, "read_band_files", lambda bands, spec, hdu=None: (asked.append((bands, hdu)), (0, {}))[1])
    bands = montage._reader({"run": json.dumps({"band_columns": "g=g_file,r=r_file", "hdu": "1"})}, spec, str(tmp_path))
    bands("g.fits;r.fits")
    assert asked == [({"g": str(tmp_path / "g.fits"), "r": str(tmp_path / "r.fits")}, 1)]
    with pytest.raises(Exception, match="names 1 files for the 2 bands"):
        bands("g.fits")


def test_ids_with_dollars_and_tabs_are_shown_as_written(tmp_path, caplog):
    """`$\\frac$` in an id was read as TeX: a traceback, or another id drawn; a tab, a font warning."""
    from galaxy.evaluation.montage import montage, printable

    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    catalog = tmp_path / "odd.parquet"
    writer = CatalogWriter(catalog, ("elliptical", "spiral"), {"model": "test"})
    writer.write(["x$\\frac$y", "cost $5 and $\\frac\tz"], [str(f) for f in files],
                 np.array([[0.1, 0.9], [0.8, 0.2]], np.float32))
    writer.close()
    assert montage(catalog, tmp_path / "m.png").is_file()
    assert printable("a\tb") == "a\\tb"


@pytest.mark.parametrize("command,catalog_name,out", [("montage", "run.png", "run"), ("report", "page.html", "page")])
def test_an_output_named_without_its_suffix_is_not_the_catalog(classified, tmp_path, command, catalog_name, out):
    """`galaxy montage run.png -o run` wrote run.png over the catalog named run.png."""
    catalog = tmp_path / catalog_name
    shutil.copy(classified, catalog)
    before = catalog.read_bytes()
    result = CliRunner().invoke(cli, [command, str(catalog), "-o", str(tmp_path / out)])
    assert result.exit_code == 2 and "choose another output" in result.output, result.output
    assert catalog.read_bytes() == before


def _ray_folder(folder, parts):
    """A `classify --ray` output folder whose manifest names `parts`; the first is written."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from galaxy.catalog.formats import RAY_BOOKKEEPING, RAY_MANIFEST

    (folder / RAY_BOOKKEEPING).mkdir(parents=True)
    files = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "path": [str(f) for f in files],
                             "p_elliptical": [0.9, 0.2, 0.5], "p_spiral": [0.1, 0.8, 0.5],
                             "label": ["elliptical", "spiral", "spiral"]}), folder / parts[0])
    (folder / RAY_BOOKKEEPING / RAY_MANIFEST).write_text(json.dumps({"parts": parts}))
    return folder


def test_report_of_dot_inside_a_ray_folder_and_of_one_missing_a_part(tmp_path, monkeypatch):
    """`galaxy report .` inside a --ray folder: "PosixPath('.') has an empty name"; a part deleted to be
    redone: pyarrow's FileNotFoundError traceback."""
    folder = _ray_folder(tmp_path / "out", ["part-000000.parquet"])
    monkeypatch.chdir(folder)
    for command, out in (("report", "r.html"), ("montage", "m.png")):
        result = CliRunner().invoke(cli, [command, ".", "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    broken = _ray_folder(tmp_path / "broken", ["part-000000.parquet", "part-000001.parquet"])
    result = CliRunner().invoke(cli, ["report", str(broken), "-o", str(tmp_path / "b.html")])
    assert result.exit_code == 2 and "1 of the 2 parts its manifest names are missing (e.g. part-000001" in result.output
    # a damaged part, a damaged manifest: each named (the folder alone had been; review, session 45)
    (broken / "part-000001.parquet").write_bytes(b"PAR1 not really")
    result = CliRunner().invoke(cli, ["report", str(broken), "-o", str(tmp_path / "b.html")])
    assert result.exit_code == 2 and "its part part-000001.parquet (" in result.output, result.output
    (broken / "_galaxy" / "manifest.json").write_text("[1")
    result = CliRunner().invoke(cli, ["montage", str(broken), "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 2 and "its _galaxy/manifest.json is not a manifest galaxy wrote" in result.output


def test_failure_reasons_are_counted_by_kind_and_a_short_errors_file_reads(classified, tmp_path):
    """Each size of "N x N pixels is too small" was its own row of the commonest reasons; an errors file
    without a reason column was a KeyError traceback."""
    from galaxy.catalog.write import errors_path
    from galaxy.evaluation.report import reason_kind

    assert reason_kind("1 x 1 pixels is too small: at least 8") == reason_kind("300 x 2 pixels is too small")
    assert reason_kind("") == "(no reason given)"
    # not cut inside a parenthesis, nor in the middle of a word (review, session 45)
    assert reason_kind("not a readable FITS file (OSError: Empty or corrupt FITS file)") == "not a readable FITS file"
    assert reason_kind(" ".join(["word"] * 30)).endswith("word…") and len(reason_kind(" ".join(["word"] * 30))) <= 80
    catalog = _copy_catalog(classified, tmp_path)
    errors_path(catalog).write_text("id,path,stage\nx,/nowhere/x.jpeg,decode\n")
    result = CliRunner().invoke(cli, ["report", str(catalog), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "(no reason given)" in (tmp_path / "r.html").read_text()


def test_an_actors_error_is_galaxys_own_line():
    """A full disk inside a --ray actor was 150 lines of RayTaskError(UserCodeException)."""
    import errno

    import ray.exceptions

    from engine.distributed import actor_failure
    from galaxy.errors import GalaxyError

    full = OSError(errno.ENOSPC, "No space left on device", "/out/.part-000001.tmp")
    wrapped = ray.exceptions.UserCodeException("shard failed")
    wrapped.__cause__ = full
    assert actor_failure(ray.exceptions.RayTaskError("map_batches", "traceback", wrapped)) is full
    other = actor_failure(ray.exceptions.RayTaskError("map_batches", "traceback", ValueError("odd")))
    assert isinstance(other, GalaxyError) and "ValueError: odd" in str(other) and "rerun" in str(other)
    plain = KeyError("x")
    assert actor_failure(plain) is plain


def test_montage_and_report_show_a_two_class_catalog_of_other_classes(tmp_path):
    """A catalog of one's own (smooth, disk) model was refused for its missing p_spiral (review of
    bringing one's own data): its two classes take spiral's and elliptical's places."""
    files = sorted(EXAMPLES.glob("*.jpeg"))
    catalog = tmp_path / "own.csv"
    writer = CatalogWriter(catalog, ("smooth", "disk"), {"model": "own"})
    p = np.array([0.9, 0.2, 0.55, 0.05], np.float32)
    writer.write([f"g{i}" for i in range(4)], [str(f) for f in files[:4]], np.stack([1 - p, p], axis=1))
    writer.close()
    chosen = select(catalog, per_row=2)
    assert list(chosen) == ["disk", "smooth", "uncertain"]
    assert [e["id"] for e in chosen["disk"]] == ["g0", "g2"] and [e["id"] for e in chosen["smooth"]] == ["g3", "g1"]
    assert CliRunner().invoke(cli, ["montage", str(catalog), "-o", str(tmp_path / "m.png")]).exit_code == 0
    result = CliRunner().invoke(cli, ["report", str(catalog), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "histogram of P(disk)" in page and "<th>label disk</th><td>2" in page
    three = tmp_path / "three.csv"  # three classes: said plainly
    writer = CatalogWriter(three, ("a", "b", "c"), {"model": "own3"})
    writer.write(["g0"], [str(files[0])], np.array([[0.2, 0.3, 0.5]], np.float32))
    writer.close()
    result = CliRunner().invoke(cli, ["montage", str(three), "-o", str(tmp_path / "t.png")])
    assert result.exit_code == 2 and "show two-class catalogs" in result.output


def _cut(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


@pytest.mark.parametrize("command,out", [("montage", "m.png"), ("report", "r.html")])
@pytest.mark.parametrize("name,damage,reason", [
    ("cat.fits", lambda p: _cut(p, 0.9), "ValueError: the file ends inside its table"),
    ("cat.fits", lambda p: p.write_bytes(b"not a FITS file" * 300), "OSError: No SIMPLE card found"),
    ("cat.fits", lambda p: p.write_bytes(b""), "OSError: Empty or corrupt FITS file"),
    ("cat.parquet", lambda p: _cut(p, 0.5), "ArrowInvalid: "),
    ("cat.csv", lambda p: p.write_bytes(p.read_bytes() + b'x,"y\n'), "CSV: unexpected end of data"),
    ("cat.csv", lambda p: p.write_bytes(b"\xff" + p.read_bytes()), "UnicodeDecodeError: "),
])
def test_a_damaged_catalog_is_one_clear_error_naming_it(tmp_path, command, out, name, damage, reason):
    """Each of these had been a traceback (astropy's, pyarrow's, numpy's or csv's error) in report and montage."""
    files = sorted(EXAMPLES.glob("*.jpeg"))
    path = tmp_path / name
    writer = CatalogWriter(path, ("elliptical", "spiral"), {"model": "test"})
    writer.write([f"g{i}" for i in range(200)], [str(files[i % len(files)]) for i in range(200)],
                 np.full((200, 2), 0.5))
    writer.close()
    damage(path)
    result = CliRunner().invoke(cli, [command, str(path), "-o", str(tmp_path / out)])
    assert result.exit_code == 2 and result.exception.__class__ is SystemExit, result.output
    assert f"cannot read catalog {path} ({reason}" in " ".join(result.output.split()), result.output
    assert not (tmp_path / out).exists()


def test_a_parquet_catalog_named_in_bytes_that_are_not_utf8_is_written_and_shown(tmp_path, monkeypatch):
    """Writing one had been a traceback (pyarrow encodes its metadata and file name as UTF-8), reading one
    "cannot read catalog", and the report of any catalog so named a UnicodeEncodeError (review, session 45)."""
    import os

    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    name = os.fsdecode(b"odd\xff.parquet")
    for _ in range(2):  # and its rerun, which reads it
        result = CliRunner().invoke(cli, ["classify", str(EXAMPLES), "-o", name, "-q", "--backend", "onnxruntime"])
        assert result.exit_code == 0, result.output
    with open(name, "rb") as fh:
        table = pq.read_table(fh)
    assert table.num_rows == 40 and b"odd\\xff.parquet" in table.schema.metadata[b"galaxy.command"]
    for command, out in (("montage", "m.png"), ("report", "r.html")):
        result = CliRunner().invoke(cli, [command, name, "-o", out])
        assert result.exit_code == 0, result.output
    assert "<title>galaxy report: odd\\xff.parquet</title>" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("command", ["montage", "report"])
def test_a_table_without_id_or_path_and_an_output_naming_no_file_are_refused(tmp_path, command, classified):
    """Both had been tracebacks: KeyError 'id', and pathlib's ValueError for `-o ''` (review, session 45)."""
    for header, missing in (("path,p_spiral", "id"), ("id,p_spiral", "path")):
        own = tmp_path / "own.csv"
        own.write_text(f"{header}\nx.jpeg,0.7\n")
        result = CliRunner().invoke(cli, [command, str(own), "-o", str(tmp_path / "x")])
        assert result.exit_code == 2 and f"has no {missing} column" in result.output, result.output
    for out in ("", str(tmp_path / "absent") + "/"):
        result = CliRunner().invoke(cli, [command, str(classified), "-o", out])
        assert result.exit_code == 2 and "names no file" in result.output, result.output


def test_a_linked_catalog_finds_its_metadata_and_a_damaged_one_is_said(classified, tmp_path, caplog):
    """A CSV catalog reached through a link was shown without its metadata file (beside the file, not the
    link), and a damaged metadata file was passed over without a word (review, session 45)."""
    from galaxy.catalog.written import read_catalog_metadata

    link = tmp_path / "linked.csv"
    link.symlink_to(classified)
    assert read_catalog_metadata(link)["model"] == read_catalog_metadata(classified)["model"]
    result = CliRunner().invoke(cli, ["report", str(link), "-o", str(tmp_path / "linked.html")])
    assert result.exit_code == 0 and "<th>could not be read</th><td>1" in (tmp_path / "linked.html").read_text()
    copy = tmp_path / "copy.csv"
    shutil.copy(classified, copy)
    (tmp_path / "copy.csv.meta.json").write_text("[1")
    result = CliRunner().invoke(cli, ["report", str(copy), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert sum("its metadata cannot be read" in r.getMessage() for r in caplog.records) == 1  # once, not thrice


@pytest.mark.parametrize("command", ["montage", "report"])
def test_an_empty_file_is_no_catalog(tmp_path, command):
    (tmp_path / "x.csv").write_bytes(b"")
    result = CliRunner().invoke(cli, [command, str(tmp_path / "x.csv"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "it is empty (0 bytes)" in result.output, result.output


def test_models_lists_a_shipped_model_named_again_once():
    from galaxy.card import shipped_model_dirs

    result = CliRunner().invoke(cli, ["models", "sdss-xception"])
    assert result.exit_code == 0, result.output
    assert sum(line and not line.startswith(" ") for line in result.output.splitlines()) == len(shipped_model_dirs())


def test_models_lists_a_folder_named_twice_once(tmp_path, monkeypatch):
    from galaxy.card import shipped_model_dirs

    shutil.copytree(shipped_model_dirs()[0], tmp_path / "mine")
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["models", "mine", str(tmp_path / "mine"), "link"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line and not line.startswith(" ")]
    assert len(lines) == len(shipped_model_dirs()) + 1
