"""Framing: the Petrosian radius scales with the image, `galaxy framing` compares a set with the model's
training cutouts, and `--crop-fraction` (a number or auto) changes what classify and evaluate read."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from galaxy.cli import cli
from galaxy.io.framing import REGION, compare_framing, petrosian_fraction, summarise
from tests.conftest import EXAMPLES, ROOT


def _reframe_module():
    spec = importlib.util.spec_from_file_location("reframe", ROOT / "benchmarks" / "reframe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reframe(source, target, zoom):
    return _reframe_module().reframe(source, target, zoom)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _disk(scale_length: float, side: int = 301, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """An exponential disk (a face-on spiral's profile) on a noisy sky, scale length in pixels."""
    y, x = np.mgrid[:side, :side]
    r = np.hypot(y - (side - 1) / 2, x - (side - 1) / 2)
    sky = np.random.default_rng(seed).normal(0.05, noise, (side, side))
    return np.repeat((sky + 0.8 * np.exp(-r / scale_length))[..., None], 3, axis=2)


def test_the_petrosian_radius_scales_with_the_galaxy_and_not_with_its_brightness():
    small, large = petrosian_fraction(_disk(6.0)), petrosian_fraction(_disk(7.5))
    # Exponential disk: e^-r r^2 / (2 (1 - e^-r (1 + r))) = 0.2 at r = 3.6 scale lengths (2.15 half-light
    # radii); a disk 1.25x larger measures 1.25x.
    assert small * 301 == pytest.approx(3.6 * 6.0, rel=0.03)
    assert large / small == pytest.approx(1.25, rel=0.03)
    faint = _disk(6.0) * 0.5  # half as bright, half the sky noise: the same profile shape
    assert petrosian_fraction(faint) == pytest.approx(small, rel=0.03)


def test_empty_sky_has_no_radius_and_a_galaxy_filling_the_cutout_counts_as_the_region():
    sky = np.random.default_rng(1).normal(0.05, 0.01, (200, 200, 3))
    assert np.isnan(petrosian_fraction(sky))
    assert petrosian_fraction(_disk(80.0, side=200)) == REGION


def test_summary_ignores_unmeasured_cutouts_and_the_crop_follows_the_scale():
    summary = summarise([0.1, 0.2, float("nan"), 0.3])
    assert summary == {"images": 4, "measured": 3, "p25": 0.15, "median": 0.2, "p75": 0.25}
    assert summarise([float("nan")]) == {"images": 1, "measured": 0}
    assert compare_framing({"median": 0.18}, {"median": 0.15}, 0.5) == {"scale": 1.2, "crop_fraction": 0.6,
                                                                        "lower_bound": False, "at_crop_1": None}
    # galaxies too large for any crop: the crop is 1, and how large they still appear is said
    larger = compare_framing({"median": 0.33}, {"median": 0.15}, 0.5)
    assert larger["crop_fraction"] == 1.0 and larger["at_crop_1"] == 1.1 and not larger["lower_bound"]
    # half or more of the galaxies larger than the search: the median is a lower bound
    assert compare_framing({"median": REGION, "measured": 3, "at_limit": 2}, {"median": 0.15}, 0.5)["lower_bound"]
    assert not compare_framing({"median": 0.2, "measured": 3, "at_limit": 1}, {"median": 0.15}, 0.5)["lower_bound"]


@pytest.fixture(scope="module")
def zoomed(tmp_path_factory) -> Path:
    """The example SDSS cutouts with every galaxy 1.25x larger (another survey's framing)."""
    out = tmp_path_factory.mktemp("zoomed")
    for path in sorted(EXAMPLES.glob("*.jpeg")):
        reframe(path, out / path.name, 1.25)
    return out


def test_reframe_zooms_each_class_by_its_own_factor(tmp_path):
    from PIL import Image

    rows = list(csv.DictReader((EXAMPLES / "labels.csv").open()))[:6]
    (tmp_path / "labels.csv").write_text("id,file,label\n" + "".join(
        f"{r['id']},{(EXAMPLES / r['file']).resolve()},{r['label']}\n" for r in rows))
    _reframe_module().main([str(tmp_path / "labels.csv"), "--zoom", "1.5", "--class-zoom", "elliptical=1.2",
                            "--class-column", "label", "--id-column", "id", "-o", str(tmp_path / "out")])
    for row in rows:
        source = np.asarray(Image.open(EXAMPLES / row["file"]), dtype=np.float32) / 255
        target = np.asarray(Image.open(tmp_path / "out" / "images" / f"{row['id']}.jpeg"), dtype=np.float32) / 255
        zoom = petrosian_fraction(target) / petrosian_fraction(source)
        assert zoom == pytest.approx(1.2 if row["label"] == "elliptical" else 1.5, rel=0.08), row
    with pytest.raises(SystemExit):
        _reframe_module().main([str(tmp_path / "labels.csv"), "--class-zoom", "spiral", "-o", str(tmp_path / "x")])


def test_framing_measures_the_zoom_of_real_cutouts(zoomed):
    same = invoke("framing", EXAMPLES, "--json")
    assert same.exit_code == 0, same.output
    native = json.loads(same.output)
    assert native["scale"] == pytest.approx(1.0, abs=0.06) and native["measured"]["measured"] == 40
    zoom = json.loads(invoke("framing", zoomed, "--json").output)
    assert zoom["scale"] / native["scale"] == pytest.approx(1.25, rel=0.04)
    assert zoom["crop_fraction"] == pytest.approx(0.5 * zoom["scale"], abs=0.002)
    text = invoke("framing", zoomed, "--sample", "10")
    assert text.exit_code == 0 and "(10 measured of 10)" in text.output and "--crop-fraction 0.6" in text.output


def test_classify_reads_with_the_crop_given_or_measured(tmp_path, zoomed):
    def run(name, *options):
        out = tmp_path / f"{name}.csv"
        result = invoke("classify", zoomed, "-o", out, "--backend", "onnxruntime", *options)
        assert result.exit_code == 0, result.output
        from galaxy.catalog.written import read_catalog_metadata

        meta = read_catalog_metadata(out)
        with out.open() as handle:
            rows = {r["id"]: float(r["p_spiral"]) for r in csv.DictReader(line for line in handle
                                                                            if not line.startswith("#"))}
        return result.output, json.loads(meta["spec"]), json.loads(meta["run"]), rows

    _, card_spec, card_run, plain = run("card")
    said, fixed_spec, fixed_run, fixed = run("fixed", "--crop-fraction", "0.4")
    auto_said, auto_spec, auto_run, auto = run("auto", "--crop-fraction", "auto")
    assert card_spec["crop_fraction"] == 0.5 and "crop" not in card_run
    assert fixed_spec["crop_fraction"] == 0.4 and fixed_run["crop"] == 0.4 and "centre crop 0.4" in said
    assert auto_spec["crop_fraction"] == pytest.approx(0.625, abs=0.04)
    assert auto_run["crop"] == auto_spec["crop_fraction"]  # the crop measured, not "auto"
    assert f"centre crop {auto_spec['crop_fraction']:g}" in auto_said
    assert plain.keys() == fixed.keys() == auto.keys()
    assert max(abs(plain[k] - auto[k]) for k in plain) > 0.05  # a different crop is a different input


def test_crop_fraction_errors_name_the_value_and_the_reason(tmp_path, model_copy):
    bad = invoke("classify", EXAMPLES, "-o", tmp_path / "c.csv", "--crop-fraction", "1.5")
    assert bad.exit_code == 2 and "'1.5' is not a fraction in [0.05, 1]" in bad.output
    no_auto = invoke("evaluate", "sdss-xception-compact", EXAMPLES / "labels.csv", "-o", tmp_path / "e",
                     "--crop-fraction", "auto")
    assert no_auto.exit_code == 2 and "'auto' is not a fraction" in no_auto.output
    card = json.loads((model_copy / "card.json").read_text())
    del card["training"]["framing"]
    (model_copy / "card.json").write_text(json.dumps(card))
    unknown = invoke("classify", EXAMPLES, "-o", tmp_path / "d.csv", "--model", model_copy, "--crop-fraction", "auto")
    assert unknown.exit_code == 2 and "records no training framing" in unknown.output
    assert not (tmp_path / "d.csv").exists()


def test_evaluate_scores_every_model_at_the_crop_given(tmp_path):
    out = tmp_path / "e"
    result = invoke("evaluate", "sdss-xception-compact", EXAMPLES / "labels.csv", "--split", "all",
                    "--crop-fraction", "0.4", "--compare", "sdss-xception", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["crop_fraction"] == 0.4
    from galaxy.catalog.written import read_catalog_metadata

    assert json.loads(read_catalog_metadata(out / "predictions.csv")["spec"])["crop_fraction"] == 0.4


def test_the_python_api_reads_with_the_crop_given():
    import galaxy

    images = sorted(EXAMPLES.glob("*.jpeg"))[:6]
    card_crop = galaxy.load_model("sdss-xception-compact", backend="onnxruntime")
    tighter = galaxy.load_model("sdss-xception-compact", backend="onnxruntime", crop_fraction=0.4)
    assert tighter.spec.crop_fraction == 0.4 and card_crop.spec.crop_fraction == 0.5
    a, b = (np.array(m.classify(images)["p_spiral"]) for m in (card_crop, tighter))
    assert np.abs(a - b).max() > 0.01


def test_framing_names_the_cutouts_it_could_not_read(tmp_path):
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:20]:
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "broken.jpeg").write_bytes(b"not a jpeg")
    from PIL import Image

    sky = np.random.default_rng(0).normal(20, 3, (128, 128, 3)).clip(0, 255).astype(np.uint8)
    Image.fromarray(sky).save(tmp_path / "sky.png")  # readable, no galaxy: left out of the median, said so
    text = invoke("framing", tmp_path)
    assert text.exit_code == 0 and "(20 measured of 22)" in text.output
    assert "1 cutout could not be read, e.g." in text.output and "broken.jpeg: not a JPEG or PNG" in text.output
    assert "1 cutout shows no galaxy above the noise near the centre (not measured), e.g." in text.output
    report = json.loads(invoke("framing", tmp_path, "--json").output.splitlines()[0])
    assert [u["path"].endswith("broken.jpeg") for u in report["unreadable"]] == [True]
    assert [p.endswith("sky.png") for p in report["no_galaxy"]] == [True]
    assert "uncertain" not in text.output


def test_galaxies_larger_than_any_crop_are_said_to_be_so(tmp_path):
    """Cutouts zoomed 3x: the median was the search's limit (0.35) and printed as a measurement, and a crop of 1
    was said to match the training scale, which no crop does (review, session 45)."""
    zoomed = tmp_path / "zoomed"
    zoomed.mkdir()
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:16]:
        reframe(path, zoomed / path.name, 3.0)
    report = json.loads(invoke("framing", zoomed, "--json").output)
    assert report["lower_bound"] and report["measured"]["at_limit"] >= 8 and report["crop_fraction"] == 1.0
    assert report["at_crop_1"] > 1
    # cutouts twice as wide as high: the search's limit is a smaller fraction of the longer side, found as well
    wide = tmp_path / "wide"
    wide.mkdir()
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:16]:
        with Image.open(path) as image:
            w, h = image.size
            image.crop((w // 4, h // 3, 3 * w // 4, 2 * h // 3 - 1)).resize((424, 212)).save(wide / path.name)
    report = json.loads(invoke("framing", wide, "--json").output)
    assert report["lower_bound"] and report["measured"]["at_limit"] >= 8
    text = CliRunner().invoke(cli, ["framing", str(zoomed)])
    assert text.exit_code == 0 and "No centre crop matches the training scale" in text.output
    assert "or more" in text.output and "limit of the search" in text.output


def test_framing_cautions_when_few_galaxies_were_measured(tmp_path):
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:5]:
        (tmp_path / path.name).symlink_to(path)
    text = invoke("framing", tmp_path)
    assert text.exit_code == 0 and "Only 5 galaxies measured: a median of so few is uncertain" in text.output


def test_framing_refuses_a_negative_sample():
    text = CliRunner().invoke(cli, ["framing", str(EXAMPLES), "--sample", "-1"])
    assert text.exit_code == 2 and "Invalid value for '--sample'" in text.output


def test_framing_says_why_nothing_was_measured(tmp_path):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    text = invoke("framing", tmp_path / "empty")
    assert text.exit_code == 2 and f"no images found in {tmp_path / 'empty'}" in text.output

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpeg", "b.jpeg"):
        (broken / name).write_bytes(b"not a jpeg")
    text = invoke("framing", broken)
    assert text.exit_code == 2 and "none of the 2 cutouts could be read, e.g. " in text.output
    assert "a.jpeg: not a JPEG or PNG" in text.output and "above the noise" not in text.output
    text = invoke("classify", broken, "-o", tmp_path / "c.csv", "--crop-fraction", "auto")  # classify says the same
    assert text.exit_code == 2 and "--crop-fraction auto: none of the 2 cutouts could be read, e.g. " in text.output

    from astropy.io import fits

    (tmp_path / "fits").mkdir()
    fits.PrimaryHDU(_disk(8.0, side=64)[..., 0].astype(np.float32)).writeto(tmp_path / "fits" / "g.fits")
    text = invoke("framing", tmp_path / "fits", "--hdu", "NOPE")
    assert text.exit_code == 2 and "the cutout could not be read: " in text.output
    assert "g.fits: has no HDU 'NOPE'" in text.output

    Image.new("RGB", (64, 64), (20, 20, 20)).save(broken / "c.png")  # readable, but no galaxy
    text = invoke("framing", broken)
    assert text.exit_code == 2
    assert ("none of the 1 readable cutouts shows a galaxy above the noise near the centre; 2 more could not be "
            "read, e.g. ") in text.output and "a.jpeg: not a JPEG or PNG" in text.output
