"""Ray: the distributed catalog equals the single-machine one row for row, errors included, after
an actor is killed mid-run and after a resumed rerun. A local Ray cluster is started in the test."""

import csv
import importlib.util
import os
import shutil
from dataclasses import replace

import pytest

from galaxy.config import ClassifyConfig
from tests.conftest import EXAMPLES

pytestmark = [pytest.mark.ray, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="Ray is not installed (pip install 'galaxy-engine[ray]')")]


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """Real cutouts, a broken file, and the same file name in two folders."""
    root = tmp_path_factory.mktemp("survey")
    files = sorted(EXAMPLES.glob("*.jpeg"))[:20]
    for f in files:
        shutil.copy(f, root)
    (root / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "empty.png").write_bytes(b"")
    (root / "again").mkdir()
    shutil.copy(files[0], root / "again")
    from tests.galaxy.test_sky_columns import _fits_cutouts

    _fits_cutouts(root / "fits", n_files=2)  # ra/dec columns from their WCS, in some shards only
    return root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    from engine.ray_actor import CRASH_ONCE_ENV

    marker = tmp_path_factory.mktemp("fault") / "crashed"
    os.environ[CRASH_ONCE_ENV] = f"1:{marker}"  # the actor holding shard 1 dies once; workers inherit this
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield marker
    ray.shutdown()
    os.environ.pop(CRASH_ONCE_ENV, None)


def _single(survey, out):
    from engine.run import classify

    config = ClassifyConfig((str(survey),), str(out), backend="onnxruntime", decoder="reference", progress=False)
    classify(config)
    with open(out, newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    with open(out.with_name(out.name + ".errors.csv"), newline="") as fh:
        errors = sorted(tuple(r.values()) for r in csv.DictReader(fh))
    return rows, errors


def _distributed(out):
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()  # README's line: the folder reads as exactly the catalog
    rows = {r["id"]: {"id": r["id"], "path": r["path"], "p_elliptical": f"{r['p_elliptical']:.6f}",
                      "p_spiral": f"{r['p_spiral']:.6f}", "label": r["label"],
                      **{k: "" if r[k] is None else repr(r[k]) for k in ("ra", "dec", "masked_fraction")}}
            for r in table}
    with open(out / "_galaxy" / "errors.csv", newline="") as fh:
        errors = sorted(tuple(r.values()) for r in csv.DictReader(fh))
    return rows, errors


def test_ray_catalog_equals_single_machine_after_an_actor_dies_and_after_resume(survey, cluster, tmp_path,
                                                                                default_model, monkeypatch):
    import galaxy
    from engine.distributed import classify_on_ray

    single_rows, single_errors = _single(survey, tmp_path / "single.csv")
    out = tmp_path / "ray-out"
    config = ClassifyConfig((str(survey),), str(out), backend="onnxruntime", decoder="reference", progress=False)
    manifest = galaxy.classify_on_ray([survey], out, shard_size=6, actors=2, backend="onnxruntime",
                                      decoder="reference", progress=False)  # the Python API
    assert cluster.exists()  # the fault was injected: an actor process died holding shard 1
    assert manifest["rows"] == len(single_rows) == 23 and manifest["failed"] == len(single_errors) == 2
    rows, errors = _distributed(out)
    assert rows == single_rows  # same ids (stem#2 included), paths, probabilities, labels, ra/dec
    from astropy.table import Table, vstack

    parts = vstack([Table.read(part) for part in sorted(out.glob("part-*.parquet"))])  # the README's astropy read
    assert sorted(parts["id"]) == sorted(rows)  # a renamed id is not cut to its old length
    assert sum(1 for r in rows.values() if r["ra"]) == 2
    assert errors == single_errors
    assert manifest["metadata"]["model"] == default_model[1].name and "onnxruntime" in manifest["metadata"]["backend"]

    (out / "part-000002.parquet").unlink()  # as if the run had died before this part was written
    (out / "_galaxy" / "manifest.json").unlink()
    again = classify_on_ray(replace(config, command="rerun"), None, shard_size=6, actors=2)
    assert again["shards_resumed"] == len(again["parts"]) - 1 and again["classified_now"] <= 6
    assert _distributed(out) == (single_rows, single_errors)
    from galaxy.evaluation.montage import select
    from galaxy.evaluation.report import report

    assert sum(map(len, select(out, per_row=30).values())) == 23  # montage and report read the parts folder
    page = report(out, tmp_path / "report.html").read_text()
    assert "<th>classified</th><td>23</td>" in page and "<th>could not be read</th><td>2" in page

    broken = (survey / "broken.jpeg").read_bytes()  # mended between runs: a rerun retries it, as one machine's does
    try:
        shutil.copy(sorted(EXAMPLES.glob("*.jpeg"))[0], survey / "broken.jpeg")
        mended_rows, mended_errors = _single(survey, tmp_path / "mended.csv")
        monkeypatch.chdir(survey.parent)  # the same inputs named relatively: the run goes on (it was refused,
        # first as other settings, then as "the inputs changed": the listing compared its paths as spelled)
        third = classify_on_ray(replace(config, command="rerun", inputs=(survey.name,)), None, shard_size=6, actors=2)
        assert (third["retried"], third["classified_now"], third["failed"]) == (2, 1, 1)
        assert _distributed(out) == (mended_rows, mended_errors) and len(mended_rows) == 24
    finally:
        (survey / "broken.jpeg").write_bytes(broken)
    from galaxy.errors import UsageError

    # a rerun interrupted while it rewrites parts leaves no manifest: the folder is no finished catalog
    # until it ends (the old one had stayed, and report/montage read half-merged parts as finished)
    import ray.data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    (out / "part-000001.parquet").unlink()
    monkeypatch.setattr(ray.data, "from_items", interrupted)
    with pytest.raises(KeyboardInterrupt):
        classify_on_ray(replace(config, command="rerun"), None, shard_size=6, actors=2)
    assert not (out / "_galaxy" / "manifest.json").exists()
    with pytest.raises(UsageError, match="without _galaxy/manifest.json"):
        select(out, per_row=30)
    monkeypatch.undo()

    with pytest.raises(UsageError, match="other settings.*backend"):  # a rerun continues only its own run
        classify_on_ray(replace(config, backend="torch"), None, shard_size=6, actors=2)


def test_the_command_is_quiet_and_its_rerun_resumes_into_the_folder(survey, tmp_path):
    """`galaxy classify DIR -o OUT --ray -q` twice, as a user runs it: an actor dies once, Ray's lines
    stay off the terminal, the second run resumes into OUT (once refused: 'is a directory')."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from engine.ray_actor import CRASH_ONCE_ENV

    out = tmp_path / "parts"
    env = {**os.environ, CRASH_ONCE_ENV: f"0:{tmp_path / 'crashed'}"}
    command = [sys.executable, "-m", "galaxy.cli", "classify", str(survey), "-o", str(out), "-q", "--backend",
               "onnxruntime", "--decoder", "reference", "--shard-size", "6", "--actors", "2", "--ray"]
    for _ in range(2):
        run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert run.returncode == 3, run.stderr  # the two broken files
        assert run.stdout == "" and run.stderr.splitlines() == [f"failed 2 of 25; errors in {out / '_galaxy' / 'errors.csv'}"]
    assert (tmp_path / "crashed").exists()
    assert pq.read_table(out).num_rows == 23


def test_threads_no_node_can_hold_are_refused_not_waited_for(survey, cluster, tmp_path):
    """--threads 4 on 2-CPU nodes: each actor asked for 4 CPUs and the run waited for ever, silently."""
    from engine.distributed import classify_on_ray
    from galaxy.errors import UsageError

    config = ClassifyConfig((str(survey),), str(tmp_path / "out"), threads=64, progress=False)
    with pytest.raises(UsageError, match="--threads 64: each actor holds that many CPUs, and the largest node"):
        classify_on_ray(config, None, shard_size=8)
    # refused before any shard ran: nothing of its own stays (its fingerprint refused the corrected retry's
    # other --shard-size as "started with other settings")
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="--threads 64"):
        classify_on_ray(replace(config, output=str(tmp_path / "empty")), None, shard_size=8)
    assert list((tmp_path / "empty").iterdir()) == []
    manifest = classify_on_ray(replace(config, threads=1), None, shard_size=16)
    assert manifest["rows"] == 23


def test_rows_naming_another_cutout_are_warned_of_once_over_all_shards(cluster, tmp_path, caplog):
    """The shards' off-centre rows (g1 and g2 in two shards) make the one warning of a single machine."""
    from astropy.table import Table

    from engine.distributed import classify_on_ray
    from tests.galaxy.test_sky_columns import _off_centre_lines, _survey

    survey, ra, _ = _survey(tmp_path, odd=True)
    config = ClassifyConfig((), str(tmp_path / "parts"), catalog=str(survey), keep_columns=("RA", "Dec"),
                            backend="onnxruntime", decoder="reference", progress=False)
    manifest = classify_on_ray(config, None, shard_size=2, actors=2)
    assert manifest["rows"] == 6 and manifest["failed"] == 0
    assert _off_centre_lines(caplog) == [
        "2 rows: the catalog's position is more than 5 arcsec from the cutout centre in the FITS header (largest "
        "1.12 deg: ids g1, g2): the classification is of the object at the cutout centre; check the catalog's "
        "positions and its path column",
        "1 row: the catalog's position could not be compared with the cutout centre (a missing value, a Dec beyond "
        "90, or a unit that is not an angle)"]
    table = Table.read(tmp_path / "parts" / "part-000000.parquet")
    assert list(table["RA"]) == ra[:2]  # the catalog's values (text here: g4's is sexagesimal)
