"""The `classify --ray` output folder, built without a cluster (the shard classifier is a plain
class): only the parts sit at its top level, so pyarrow, pandas and astropy read exactly the
catalog; and the command line reruns into the folder it wrote."""

import csv
import os
import dataclasses
import re
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


def _classify_shards(config, out, default_model, shard_size):
    """The parts a `--ray` run writes, by the shard classifier run in this process; (shards, classifier)."""
    from engine.ray_actor import ShardClassifier
    from engine.ray_shards import write_shards

    shards = write_shards(config, out, shard_size)
    classifier = ShardClassifier(config, str(default_model[0]), str(out))
    for shard in shards:
        classifier.classify_shard(shard.index, shard.path)
    return shards, classifier


def _classified_parts(survey, out, default_model, shard_size):
    config = ClassifyConfig((str(survey),), str(out), backend="onnxruntime", decoder="reference", progress=False)
    return out, _classify_shards(config, out, default_model, shard_size)[0]


def test_ray_folder_reads_as_the_single_machine_catalog(survey, tmp_path, default_model):
    import pandas
    import pyarrow.parquet as pq
    from astropy.table import Table, vstack

    from engine.ray_manifest import write_manifest
    from engine.run import classify
    from galaxy.catalog.write import errors_path

    out, shards = _classified_parts(survey, tmp_path / "parts", default_model, 4)
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
    from galaxy.evaluation.report import report

    page = report(out, tmp_path / "r.html").read_text()  # points at the folder's errors file, inside it
    assert "(see <code>parts/_galaxy/errors.csv</code>)" in page


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


def test_a_ray_reruns_summary_says_what_it_classified_now(survey, tmp_path, monkeypatch):
    """It said "classified 57 in 8 parts (8 resumed, 4 failed inputs retried)" when one input was
    classified: 57 was the whole catalog."""
    def fake_classify_on_ray(config, address, shard_size, actors):
        return {"rows": 57, "classified_now": 1, "retried": 4, "parts": ["p"] * 8, "shards_resumed": 8, "failed": 3,
                "actors": 2, "seconds": 1.5}

    monkeypatch.setattr("engine.distributed.classify_on_ray", fake_classify_on_ray)
    out = tmp_path / "parts"
    result = CliRunner().invoke(cli, ["classify", str(survey), "-o", str(out), "--ray"])
    assert result.exit_code == 3
    assert (f"classified 1 (and 56 from an earlier run) in 8 parts (8 shards resumed, 4 failed inputs retried), "
            f"failed 3, 2 actors, 1.5 s -> {out}") in result.output


def test_a_folder_as_output_without_ray_is_a_usage_error(survey, tmp_path):
    result = CliRunner().invoke(cli, ["classify", str(survey), "-o", str(tmp_path), "-q"])
    assert result.exit_code == 2
    assert f"output {tmp_path} is a folder" in result.output and "--ray" in result.output


def test_a_part_written_before_the_id_column_merges(survey, tmp_path, default_model):
    """A run resumed by this version over parts an earlier one wrote: their 3-column error rows
    (path, stage, reason) merge under the 4-column header, the id being the file's stem."""
    from engine.ray_manifest import write_manifest
    from engine.ray_parts import part_errors as _part_errors
    from galaxy.catalog.write import errors_path

    out, shards = _classified_parts(survey, tmp_path / "parts", default_model, 2)
    for shard in shards:  # rewrite every part's errors as the earlier version wrote them
        part = _part_errors(out, shard.index)
        with open(part, newline="") as fh:
            rows = [row[1:4] for row in csv.reader(fh)]
        with open(part, "w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    manifest = write_manifest(out, shards, {"rows": 0, "errors": 0}, len(shards), 1, time.perf_counter())
    with open(errors_path(out), newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert manifest["failed"] == 1
    assert row["id"] == "broken" and row["path"].endswith("broken.jpeg") and row["reason"]


def test_a_cpu_actor_runs_on_the_cpus_it_holds():
    """An actor holds `--threads` CPUs (1 by default): it infers and decodes on that many threads,
    not one per core of its node each (N actors x N threads); on GPUs the config is left alone."""
    from engine.distributed import actor_config

    default = ClassifyConfig(("in",), "out")
    assert (actor_config(default, 0).threads, actor_config(default, 0).workers) == (1, 1)
    four = ClassifyConfig(("in",), "out", threads=4)
    assert (actor_config(four, 0).threads, actor_config(four, 0).workers) == (4, 4)
    assert actor_config(ClassifyConfig(("in",), "out", threads=2, workers=3), 0).workers == 3
    assert actor_config(default, 1) == default


def test_a_ray_output_folder_is_only_ever_emptied_of_what_a_ray_run_wrote(survey, tmp_path):
    """--overwrite deleted whatever folder -o named: the user's files, the inputs themselves; and a
    second run could empty a folder another run was writing."""
    from engine.ray_parts import prepare_out_dir
    from galaxy.errors import UsageError

    with pytest.raises(UsageError, match="holds files a --ray run did not write"):
        prepare_out_dir(survey, overwrite=True)  # -o naming the input folder
    assert len(list(survey.iterdir())) == 10
    out = tmp_path / "run.v2"  # a dot in a folder's name is no file suffix
    prepare_out_dir(out, overwrite=False).close()
    (out / "part-000000.parquet").write_bytes(b"x")
    (out / "_galaxy" / "manifest.json").write_text("{}")
    first = prepare_out_dir(out, overwrite=True)
    assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))] == ["_galaxy", "_galaxy/lock"]
    # a second run on the folder while the first holds it: refused, and the first one's part is kept
    (out / "part-000000.parquet").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"another galaxy classify --ray is writing .*run\.v2 \(lock"):
        prepare_out_dir(out, overwrite=True)
    assert (out / "part-000000.parquet").exists()
    first.close()
    prepare_out_dir(out, overwrite=True).close()
    assert not (out / "part-000000.parquet").exists()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"e\.g\. notes\.txt"):
        prepare_out_dir(out, overwrite=True)
    with pytest.raises(UsageError, match="not a .parquet file"):
        prepare_out_dir(tmp_path / "c.parquet", overwrite=False)
    with pytest.raises(UsageError, match="is a file"):
        prepare_out_dir(out / "notes.txt", overwrite=False)


def test_a_ray_rerun_refuses_inputs_that_changed(survey, tmp_path):
    """A rerun reused the first run's shards and silently left out images added since."""
    from engine.ray_shards import write_shards
    from galaxy.errors import UsageError

    config = ClassifyConfig((str(survey),), str(tmp_path / "out"))
    first = write_shards(config, tmp_path / "out", 4)
    assert len(first) == 3 and len(write_shards(config, tmp_path / "out", 4)) == 3  # same inputs: same shards
    shutil.copy(min(EXAMPLES.glob("*.jpeg")), survey / "added.jpeg")
    with pytest.raises(UsageError, match=r"the inputs changed .*\(10 listed then, 11 now\)"):
        write_shards(config, tmp_path / "out", 4)


def test_shards_of_a_listing_killed_before_its_record_are_never_classified(survey, tmp_path, default_model):
    """A run killed while it listed left its shard files (33 of a wrong catalog); the corrected rerun wrote
    shards 0-1 over them, and every rerun after it globbed all 33 and classified the stale ones (330 rows
    from a catalog of 20). A part of a stale shard (as such a rerun wrote it) is no row of the catalog."""
    import pyarrow.parquet as pq

    from engine.ray_manifest import write_manifest
    from engine.ray_parts import part_errors, part_path
    from engine.ray_shards import write_shards
    from engine.run import classify

    files = sorted(survey.glob("*.jpeg"))
    table, out = tmp_path / "c.csv", tmp_path / "out"
    table.write_text("file\n" + "".join(f"{f}\n" for f in files))  # the wrong catalog: 10 rows, 5 shards
    config = ClassifyConfig((), str(out), catalog=str(table), backend="onnxruntime", decoder="reference",
                            progress=False)
    _classify_shards(config, out, default_model, 2)
    stale = {path: path.read_bytes() for path in sorted(out.rglob("*-00000[2-4]*"))}
    assert len(stale) == 9  # shards 2-4, their parts and errors
    (out / "_galaxy" / "shards" / "_complete").unlink()  # killed before the listing's record
    table.write_text("file\n" + "".join(f"{f}\n" for f in files[:3]))  # corrected: 3 rows, 2 shards
    shards = write_shards(config, out, 2)
    assert len(shards) == 2 and not any(path.exists() for path in stale)
    for path, data in stale.items():  # what a version before left: stale shards beside the record, classified
        path.write_bytes(data)
    shards, classifier = _classify_shards(config, out, default_model, 2)
    assert [s.index for s in shards] == [0, 1] and not any(path.exists() for path in stale)
    assert not part_path(out, 2).exists() and not part_errors(out, 2).exists()
    write_manifest(out, shards, {"rows": 3, "errors": 0}, 0, 1, time.perf_counter())
    single = tmp_path / "single.parquet"
    classify(dataclasses.replace(config, output=str(single)))
    assert pq.read_table(out).column("path").to_pylist() == pq.read_table(single).column("path").to_pylist()
    assert pq.read_table(out).num_rows == 3


def test_kept_columns_get_their_kind_from_all_parts_as_on_one_machine(tmp_path, default_model):
    """Each part decided a kept column's kind alone, then text won the merge: numbers parsed in one
    part were cast back to text ("1.50" -> "1.5"), a column empty in one part became text."""
    import pyarrow.parquet as pq

    from engine.ray_actor import ShardClassifier
    from engine.ray_parts import part_path as _part_path
    from engine.ray_parts import finalize_parts
    from engine.ray_shards import write_shards
    from engine.run import classify

    files = sorted(EXAMPLES.glob("*.jpeg"))[:8]
    z = ["1.50", "2", "1e3", "007", "n/a", "5", "6", "7"]  # text in the second shard: the column is text
    w = ["", "", "", "", "3.25", "", "1", ""]  # empty in the first shard, numbers in the second
    table = tmp_path / "c.csv"
    table.write_text("file,z,w\n" + "".join(f"{f},{a},{b}\n" for f, a, b in zip(files, z, w)))
    config = ClassifyConfig((), str(tmp_path / "out"), catalog=str(table), keep_columns=("z", "w"),
                            backend="onnxruntime", decoder="reference", progress=False)
    shards = write_shards(config, tmp_path / "out", 4)
    classifier = ShardClassifier(config, str(default_model[0]), str(tmp_path / "out"))
    for shard in shards:
        classifier.classify_shard(shard.index, shard.path)
    finalize_parts([_part_path(tmp_path / "out", shard.index) for shard in shards])
    single = tmp_path / "single.parquet"
    classify(dataclasses.replace(config, output=str(single)))
    ray, one = pq.read_table(tmp_path / "out"), pq.read_table(single)
    for name in ("z", "w"):
        assert ray.schema.field(name).type == one.schema.field(name).type, name
        assert ray.column(name).to_pylist() == one.column(name).to_pylist(), name
    assert ray.column("z").to_pylist()[:4] == ["1.50", "2", "1e3", "007"]
    assert ray.column("w").to_pylist()[4] == 3.25


@pytest.mark.parametrize("shard_size", [2, 3, 10])
def test_failed_inputs_take_their_ids_in_listing_order_as_on_one_machine(tmp_path, default_model, shard_size):
    """A --ray run took ids over the parts' rows only and wrote each failure's id as given: a broken
    file listed between two of the same id kept "g" beside the row "g", where one machine writes
    g, g#2 (the failure), g#3."""
    import pyarrow.parquet as pq

    from engine.ray_manifest import write_manifest
    from engine.run import classify
    from galaxy.catalog.write import errors_path

    good = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    table = tmp_path / "c.csv"
    table.write_text("file,objid\n" + "".join(f"{f},{i}\n" for f, i in [(good[0], "g"), (broken, "g"), (good[1], "g"),
                                                                      (broken, "h"), (good[2], "h")]))
    config = ClassifyConfig((), str(tmp_path / "out"), catalog=str(table), id_column="objid", backend="onnxruntime",
                            decoder="reference", progress=False)
    out = tmp_path / "out"
    shards, _ = _classify_shards(config, out, default_model, shard_size)
    write_manifest(out, shards, {"rows": 3, "errors": 2}, 0, 1, time.perf_counter())
    single = tmp_path / "single.parquet"
    classify(dataclasses.replace(config, output=str(single)))
    assert pq.read_table(out).column("id").to_pylist() == pq.read_table(single).column("id").to_pylist() == [
        "g", "g#3", "h#2"]
    assert _errors(errors_path(out)) == _errors(errors_path(single))
    assert sorted(row[0] for row in _errors(errors_path(out))) == ["g#2", "h"]


@pytest.mark.ray
@pytest.mark.parametrize("change, match", [
    ({"shard_size": 0}, "--shard-size 0"), ({"actors": -1}, "--actors -1"),
    ({"output_format": "csv"}, "--format csv: with --ray"), ({"decoder": "dali-gpux"}, "unknown decoder"),
    ({"batch_size": 0}, "--batch-size 0"), ({"backend": "tensorrtx"}, "unknown backend")])
def test_ray_options_that_cannot_work_are_usage_errors_before_any_cluster(survey, tmp_path, change, match):
    """--shard-size 0 put every input in one shard; --actors -1, a bad decoder or batch size gave
    tracebacks (from each actor, ~180 lines); --format csv was ignored."""
    pytest.importorskip("ray")
    from engine.distributed import classify_on_ray
    from galaxy.errors import UsageError

    sizes = {k: change.pop(k) for k in ("shard_size", "actors") if k in change}
    config = ClassifyConfig((str(survey),), str(tmp_path / "out"), progress=False, **change)
    with pytest.raises(UsageError, match=match):
        classify_on_ray(config, None, sizes.get("shard_size", 8), sizes.get("actors"))
    assert not (tmp_path / "out").exists()


def test_only_numbered_parts_are_a_ray_runs(tmp_path):
    """A dataset's part-0.parquet (pyarrow's naming) was taken for a part of this run: read into the
    catalog, and deleted by --overwrite; so was a folder named part-foo.parquet."""
    from engine.ray_parts import _written_by_ray

    (tmp_path / "part-000001.parquet").write_bytes(b"x")
    (tmp_path / ".part-000001.1234.tmp").write_bytes(b"x")
    (tmp_path / ".part-000001.parquet.1234.tmp").write_bytes(b"x")
    (tmp_path / "part-0.parquet").write_bytes(b"x")
    (tmp_path / "part-000002.parquet").mkdir()
    ours = sorted(p.name for p in tmp_path.iterdir() if _written_by_ray(p))
    assert ours == [".part-000001.1234.tmp", ".part-000001.parquet.1234.tmp", "part-000001.parquet"]


def _ray_and_single(config, tmp_path, default_model, units=None):
    import pyarrow.parquet as pq

    from engine.ray_actor import ShardClassifier
    from engine.ray_manifest import write_manifest
    from engine.ray_shards import write_shards
    from engine.run import classify

    out = tmp_path / "out"
    shards = write_shards(config, out, 1)
    classifier = ShardClassifier(config, str(default_model[0]), str(out), units=units)
    for shard in shards:
        classifier.classify_shard(shard.index, shard.path)
    write_manifest(out, shards, {"rows": 2, "errors": 0}, 0, 1, time.perf_counter(), units)
    single = tmp_path / "single.parquet"
    classify(dataclasses.replace(config, output=str(single)))
    assert pq.read_table(out).column("id").to_pylist() == pq.read_table(single).column("id").to_pylist()
    return out


def test_file_names_that_are_not_utf8_go_through_the_shards(tmp_path, default_model):
    """One non-UTF-8 file name ended the whole --ray run: pyarrow cannot hold it as text."""
    folder = tmp_path / "in"
    folder.mkdir()
    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    shutil.copy(files[0], os.fsdecode(bytes(folder) + b"/gal\xff\xfe.jpeg"))
    shutil.copy(files[1], folder / "b.jpeg")
    config = ClassifyConfig((str(folder),), str(tmp_path / "out"), backend="onnxruntime", decoder="reference",
                            progress=False)
    _ray_and_single(config, tmp_path, default_model)


def test_kept_columns_keep_their_units_in_the_parts(tmp_path, default_model):
    """The parts lost the units of kept columns (mag) that one machine's catalog keeps."""
    from astropy.table import Table

    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    table = Table({"file": [str(f) for f in files], "mag": [17.5, 18.25]})
    table["mag"].unit = "mag"
    table.write(tmp_path / "cat.ecsv")
    config = ClassifyConfig((), str(tmp_path / "out"), catalog=str(tmp_path / "cat.ecsv"), keep_columns=("mag",),
                            backend="onnxruntime", decoder="reference", progress=False)
    from galaxy.catalog.column_notes import column_units

    assert column_units(str(tmp_path / "cat.ecsv"), ("mag",)) == {"mag": "mag"}  # what the driver hands the actors
    out = _ray_and_single(config, tmp_path, default_model, {"mag": "mag"})
    for part in sorted(out.glob("part-*.parquet")):
        assert str(Table.read(part)["mag"].unit) == "mag"


def test_ctrl_c_of_a_ray_run_says_how_to_finish_it(survey, tmp_path, monkeypatch):
    """It said only "interrupted (Ctrl-C)", though the folder then reads with ids not yet unique."""
    import engine.distributed

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.distributed, "classify_on_ray", interrupted)
    result = CliRunner().invoke(cli, ["classify", str(survey), "-o", str(tmp_path / "out"), "--ray", "-q"])
    assert result.exit_code == 130 and "rerun the same command to finish" in result.output


def _retry_catalog(tmp_path):
    """A catalog whose broken files sit between good ones, two of them under one id."""
    good = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    mended, broken = tmp_path / "mended.jpeg", tmp_path / "broken.jpeg"
    for path in (mended, broken):
        path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    table = tmp_path / "c.csv"
    table.write_text("file,objid\n" + "".join(f"{f},{i}\n" for f, i in [
        (good[0], "g"), (mended, "g"), (good[1], "g"), (broken, "h"), (good[2], "h"), (mended, "m")]))
    config = ClassifyConfig((), str(tmp_path / "out"), catalog=str(table), id_column="objid", backend="onnxruntime",
                            decoder="reference", progress=False)
    return config, good, mended


@pytest.mark.parametrize("shard_size", [2, 4, 10])
def test_a_rerun_retries_the_failed_inputs_as_one_machine_does(tmp_path, default_model, shard_size):
    """A --ray rerun skipped every shard with a part, so a file mended after the first run stayed
    failed (one machine's rerun retries it); its row now takes its place and id as if it never failed."""
    import pyarrow.parquet as pq

    from engine.ray_manifest import write_manifest
    from engine.ray_parts import failed_places, part_path
    from engine.run import classify
    from galaxy.catalog.write import errors_path

    config, good, mended = _retry_catalog(tmp_path)
    out = tmp_path / "out"
    shards, classifier = _classify_shards(config, out, default_model, shard_size)
    write_manifest(out, shards, {"rows": 3, "errors": 3}, 0, 1, time.perf_counter())
    assert pq.read_table(out).column("id").to_pylist() == ["g", "g#3", "h#2"]
    assert sorted(row[0] for row in _errors(errors_path(out))) == ["g#2", "h", "m"]

    shutil.copy(good[0], mended)  # mended between the runs; broken.jpeg stays broken
    done = {"rows": 0, "errors": 0}
    for shard in shards:
        if failed_places(out, shard.index):
            rows, errors, *_ = classifier.retry_failed(shard.index, shard.path)
            done["rows"] += rows
            done["errors"] += errors
    assert done == {"rows": 2, "errors": 1}
    assert not list(out.glob(".*")) and not list((out / "_galaxy").glob("*.next.csv"))
    write_manifest(out, shards, done, len(shards), 1, time.perf_counter())
    single = tmp_path / "single.parquet"
    classify(dataclasses.replace(config, output=str(single)))
    ray, one = pq.read_table(out), pq.read_table(single)
    assert ray.column("id").to_pylist() == one.column("id").to_pylist() == ["g", "g#2", "g#3", "h#2", "m"]
    assert ray.column("path").to_pylist() == one.column("path").to_pylist()
    np.testing.assert_allclose(ray.column("p_spiral").to_numpy(), one.column("p_spiral").to_numpy(), atol=1e-5)
    assert _errors(errors_path(out)) == _errors(errors_path(single))
    assert [row[0] for row in _errors(errors_path(out))] == ["h"]
    assert sum(pq.ParquetFile(part_path(out, s.index)).metadata.num_rows for s in shards) == 5
    assert all(classifier.retry_failed(s.index, s.path)[0] == 0 for s in shards)  # broken.jpeg: still failing


def test_a_retry_killed_between_its_renames_is_finished_or_undone(tmp_path, default_model):
    """The part and its errors are two files: a retry killed after the part was replaced must not
    retry the recovered input again (two rows), and one killed before must not lose it."""
    import pyarrow.parquet as pq

    from engine.ray_parts import failed_places, part_errors, part_path, pending_errors, settle_retry

    config, good, mended = _retry_catalog(tmp_path)
    out = tmp_path / "out"
    (shard,), classifier = _classify_shards(config, out, default_model, 10)
    part, errors, pending = part_path(out, 0), part_errors(out, 0), pending_errors(out, 0)
    before = part.read_bytes(), errors.read_bytes()
    assert failed_places(out, 0) == [1, 3, 5]
    shutil.copy(good[0], mended)
    assert classifier.retry_failed(shard.index, shard.path)[:2] == (2, 1)
    after = part.read_bytes(), errors.read_bytes()
    assert failed_places(out, 0) == [3]

    part.write_bytes(after[0])  # killed after the part was replaced, before the errors were
    errors.write_bytes(before[1])
    pending.write_bytes(after[1])
    settle_retry(out, 0, 6)
    assert not pending.exists() and errors.read_bytes() == after[1] and failed_places(out, 0) == [3]

    part.write_bytes(before[0])  # killed before the part was replaced
    errors.write_bytes(before[1])
    pending.write_bytes(after[1])
    assert classifier.retry_failed(shard.index, shard.path)[:2] == (2, 1)  # undone, then retried again
    assert not pending.exists() and pq.read_table(part).num_rows == 5 and failed_places(out, 0) == [3]


def test_a_ray_merge_keeps_the_column_descriptions_of_its_parts(tmp_path, default_model):
    """finalize_parts rebuilds each rewritten part's table_meta_yaml: the catalog's own descriptions
    and a kept column's (from the input catalog) stay, and a part an earlier version wrote without
    them gets those of the other parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.table import Table

    from engine.ray_actor import ShardClassifier
    from engine.ray_parts import finalize_parts, part_path as _part_path
    from engine.ray_shards import write_shards
    from galaxy.catalog.column_notes import column_descriptions

    files = [str(f) for f in sorted(EXAMPLES.glob("*.jpeg"))[:4]]
    catalog = Table({"file": files, "z": [0.1, 0.2, 0.3, 0.4]})
    catalog["z"].description = "spectroscopic redshift"
    catalog.write(tmp_path / "in.ecsv")
    out = tmp_path / "out"
    config = ClassifyConfig((), str(out), catalog=str(tmp_path / "in.ecsv"), keep_columns=("z",),
                            backend="onnxruntime", decoder="reference", progress=False)
    shards = write_shards(config, out, 2)
    classifier = ShardClassifier(config, str(default_model[0]), str(out),
                                 descriptions=column_descriptions(config.catalog, config.keep_columns))
    for shard in shards:
        classifier.classify_shard(shard.index, shard.path)
    parts = [_part_path(out, shard.index) for shard in shards]

    def as_an_earlier_version_wrote_it(part):  # no field metadata, and no description in table_meta_yaml
        table = pq.read_table(part)
        metadata = {k: re.sub(rb", description: [^}]*}", b"}", v) for k, v in table.schema.metadata.items()}
        pq.write_table(table.cast(pa.schema([pa.field(f.name, f.type) for f in table.schema]))
                       .replace_schema_metadata(metadata), part)

    as_an_earlier_version_wrote_it(parts[1])
    finalize_parts(parts)  # every part rewritten: z, text in each part, is a number column
    as_an_earlier_version_wrote_it(parts[1])
    finalize_parts(parts)  # now only the descriptions are missing from the second part
    for part in parts:
        table = Table.read(part)
        assert table["z"].dtype == np.float64 and list(table["id"])
        assert table["z"].description == "spectroscopic redshift", part
        assert table["p_spiral"].description == "calibrated probability of class spiral", part
        assert pq.read_schema(part).field("z").metadata == {b"description": b"spectroscopic redshift"}


def test_kept_columns_of_a_retried_part_keep_their_text_kind_and_unit(tmp_path, default_model):
    """A finalised part holds kept columns as numbers; the retry cast them back to text with pyarrow,
    so 1.0 became "1" (then int64, its unit lost), "0.10" became "0.1", a missing value None."""
    import pyarrow.parquet as pq
    from astropy.table import Table

    from engine.ray_manifest import write_manifest
    from engine.ray_parts import failed_places
    from engine.run import classify

    good = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    mended = tmp_path / "mended.jpeg"
    mended.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    files = [good[0], mended, good[1], good[2]]
    catalog = Table({"file": [str(f) for f in files], "z": ["1.0", "2.0", "", "3.0"], "w": ["0.10", "n/a", "0.20", ""]})
    catalog["z"].unit = "km / s"
    catalog.write(tmp_path / "c.ecsv")
    config = ClassifyConfig((), str(tmp_path / "out"), catalog=str(tmp_path / "c.ecsv"), keep_columns=("z", "w"),
                            backend="onnxruntime", decoder="reference", progress=False)
    out = tmp_path / "out"
    shards, classifier = _classify_shards(config, out, default_model, 10)
    classifier.units = {"z": "km / s"}
    write_manifest(out, shards, {"rows": 3, "errors": 1}, 0, 1, time.perf_counter(), {"z": "km / s"})
    assert pq.read_table(out).schema.field("z").type == "double"  # finalised: numbers
    shutil.copy(good[0], mended)
    assert failed_places(out, 0) == [1] and classifier.retry_failed(0, shards[0].path)[:2] == (1, 0)
    write_manifest(out, shards, {"rows": 1, "errors": 0}, 1, 1, time.perf_counter(), {"z": "km / s"})
    single = tmp_path / "single.parquet"
    classify(dataclasses.replace(config, output=str(single)))
    ray, one = Table.read(out / "part-000000.parquet"), Table.read(single)
    for name in ("z", "w"):
        assert ray[name].dtype == one[name].dtype and str(ray[name].unit) == str(one[name].unit), name
        np.testing.assert_array_equal(np.asarray(ray[name]), np.asarray(one[name]))  # NaN for the missing z
    assert list(ray["w"]) == ["0.10", "n/a", "0.20", ""] and str(ray["z"].unit) == "km / s"


def test_a_retried_input_that_makes_a_kept_column_text_keeps_the_catalogs_spelling_in_every_part(tmp_path,
                                                                                                  default_model):
    """A retried input whose kept value is no number turned the column to text: the other parts, finalised as
    float64 or bool, were cast back by pyarrow (z 0.1, 3 for "0.10", "3.0"; flag false for "False"), and a
    column whose retried value made it float kept whole numbers; the catalog after the retry is the one an
    uninterrupted run (and one machine) gives, value for value and kind for kind."""
    import pyarrow.parquet as pq

    from engine.ray_manifest import write_manifest
    from engine.ray_parts import failed_places
    from engine.run import classify

    good = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    mended = tmp_path / "mended.jpeg"
    mended.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows = [(good[0], "0.10", "False", "1", "7"), (mended, "abc", "maybe", "2.5", "x"),
            (good[1], "2.50", "True", "3", "8"), (good[2], "3.0", "False", "4", "9")]
    table = tmp_path / "c.csv"
    table.write_text("file,z,flag,w,k\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    config = ClassifyConfig((), str(tmp_path / "out"), catalog=str(table), keep_columns=("z", "flag", "w", "k"),
                            backend="onnxruntime", decoder="reference", progress=False)
    out = tmp_path / "out"
    shards, classifier = _classify_shards(config, out, default_model, 2)
    write_manifest(out, shards, {"rows": 3, "errors": 1}, 0, 1, time.perf_counter())
    first = pq.read_table(out)
    assert [str(first.schema.field(name).type) for name in ("z", "flag", "w", "k")] == ["double", "bool", "int64",
                                                                                       "int64"]
    shutil.copy(good[0], mended)
    assert failed_places(out, 0) == [1] and classifier.retry_failed(0, shards[0].path)[:2] == (1, 0)
    write_manifest(out, shards, {"rows": 1, "errors": 0}, 2, 1, time.perf_counter())
    single = tmp_path / "single.parquet"
    classify(dataclasses.replace(config, output=str(single)))
    ray, one = pq.read_table(out), pq.read_table(single)
    for name in ("z", "flag", "w", "k"):
        assert ray.schema.field(name).type == one.schema.field(name).type, name
        assert ray.column(name).to_pylist() == one.column(name).to_pylist(), name
    assert ray.column("z").to_pylist() == ["0.10", "abc", "2.50", "3.0"]
    assert ray.column("flag").to_pylist() == ["False", "maybe", "True", "False"]
    assert ray.column("w").to_pylist() == [1.0, 2.5, 3.0, 4.0] and ray.column("k").to_pylist() == ["7", "x", "8", "9"]


def test_fits_inputs_without_a_position_give_number_ra_dec_columns_as_on_one_machine(survey, tmp_path, default_model):
    """One machine writes ra/dec as float columns (NaN) for FITS inputs whose headers give no position;
    the --ray parts had text columns of "" (review of --ray, session 40)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.io import fits

    from engine.ray_manifest import write_manifest
    from engine.run import classify
    from galaxy.io.images import read_raster

    for k, jpeg in enumerate(sorted(EXAMPLES.glob("*.jpeg"))[:2]):  # band cubes with no WCS nor RA/DEC keys
        cube = np.moveaxis(read_raster(jpeg), -1, 0)[:, ::-1].astype(np.float32)
        fits.PrimaryHDU(cube).writeto(survey / f"nopos{k}.fits")
    out, shards = _classified_parts(survey, tmp_path / "parts", default_model, 4)
    write_manifest(out, shards, {"rows": 11, "errors": 1}, 0, 1, time.perf_counter())
    single = tmp_path / "single.parquet"
    classify(ClassifyConfig((str(survey),), str(single), backend="onnxruntime", decoder="reference", progress=False))
    expected, table = pq.read_table(single), pq.read_table(out)
    assert expected.schema.field("ra").type == table.schema.field("ra").type == pa.float64()
    assert table.column("dec").null_count == table.num_rows == 11


@pytest.mark.ray
@pytest.mark.parametrize("address, match", [
    ("127.0.0.1:1", "cannot reach a Ray cluster \\(nothing answers at 127.0.0.1:1: .*\\): start one with `ray start "
                    "--head`"),
    ("nonsense", "not an address of a Ray cluster")])
def test_an_address_where_no_cluster_listens_is_one_line_not_a_wait(survey, tmp_path, address, match):
    """`--ray HOST:PORT` with nothing there waited for ever ("Failed to connect to GCS" every few seconds;
    Ctrl-C took ~30 s); the README promised one line with the hint (review of --ray, session 40)."""
    pytest.importorskip("ray")
    from engine.distributed import classify_on_ray
    from galaxy.errors import UsageError

    config = ClassifyConfig((str(survey),), str(tmp_path / "out"), progress=False)
    started = time.perf_counter()
    with pytest.raises(UsageError, match=match):
        classify_on_ray(config, address, 8)
    assert time.perf_counter() - started < 30 and not (tmp_path / "out").exists()


def test_a_rerun_naming_the_same_inputs_otherwise_continues_the_run(tmp_path, monkeypatch):
    """`in1/` (tab completion's slash) or the absolute path after a run given `in1` was refused as "started
    with other settings", and the message's way on, --overwrite, deletes every part (review of --ray,
    session 40); so was a symbolic link to `in1` (one machine's resume reads a file through one). Inputs naming
    other files are left as given, to be refused."""
    from engine.distributed import _as_spelled_before

    monkeypatch.chdir(tmp_path)
    earlier = {"inputs": ["in1", "b/c.jpeg"], "catalog": "t.csv"}  # the run's recorded settings (its fingerprint.json)
    (tmp_path / "in1").mkdir()
    (tmp_path / "jl").symlink_to("in1")  # refused as "inputs [in1] then, [jl] now"; one machine accepts it
    (tmp_path / "t.link.csv").symlink_to("t.csv")
    for given in (["in1/", "b//c.jpeg"], [str(tmp_path / "in1"), "./b/c.jpeg"], ["jl", "b/c.jpeg"]):
        assert _as_spelled_before(earlier, given, str(tmp_path / "t.csv")) == (["in1", "b/c.jpeg"], "t.csv")
    assert _as_spelled_before(earlier, ["jl/", "b/c.jpeg"], "t.link.csv") == (["in1", "b/c.jpeg"], "t.csv")
    assert _as_spelled_before(earlier, ["in2", "b/c.jpeg"], "u.csv") == (["in2", "b/c.jpeg"], "u.csv")
    assert _as_spelled_before(earlier, ["in1"], None) == (["in1"], None)
    assert _as_spelled_before(None, ["in1/"], None) == (["in1/"], None)  # a new run: no settings recorded


@pytest.mark.ray
def test_a_ray_rerun_with_another_int8_model_is_refused_and_local_is_an_address(survey, tmp_path, monkeypatch):
    """The int8 model is part of a --ray run's settings, as of one machine's (review of this session's
    changes); "local" (Ray's word for a new local cluster, and the flag's own value) is no HOST:PORT."""
    pytest.importorskip("ray")
    import json

    import engine.distributed
    from engine import int8_models
    from engine.distributed import _require_listening, classify_on_ray
    from galaxy.errors import UsageError

    assert _require_listening("local") is None and _require_listening("auto") is None

    def stop(address):  # after the settings and shards are written, before any cluster
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.distributed, "_require_listening", stop)
    config = ClassifyConfig((str(survey),), str(tmp_path / "out"), backend="onnxruntime-int8", progress=False)
    with pytest.raises(KeyboardInterrupt):
        classify_on_ray(config, None, 4)
    recorded = json.loads((tmp_path / "out" / "_galaxy" / "fingerprint.json").read_text())
    assert recorded["int8"] == int8_models.int8_fingerprint(*_default_model())
    monkeypatch.setattr(int8_models, "int8_fingerprint", lambda model_dir, card: "another int8 model")
    with pytest.raises(UsageError, match='started with other settings .*int8 .* then, "another int8 model" now'):
        classify_on_ray(config, None, 4)


@pytest.mark.ray
class Stopped(Exception):
    """A --ray run stopped after its settings and shards are written, before any cluster (`_begun_in_a_folder`)."""


def _begun_in_a_folder(survey, tmp_path, monkeypatch):
    """(out, other, config): a --ray run of `survey` named relatively from its parent folder, which stops with
    `Stopped` before any cluster; `other` holds a copy of `survey` under the same relative name (the listing
    alone cannot tell the two apart)."""
    pytest.importorskip("ray")
    import engine.distributed

    def stop(address):
        raise Stopped

    monkeypatch.setattr(engine.distributed, "_require_listening", stop)
    out, other = tmp_path / "out", tmp_path / "other"
    shutil.copytree(survey, other / survey.name)
    monkeypatch.chdir(survey.parent)
    return out, other, ClassifyConfig((survey.name,), str(out), backend="onnxruntime", decoder="reference",
                                      progress=False)


def test_a_ray_rerun_from_another_folder_is_refused_where_the_inputs_are_relative(survey, tmp_path, monkeypatch,
                                                                                  default_model):
    """A --ray rerun from another folder was accepted, each actor reading the relative inputs from the new one:
    parts 0-5 named files of one folder and 6-11 of another, the manifest (the first part's) the first. One
    machine refuses it; so does --ray now, with its words; --overwrite starts over, absolute inputs go on."""
    from engine.distributed import classify_on_ray
    from engine.ray_actor import ShardClassifier
    from engine.ray_shards import write_shards
    from galaxy.errors import UsageError

    out, other, config = _begun_in_a_folder(survey, tmp_path, monkeypatch)
    with pytest.raises(Stopped):
        classify_on_ray(config, None, 4)
    monkeypatch.chdir(other)
    refused = f"{out} was begun in {survey.parent}, and its rows name files from there ('{survey.name}'): rerun " \
              "from that folder, or use --overwrite to start over"
    with pytest.raises(UsageError) as caught:
        classify_on_ray(config, None, 4)
    assert str(caught.value) == refused
    with pytest.raises(UsageError, match="was begun in"):  # nor named absolutely from here
        classify_on_ray(dataclasses.replace(config, inputs=(str(survey),)), None, 4)
    # a folder an earlier version began (no record of its folder): its first part's cwd
    monkeypatch.chdir(survey.parent)
    shards = write_shards(config, out, 4)
    ShardClassifier(config, str(default_model[0]), str(out)).classify_shard(0, shards[0].path)
    (out / "_galaxy" / "cwd").unlink()
    monkeypatch.chdir(other)
    with pytest.raises(UsageError) as caught:
        classify_on_ray(config, None, 4)
    assert str(caught.value) == refused
    with pytest.raises(Stopped):  # --overwrite starts over here
        classify_on_ray(dataclasses.replace(config, overwrite=True), None, 4)
    absolute = dataclasses.replace(config, inputs=(str(survey),), overwrite=True)
    with pytest.raises(Stopped):
        classify_on_ray(absolute, None, 4)
    monkeypatch.chdir(survey.parent)
    with pytest.raises(Stopped):  # absolute inputs name the same files from any folder
        classify_on_ray(dataclasses.replace(absolute, overwrite=False), None, 4)


def test_the_folder_a_ray_run_began_in_is_recorded_once_its_settings_are_taken_and_absolute_rows_go_on(
        survey, tmp_path, monkeypatch):
    """A refused rerun (other settings) of a folder an earlier version began, with no part yet, had recorded its
    own folder as the one the run began in, and the right command was then refused as begun elsewhere; and a
    catalog named relatively whose rows are absolute was refused from another folder, where one machine goes on
    (review of the cwd check)."""
    from engine.distributed import classify_on_ray
    from galaxy.errors import UsageError

    out, other, config = _begun_in_a_folder(survey, tmp_path, monkeypatch)
    with pytest.raises(Stopped):
        classify_on_ray(config, None, 4)
    (out / "_galaxy" / "cwd").unlink()  # as an earlier version left it: no record, no part
    monkeypatch.chdir(other)
    with pytest.raises(UsageError, match="other settings"):
        classify_on_ray(dataclasses.replace(config, tta=True), None, 4)
    assert not (out / "_galaxy" / "cwd").exists()
    monkeypatch.chdir(survey.parent)
    with pytest.raises(Stopped):  # the right command, from the right folder
        classify_on_ray(config, None, 4)
    assert not (out / "_galaxy" / "cwd").exists()  # still not known (no part tells), so not guessed

    catalog = survey.parent / "absolute.csv"
    catalog.write_text("file\n" + "".join(f"{p}\n" for p in sorted(survey.glob("*.jpeg"))))
    by_catalog = dataclasses.replace(config, inputs=(), catalog=catalog.name, overwrite=True)
    with pytest.raises(Stopped):
        classify_on_ray(by_catalog, None, 4)
    monkeypatch.chdir(other)
    with pytest.raises(Stopped):  # its rows name files absolutely: they are the same from any folder
        classify_on_ray(dataclasses.replace(by_catalog, catalog=str(catalog), overwrite=False), None, 4)
    # another catalog spelled alike here is read as given, not the first folder's (review): other inputs
    (other / catalog.name).write_text("file\n" + "".join(f"{p}\n" for p in sorted(survey.glob("*.jpeg"))[:3]))
    with pytest.raises(UsageError, match="the inputs changed"):
        classify_on_ray(dataclasses.replace(by_catalog, overwrite=False), None, 4)


def _default_model():
    from engine.artifacts import resolve_model

    return resolve_model(None)


def test_parts_classified_by_unlike_engines_are_all_named_in_the_catalogs_metadata(survey, tmp_path, default_model,
                                                                                    caplog):
    """Each actor chooses its own backend (`auto` per machine; int8 per CPU arithmetic): the merged
    catalog's metadata was the first part's alone, naming one engine for every row."""
    import json
    import logging

    from engine.ray_actor import ShardClassifier
    from engine.ray_manifest import ENGINES_KEY, write_manifest
    from engine.ray_shards import write_shards
    from galaxy.catalog.written import read_catalog_metadata

    out = tmp_path / "parts"
    config = ClassifyConfig((str(survey),), str(out), backend="onnxruntime", decoder="reference", progress=False)
    shards = write_shards(config, out, 4)
    for shard, backend in zip(shards, ["onnxruntime", "onnxruntime-int8", "onnxruntime-int8"]):
        ShardClassifier(dataclasses.replace(config, backend=backend), str(default_model[0]),
                        str(out)).classify_shard(shard.index, shard.path)
    with caplog.at_level(logging.WARNING):
        manifest = write_manifest(out, shards, {"rows": 9, "errors": 1}, 0, 1, time.perf_counter())
    engines = json.loads(read_catalog_metadata(out)[ENGINES_KEY])
    assert manifest["metadata"][ENGINES_KEY] == json.dumps(engines) and sum(engines.values()) == 3
    assert engines.pop("onnxruntime fp32") == 1 and list(engines.values()) == [2]
    assert list(engines)[0].startswith("onnxruntime-int8 int8 (") and "2 kinds of engine" in caplog.text
