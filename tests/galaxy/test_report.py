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
    assert short_id("587735344261759100#2") == "58773534426175910…" and len(short_id("x" * 40)) == 18


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
    for image in list((work / "cutouts").glob("*.jpeg"))[:30]:
        image.unlink()
    caplog.clear()
    CliRunner().invoke(cli, ["montage", str(work / "catalog.fits"), "-o", "m.png", "--per-row", "3"])
    assert re.search(r"montage: [1-9] of 9 galaxies could not be read", caplog.text)


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
