"""The `classify --ray` output folder, built without a cluster (the shard classifier is a plain
class): only the parts sit at its top level, so pyarrow, pandas and astropy read exactly the
catalog; and the command line reruns into the folder it wrote."""

import csv
import shutil
import time

import numpy as np
import pytest
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.config import ClassifyConfig
from tests.conftest import EXAMPLES


@pytest.fixture
def survey(tmp_path):
    folder = tmp_path / "survey"
    folder.mkdir()
    for f in sorted(EXAMPLES.glob("*.jpeg"))[:9]:
        shutil.copy(f, folder)
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def _errors(path):
    with open(path, newline="") as fh:
        return sorted(tuple(r.values()) for r in csv.DictReader(fh))


def test_ray_folder_reads_as_the_single_machine_catalog(survey, tmp_path, default_model):
    import pandas
    import pyarrow.parquet as pq
    from astropy.table import Table, vstack

    from engine.distributed import ShardClassifier, write_manifest, write_shards
    from engine.run import classify
    from galaxy.catalog.write import errors_path

    out = tmp_path / "parts"
    config = ClassifyConfig((str(survey),), str(out), backend="onnxruntime", decoder="reference", progress=False)
    shards = write_shards(config, out, 4)
    classifier = ShardClassifier(config, str(default_model[0]), str(out))
    for shard in shards:
        classifier.classify_shard(shard.index, shard.path)
    manifest = write_manifest(out, shards, {"rows": 9, "errors": 1}, 0, 1, time.perf_counter())
    single = tmp_path / "single.parquet"
    classify(ClassifyConfig((str(survey),), str(single), backend="onnxruntime", decoder="reference", progress=False))

    expected = pq.read_table(single)
    for table in (pq.read_table(out).to_pandas(), pandas.read_parquet(out),
                  vstack([Table.read(out / name) for name in manifest["parts"]])):
        assert len(table) == expected.num_rows == 9
        for column in ("id", "path", "label"):
            assert [str(v) for v in table[column]] == expected.column(column).to_pylist()
        np.testing.assert_allclose(np.asarray(table["p_spiral"]), expected.column("p_spiral").to_numpy(), atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["_galaxy", *manifest["parts"]]
    assert _errors(errors_path(out)) == _errors(errors_path(single)) != []


def test_ray_reruns_into_the_folder_it_wrote(survey, tmp_path, monkeypatch):
    outputs = []

    def fake_classify_on_ray(config, address, shard_size, actors):
        outputs.append(config.output)
        return {"rows": 9, "parts": ["part-000000.parquet"], "shards_resumed": 1, "failed": 0, "actors": 1,
                "seconds": 0.1}

    monkeypatch.setattr("engine.distributed.classify_on_ray", fake_classify_on_ray)
    out = tmp_path / "parts"
    out.mkdir()  # as after a first run
    result = CliRunner().invoke(cli, ["classify", str(survey), "-o", str(out), "-q", "--ray"])
    assert result.exit_code == 0, result.output
    assert outputs == [str(out)]


def test_a_folder_as_output_without_ray_is_a_usage_error(survey, tmp_path):
    result = CliRunner().invoke(cli, ["classify", str(survey), "-o", str(tmp_path), "-q"])
    assert result.exit_code == 2
    assert f"output {tmp_path} is a folder" in result.output and "--ray" in result.output
