"""The run loop: ids stay with their pixels through shuffling, errors and a partial last batch."""

import csv
import random

import numpy as np
import pytest

from engine import backends
from engine.run import classify
from galaxy.config import ClassifyConfig
from galaxy.io.images import load_input
from tests.conftest import EXAMPLES


@pytest.mark.parametrize("decoder", ["reference", "auto"])
def test_shuffled_inputs_with_errors_keep_ids_and_probabilities(tmp_path, default_model, decoder):
    model_dir, card = default_model
    files = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))
    bad = []
    for k in range(3):
        path = tmp_path / f"bad{k}.jpeg"
        path.write_bytes(b"\xff\xd8\xff" + bytes(50 * k))
        bad.append(str(path))
    inputs = files + bad
    random.Random(4).shuffle(inputs)
    catalog = tmp_path / "in.csv"
    catalog.write_text("file\n" + "\n".join(inputs) + "\n")
    out = tmp_path / "out.csv"
    summary = classify(ClassifyConfig((), str(out), None, str(catalog), backend="onnxruntime", decoder=decoder,
                                      batch_size=7, progress=False))
    assert (summary.classified, summary.failed) == (40, 3)  # 40 = 5 full batches + a partial one
    rows = list(csv.DictReader(open(out)))
    assert [r["path"] for r in rows] == [p for p in inputs if p not in bad]  # input order kept
    errors = list(csv.DictReader(open(tmp_path / "out.csv.errors.csv")))
    assert sorted(e["path"] for e in errors) == sorted(bad)
    session = backends.load("onnxruntime", model_dir, card, backends.BackendOptions())
    for row in rows[::5]:  # each row's probabilities are those of its own file, alone
        alone = session.run(load_input(row["path"], card.input_spec)[0][None])[0]
        assert abs(float(row["p_spiral"]) - alone[1]) < 1e-4
        assert row["id"] == row["path"].rsplit("/", 1)[1].split(".")[0]


@pytest.mark.parametrize("decoder", ["reference", "auto"])
def test_ids_do_not_depend_on_which_inputs_failed(tmp_path, default_model, decoder):
    """A failed input takes its id in listing order as a classified one does: the same stem in
    three folders, the middle one broken, then mended and rerun, gives the ids of a run where it
    was never broken (the mended file got `twin#3` and another file's id moved), and the errors
    file names the failure by an id no row has."""
    good = sorted(EXAMPLES.glob("*.jpeg"))
    corpus = tmp_path / "corpus"
    for k, folder in enumerate(("a", "b", "c")):
        (corpus / folder).mkdir(parents=True)
        (corpus / folder / "twin.jpeg").write_bytes(good[k].read_bytes())
    (corpus / "b" / "twin.jpeg").write_bytes(b"\xff\xd8\xff" + bytes(40))

    def run(out):
        return classify(ClassifyConfig((str(corpus),), str(out), backend="onnxruntime", decoder=decoder,
                                       progress=False))

    assert run(tmp_path / "out.csv").failed == 1
    errors = list(csv.DictReader(open(tmp_path / "out.csv.errors.csv")))
    rows = {r["path"]: r["id"] for r in csv.DictReader(open(tmp_path / "out.csv"))}
    assert [e["id"] for e in errors] == ["twin#2"] and sorted(rows.values()) == ["twin", "twin#3"]
    (corpus / "b" / "twin.jpeg").write_bytes(good[1].read_bytes())
    assert run(tmp_path / "out.csv").failed == 0  # the rerun retries the mended file
    assert run(tmp_path / "fresh.csv").failed == 0
    rerun = {r["path"]: r["id"] for r in csv.DictReader(open(tmp_path / "out.csv"))}
    fresh = {r["path"]: r["id"] for r in csv.DictReader(open(tmp_path / "fresh.csv"))}
    assert rerun == fresh and sorted(fresh.values()) == ["twin", "twin#2", "twin#3"]


def test_missing_input_fails_before_writing(tmp_path):
    from galaxy.errors import UsageError

    out = tmp_path / "out.csv"
    with pytest.raises(UsageError, match="does not exist"):
        classify(ClassifyConfig((str(EXAMPLES), str(tmp_path / "nope")), str(out), progress=False))
    assert not out.exists()


def test_an_empty_folder_is_refused_before_the_model_loads_and_leaves_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from galaxy.cli import cli

    def no_model(*args):
        raise AssertionError("the model was loaded for inputs without an image")

    monkeypatch.setattr("engine.artifacts.resolve_model", no_model)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    for out in ("out.csv", "parts"):
        args = ["classify", str(empty), "-o", str(tmp_path / out), "-q"] + (["--ray"] if out == "parts" else [])
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert f"no images found in {empty}: folders are searched recursively" in result.output
        assert "['" not in result.output  # a sentence, not a Python list
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no OUT, meta.json, errors file or folder


@pytest.mark.parametrize("streams", [1, 3])
def test_results_and_failures_come_in_input_order_with_batches_in_flight(tmp_path, default_model, streams):
    """With several batches running at once (`Runner.streams`) a failure is handed out where a
    one-batch-at-a-time run hands it out: after the results of every batch before the one it was
    found in, before that batch's."""
    from engine.listing import Item
    from engine.runner import Runner

    model_dir, card = default_model
    inputs = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))[:20]
    for k in (2, 9, 10, 17):
        inputs.insert(k, str(tmp_path / f"missing{k}.jpeg"))
    runner = Runner(model_dir, card, "onnxruntime", "reference", batch_size=3)
    runner.streams = streams
    events = []
    for result in runner.run((Item(p) for p in inputs), lambda failure: events.append(failure.path)):
        events.extend(result.paths)
    expected, group = [], []
    for path in inputs:
        if "missing" in path:
            expected.append(path)
        else:
            group.append(path)
            if len(group) == 3:
                expected, group = expected + group, []
    assert events == expected + group and sorted(events) == sorted(inputs)


def test_an_engine_error_in_a_stream_reaches_the_caller(default_model):
    """A batch that fails in a stream's thread raises in the caller, after the batches before it, and
    the run stops instead of hanging on the batches still in flight."""
    from engine.listing import Item
    from engine.runner import Runner

    model_dir, card = default_model
    runner = Runner(model_dir, card, "onnxruntime", "reference", batch_size=4)
    runner.streams = 2
    run, calls = runner.session.run, []

    def failing(tensor):
        calls.append(len(tensor))
        if len(calls) == 3:
            raise RuntimeError("engine failed on the third batch")
        return run(tensor)

    runner.session.run = failing
    handed_out = []
    with pytest.raises(RuntimeError, match="third batch"):
        for result in runner.run((Item(p) for p in sorted(EXAMPLES.glob("*.jpeg"))), lambda failure: None):
            handed_out.append(len(result.ids))
    assert handed_out == [4, 4]


def test_streams_only_where_the_session_runs_on_the_cpu(default_model, monkeypatch):
    """ONNX Runtime with onnxruntime-gpu installed may take a GPU: then the runner runs one batch at a
    time, as for every GPU backend; on the CPU it keeps one batch per core."""
    from engine.runner import Runner

    model_dir, card = default_model
    from galaxy.cores import usable_cores

    cores = usable_cores()  # the CPU quota of a container counted, as the runner counts it
    assert Runner(model_dir, card, "onnxruntime", "reference").streams == (cores if cores > 1 else 1)
    load = backends.load_named

    def on_a_gpu(*args, **kwargs):
        session = load(*args, **kwargs)
        session.device = "CUDAExecutionProvider"
        return session

    monkeypatch.setattr(backends, "load_named", on_a_gpu)
    assert Runner(model_dir, card, "onnxruntime", "reference").streams == 1


def test_infer_all_runs_ready_tensors_in_order_across_streams(default_model):
    """`Runner.infer_all` (the API's `classify_arrays`) splits ready tensors into batches, runs them
    `streams` at once, and puts the probabilities back in input order."""
    from engine.runner import Runner

    model_dir, card = default_model
    runner = Runner(model_dir, card, "onnxruntime", "reference", batch_size=4)
    tensors = np.stack([load_input(p, card.input_spec)[0] for p in sorted(EXAMPLES.glob("*.jpeg"))[:10]])
    runner.streams = 3
    together = runner.infer_all(tensors)
    assert together.shape == (10, len(card.classes))
    np.testing.assert_allclose(together, np.concatenate([runner.infer(t[None]) for t in tensors]), atol=1e-5)
