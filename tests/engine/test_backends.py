"""Every backend honours the same small surface on the trained default model."""

import copy
import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from engine import backends
from engine.machine import native_bf16
from galaxy.io.images import load_input
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def sample_batch(default_model):
    _, card = default_model
    return np.stack([load_input(p, card.input_spec)[0] for p in sorted(EXAMPLES.glob("*.jpeg"))])


@pytest.mark.parametrize("name", ["onnxruntime", "torch", "torch-compile", "onnxruntime-int8"])
def test_backend_surface(name, default_model, sample_batch):
    """Each backend's surface and its agreement with an independent reference: ONNX Runtime fp32 for the
    others, the PyTorch network in fp32 for ONNX Runtime itself (against itself it could not fail). The
    int8 model is the one the shipped recipe rebuilds (int8.json), as a run loads it, and its
    probabilities stay within the README's bound of fp32 (0.064 on the validation split)."""
    import torch

    from galaxy.training.model import load_network

    model_dir, card = default_model
    session = backends.load(name, model_dir, card, backends.BackendOptions())
    assert session.name == name and session.max_batch >= 32 and session.device
    for n in (1, 7, len(sample_batch)):
        probs = session.run(sample_batch[:n])
        assert probs.shape == (n, 2) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    if name == "onnxruntime":
        with torch.no_grad():
            reference = torch.softmax(load_network(model_dir, card)[0](torch.from_numpy(sample_batch)), 1).numpy()
    else:
        reference = backends.load("onnxruntime", model_dir, card, backends.BackendOptions()).run(sample_batch)
    probs = session.run(sample_batch)
    agreement = (probs.argmax(1) == reference.argmax(1)).mean()
    assert agreement >= 0.95, agreement
    if name == "onnxruntime" or (name in ("torch", "torch-compile") and not native_bf16()):
        np.testing.assert_allclose(probs, reference, atol=1e-4)
    if name == "onnxruntime-int8":  # the temperature is in the graph: probabilities, not only labels, agree
        assert np.abs(probs - reference).max() < 0.07


def test_auto_times_the_checked_backends_on_this_machine_once(default_model, tmp_path, monkeypatch):
    from engine import autotune

    model_dir, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    results = {"onnxruntime": {"images_per_s": 10, "passed": True},
               "onnxruntime-int8": {"images_per_s": 99, "passed": False},  # failed its check: never timed
               "torch": {"images_per_s": 5, "passed": True},  # the card's speed is another machine's: ignored
               "torch-compile": {"images_per_s": 60, "passed": True}}  # opt-in: never picked by auto
    checked = dataclasses.replace(card, backends={"results": results})
    assert backends.cpu_candidates(checked) == (["onnxruntime", "torch"] if native_bf16() else ["onnxruntime"])
    timed = []

    def fake_timing(sessions, batch, rounds=3, streams=None):
        timed.append(sorted(sessions))
        assert batch.shape[1:] == (3, card.input_spec.size, card.input_spec.size)
        return {"onnxruntime": 100.0, "torch": 150.0}

    monkeypatch.setattr(autotune, "time_sessions", fake_timing)
    expected = "torch" if native_bf16() else "onnxruntime"
    assert backends.pick("auto", checked, model_dir) == expected
    assert backends.pick("auto", checked, model_dir) == expected  # read from the cache, not timed again
    assert timed == ([["onnxruntime", "torch"]] if native_bf16() else [])
    records = list((tmp_path / "autotune").glob("*.json"))
    assert len(records) == (1 if native_bf16() else 0)
    assert backends.pick("auto", dataclasses.replace(card, backends={}), model_dir) == "onnxruntime"
    assert backends.pick("onnxruntime-int8", checked) == "onnxruntime-int8"  # asked for by name: given


def test_auto_passes_over_a_candidate_that_cannot_load_here(default_model, tmp_path, monkeypatch):
    """A shipped int8 recipe that rebuilds differently on this machine is a warning, not a failed run."""
    from engine import autotune
    from galaxy.errors import BackendUnavailable

    _, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    monkeypatch.setattr(autotune, "time_sessions", lambda sessions, batch, **kw: {n: 100.0 for n in sessions})

    def load(name):
        if name == "onnxruntime-int8":
            raise BackendUnavailable("the int8 model rebuilt from int8.json differs from the one checked")
        return object()

    chosen, record = autotune.measured_choice(card, ["onnxruntime", "onnxruntime-int8"], 32, load)
    assert chosen == "onnxruntime" and record["images_per_s"] == {"onnxruntime": 100.0, "onnxruntime-int8": None}


@pytest.mark.parametrize("text", ["[1, 2]", "null", '{"chosen": "onnxruntime"}',
                                  '{"chosen": "foo", "images_per_s": {}, "machine": {"cpu": "x", "cores": 2}, '
                                  '"measured": "2026"}',
                                  '{"chosen": "tensorrt", "images_per_s": {}, "machine": {"cpu": "x", "cores": 2}, '
                                  '"measured": "2026"}',
                                  # a string speed gave a ValueError traceback in the log line; a chosen
                                  # backend without a speed was cited with made-up figures (review)
                                  '{"chosen": "torch", "images_per_s": {"torch": "1990"}, "machine": {"cpu": "x", '
                                  '"cores": 2}, "measured": "2026"}',
                                  '{"chosen": "torch", "images_per_s": {"onnxruntime": 5}, "machine": {"cpu": "x", '
                                  '"cores": 2}, "measured": "2026"}',
                                  # well formed, of another machine (a record edited or copied under this
                                  # name had been trusted, "measured on this machine, Intel Xeon ..., 64 cores")
                                  '{"chosen": "onnxruntime", "images_per_s": {"onnxruntime": 5, "torch": 1}, '
                                  '"machine": {"cpu": "Intel Xeon Platinum 8480+", "cores": 64}, "measured": "2026"}'])
def test_a_speed_record_of_another_shape_is_measured_again(default_model, tmp_path, monkeypatch, text, caplog):
    """Valid JSON of another shape gave a TypeError, a KeyError, or TensorRT chosen on a CPU; its warning
    was printed twice (read once before the measuring lock and again under it)."""
    import json

    from engine import autotune

    _, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    monkeypatch.setattr(autotune, "time_sessions", lambda sessions, batch, **kw: {"onnxruntime": 100.0, "torch": 150.0})
    candidates = ["onnxruntime", "torch"]
    key, _ = autotune.machine_key(card, candidates, batch=4)
    (tmp_path / "autotune").mkdir()
    (tmp_path / "autotune" / f"{key}.json").write_text(text)
    chosen, record = autotune.measured_choice(card, candidates, 4, lambda name: object())
    assert chosen == "torch" and record["images_per_s"] == {"onnxruntime": 100.0, "torch": 150.0}
    assert json.loads((tmp_path / "autotune" / f"{key}.json").read_text())["chosen"] == "torch"
    assert caplog.text.count("ignoring the speed record") == 1


def test_auto_times_at_the_batch_it_runs_and_keys_the_record_by_it(default_model, monkeypatch):
    """--batch-size 2000 was timed at 2000 (8 GB, a minute) though runs are capped at 256, and its
    record served the default batch too."""
    from engine import autotune
    from engine.runner import Runner

    model_dir, card = default_model
    assert autotune.machine_key(card, ["onnxruntime"], batch=32)[0] != autotune.machine_key(card, ["onnxruntime"],
                                                                                            batch=256)[0]
    # and per thread count (--threads): a 1-thread record answered a 2-thread run
    assert autotune.machine_key(card, ["onnxruntime"], threads={"onnxruntime": 1})[0] != autotune.machine_key(
        card, ["onnxruntime"], threads={"onnxruntime": 2})[0]
    # and whether ONNX Runtime spins: bench's engine rows measured with it, classify runs without
    assert autotune.machine_key(card, ["onnxruntime"], spin_wait=True)[0] != autotune.machine_key(
        card, ["onnxruntime"])[0]
    asked = []
    real_pick = backends.pick

    def pick(name, card, model_dir=None, options=None):
        asked.append(options.batch_size)  # what auto would time the candidates at
        return real_pick("onnxruntime", card, model_dir, options)

    monkeypatch.setattr(backends, "pick", pick)
    runner = Runner(model_dir, card, "auto", "reference", batch_size=2000)
    assert asked == [256] and runner.batch_size == 256


def test_a_damaged_cached_onnx_model_is_built_again(default_model, tmp_path, monkeypatch):
    """A cached ONNX file cut in half gave ONNX Runtime's InvalidProtobuf traceback on every run."""
    from engine.artifacts import onnx_model
    from engine.backends import BackendOptions, load_named

    model_dir, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    path = onnx_model(model_dir, card)
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    session = load_named("onnxruntime", model_dir, card, BackendOptions())
    assert session.path == str(path) and path.read_bytes() == whole


def test_a_cached_onnx_model_altered_in_place_is_built_again(default_model, tmp_path, monkeypatch, caplog):
    """Bytes flipped inside a weight (same size, still a valid protobuf) gave every galaxy p_spiral 0.0
    under the card's weights hash; 4 bytes cut from the end ("Missing opset") stopped every run with
    no hint to delete the file (review of the derived engines)."""
    from engine.artifacts import onnx_model
    from engine.backends import BackendOptions, load_named

    model_dir, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    path = onnx_model(model_dir, card)
    whole = path.read_bytes()
    assert path.with_name(path.name + ".sha256").read_text().strip() == hashlib.sha256(whole).hexdigest()
    middle = len(whole) // 2
    for damaged in (whole[:middle] + bytes(255 - b for b in whole[middle:middle + 2000]) + whole[middle + 2000:],
                    whole[:-4]):
        path.write_bytes(damaged)
        session = load_named("onnxruntime", model_dir, card, BackendOptions())
        assert session.path == str(path) and path.read_bytes() == whole
    assert "is not the file that was built" in caplog.text
    path.with_name(path.name + ".sha256").unlink()  # a cache from before the records: adopted as it is
    assert onnx_model(model_dir, card) == path and path.with_name(path.name + ".sha256").is_file()


def test_a_file_renamed_into_the_cache_is_never_checked_against_the_old_record(tmp_path, monkeypatch, caplog):
    """a3f8573: the old sha256 record goes before the new file is renamed in (a reader between had
    checked the new file against the old record and remembered it as damaged); a file another process
    removed first is not intact, and no error; a cache that cannot take the record says so at INFO."""
    import logging

    from engine import artifacts

    out = tmp_path / "model.onnx"
    out.write_bytes(b"old build")
    artifacts.record_sha256(out, hashlib.sha256(b"old build").hexdigest())
    tmp = tmp_path / ".model.tmp"
    tmp.write_bytes(b"new build")
    seen = []
    rename = Path.replace

    def replace(self, target):  # what a reader finds at the moment of the rename
        seen.append(artifacts.recorded_sha256(Path(target)))
        return rename(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    artifacts.replace_recorded(tmp, out)
    assert seen == [None] and not tmp.exists()
    assert artifacts.recorded_sha256(out) == hashlib.sha256(b"new build").hexdigest() and artifacts.intact(out)
    out.unlink()
    assert artifacts.intact(out) is False
    (tmp_path / "model.onnx.sha256").unlink()
    (tmp_path / "model.onnx.sha256").mkdir()  # the record's name taken: renaming onto it fails, as in a read-only cache
    with caplog.at_level(logging.INFO, logger="engine.artifacts"):
        artifacts.record_sha256(out, "a" * 64)
    [record] = [r for r in caplog.records if "cannot record the sha256" in r.getMessage()]
    assert record.levelno == logging.INFO and "used without the check" in record.getMessage()


def test_an_int8_model_onnx_runtime_cannot_load_is_one_line(default_model, tmp_path, monkeypatch):
    """ONNX Runtime's own error (an int8 file whose opset list was cleared) was a traceback, and
    check-backends, which catches galaxy's errors, crashed on it (review of the derived engines)."""
    from engine.backends import BackendOptions, onnxruntime_int8
    from galaxy.errors import ModelError

    model_dir, card = default_model
    bad = tmp_path / "int8.onnx"
    bad.write_bytes(b"\x08\x07 not an onnx model")
    monkeypatch.setattr(onnxruntime_int8, "require_int8", lambda model_dir, card: ("ptq", bad))
    with pytest.raises(ModelError, match=f"ONNX Runtime cannot load the int8 model {bad}: .*delete it"):
        onnxruntime_int8.load(model_dir, card, BackendOptions())


def test_a_rebuild_that_differed_is_tried_again_from_another_fp32_model(default_model, tmp_path, monkeypatch):
    """A rebuild from a damaged fp32 export wrote the "differs" marker, which kept int8 off for good
    once the export was whole again (review of the derived engines)."""
    import json

    from engine import int8_models
    from engine.artifacts import cached_onnx_path

    model_dir, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    shipped = int8_models.shipped_int8(model_dir, card)
    marker = int8_models._rebuild_marker(card, shipped)
    marker.parent.mkdir(parents=True)
    fp32 = cached_onnx_path(card)
    fp32.with_name(fp32.name + ".sha256").write_text("a" * 64 + "\n")
    marker.write_text(json.dumps({"shipped_fingerprint": shipped["fingerprint"], "rebuilt_fingerprint": "x",
                                  "onnxruntime": int8_models._ort_version(), "fp32_sha256": "a" * 64}))
    assert int8_models._rebuild_failed(card, shipped)
    fp32.with_name(fp32.name + ".sha256").write_text("b" * 64 + "\n")  # the export built again since
    assert not int8_models._rebuild_failed(card, shipped)


def test_an_int8_model_changed_in_place_is_built_again(default_model, tmp_path, monkeypatch, caplog):
    """Conv pads edited in a cached int8 model kept its fingerprint (nodes' attributes are not in it):
    `auto` ran it as checked and every galaxy got p_spiral 0.521 (review of the derived engines)."""
    import onnx

    from engine import int8_models

    model_dir, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    _, path = int8_models.require_int8(model_dir, card)
    whole = path.read_bytes()
    model = onnx.load(str(path))
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Conv" and attribute.name == "pads" and list(attribute.ints) == [1, 1, 1, 1]:
                attribute.ints[:] = [0, 0, 2, 2]
    onnx.save(model, str(path))
    assert int8_models.model_fingerprint(path) == int8_models.shipped_int8(model_dir, card)["fingerprint"]
    for _ in range(3):  # a run asks several times (recipe, fingerprint, check, load): said once, as what is done
        int8_models.int8_choice(model_dir, card)
    assert int8_models.require_int8(model_dir, card)[1] == path and path.read_bytes() == whole
    assert caplog.text.count("is not the file that was built") == 1
    assert "passed over (a shipped recipe's is built again)" in caplog.text


def test_a_damaged_int8_model_in_the_cache_is_passed_over(default_model, tmp_path, monkeypatch):
    from engine import int8_models

    _, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    path = int8_models.int8_path(card, "ptq")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x08\x07 not an onnx model")
    assert int8_models.model_fingerprint(path) == int8_models.UNREADABLE
    assert int8_models.built_int8(card) is None


def test_auto_measures_again_on_another_machine(default_model, tmp_path, monkeypatch):
    from engine import autotune

    _, card = default_model
    first, what = autotune.machine_key(card, ["onnxruntime", "torch"])
    assert what["cores"] >= 1 and what["cpu"] and "torch" in what
    monkeypatch.setattr(autotune, "cpu_description", lambda: {"cpu": "Other CPU", "flags": ["avx2"], "cores": 2})
    assert autotune.machine_key(card, ["onnxruntime", "torch"])[0] != first


def test_auto_measures_again_when_another_int8_model_would_load(default_model, monkeypatch):
    from engine import autotune, int8_models

    _, card = default_model
    candidates = ["onnxruntime", "onnxruntime-int8"]
    monkeypatch.setattr(int8_models, "int8_fingerprint", lambda model_dir, c: "model-a")
    first, what = autotune.machine_key(card, candidates)
    assert what["int8_fingerprint"] == "model-a"
    monkeypatch.setattr(int8_models, "int8_fingerprint", lambda model_dir, c: "model-b")
    assert autotune.machine_key(card, candidates)[0] != first


def test_real_timing_of_two_sessions(default_model):
    from engine import autotune

    model_dir, card = default_model
    options = backends.BackendOptions(batch_size=4)
    sessions = {"onnxruntime": backends.load_named("onnxruntime", model_dir, card, options)}
    speeds = autotune.time_sessions(sessions, autotune.sample_batch(card, 4), rounds=1)
    assert speeds["onnxruntime"] > 0


def test_streams_go_to_the_backends_that_take_them():
    """A classify run's options (one single-threaded batch per core) reach ONNX Runtime fp32 and
    eager torch; int8, torch-compile and the GPU backends run one batch on their default threads."""
    streamed = backends.BackendOptions(threads=1, streams=2, spin_wait=False)
    assert backends.options_for("onnxruntime", streamed) == streamed
    assert backends.options_for("torch", streamed) == streamed
    for name in ("onnxruntime-int8", "torch-compile", "torch-cuda", "tensorrt"):
        assert backends.options_for(name, streamed) == backends.BackendOptions(threads=0, streams=1, spin_wait=False)
    one = backends.BackendOptions(threads=4)
    assert backends.options_for("onnxruntime-int8", one) == one  # --threads given: left as asked


def test_a_single_threaded_torch_stream_leaves_the_process_thread_count(default_model, sample_batch):
    """A torch session made for one stream runs each call on one thread and puts the caller's count
    back: set in the main thread it would become every later thread's (and the baseline's) count."""
    import torch

    model_dir, card = default_model
    before = torch.get_num_threads()
    stream = backends.load_named("torch", model_dir, card, backends.BackendOptions(threads=1, streams=2))
    alone = backends.load_named("torch", model_dir, card, backends.BackendOptions())
    np.testing.assert_allclose(stream.run(sample_batch), alone.run(sample_batch), atol=2e-2)
    assert torch.get_num_threads() == before


def test_timing_runs_each_candidate_with_its_streams():
    """`auto` times a candidate the way the runner will run it: `streams` batches at once."""
    import threading
    import time

    from engine import autotune

    class Counting:
        def __init__(self):
            self.now, self.most, self.lock = 0, 0, threading.Lock()

        def run(self, batch):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            time.sleep(0.005)
            with self.lock:
                self.now -= 1

    sessions = {"streamed": Counting(), "single": Counting()}
    speeds = autotune.time_sessions(sessions, np.zeros((4, 3, 8, 8), np.float32), rounds=1,
                                    streams={"streamed": 2})
    assert (sessions["streamed"].most, sessions["single"].most) == (2, 1)  # the concurrency, not a timed ratio
    assert set(speeds) == {"streamed", "single"} and min(speeds.values()) > 0


def test_int8_without_a_build_or_a_shipped_recipe_says_how_to_make_one(default_model, tmp_path, monkeypatch):
    import shutil

    from engine.int8_models import SHIPPED_INT8
    from galaxy.errors import BackendUnavailable

    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "cache"))
    model_dir, card = default_model
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / SHIPPED_INT8).unlink(missing_ok=True)
    with pytest.raises(BackendUnavailable, match="galaxy quantize"):
        backends.load("onnxruntime-int8", folder, card, backends.BackendOptions())


def test_classify_runs_onnxruntime_without_spin_waiting(default_model, sample_batch):
    """The runner's decode shares the cores, so its session turns ONNX Runtime's spinning off
    (BackendOptions.spin_wait); a session alone keeps the default. Same probabilities either way."""
    from engine.runner import Runner

    model_dir, card = default_model
    runner = Runner(model_dir, card, backend="onnxruntime", decoder="reference")
    alone = backends.load("onnxruntime", model_dir, card, backends.BackendOptions())
    key = "session.intra_op.allow_spinning"
    assert runner.session._session.get_session_options().get_session_config_entry(key) == "0"
    with pytest.raises(Exception, match="does not have configuration"):
        alone._session.get_session_options().get_session_config_entry(key)
    # the same model; ONNX Runtime does not promise the same bits from other thread counts
    np.testing.assert_allclose(runner.session.run(sample_batch), alone.run(sample_batch), atol=1e-6)


@pytest.mark.parametrize("files, cores", [
    ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, a container started with --cpus 1.5
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cpu_quota_read_from_the_control_group(tmp_path, files, cores):
    from galaxy.cores import cpu_quota

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == cores


def test_usable_cores_are_capped_by_the_quota(monkeypatch):
    """Threads and decode workers are sized by usable_cores: a quota of 1.5 cores on a bigger machine
    gives 2 of them, not one per core of the host."""
    from galaxy import cores as machine

    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(machine, "cpu_quota", lambda: 1.5)
    assert machine.usable_cores() == 2
    monkeypatch.setattr(machine, "cpu_quota", lambda: None)
    assert machine.usable_cores() == 64


def test_a_classify_with_cached_engines_never_imports_torch(tmp_path):
    """`auto` imported torch (5.6 s of a run here) only to ask for CUDA and bf16 and to name the cached
    ONNX file; a second run of the default classify, engines cached, now loads no torch at all."""
    import os
    import subprocess
    import sys

    from engine.machine import nvidia_driver_absent

    if not nvidia_driver_absent():
        pytest.skip("an NVIDIA driver is present: auto rightly asks torch for the GPU")
    def run(backend):
        code = ("import sys; from galaxy.config import ClassifyConfig; from engine.run import classify; "
                f"s = classify(ClassifyConfig(({str(EXAMPLES)!r},), {str(tmp_path / 'c.csv')!r}, overwrite=True, "
                f"progress=False, backend={backend!r})); print(s.backend, 'torch' in sys.modules)")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                              check=True).stdout.split()

    run("auto")  # builds and times what is not cached yet
    chosen = run("auto")
    assert chosen[-1] == "False" or chosen[0] == "torch", chosen  # the torch backend itself needs torch
    assert run("onnxruntime")[-1] == "False"


def test_runs_starting_at_once_take_the_one_measurement(default_model, tmp_path, monkeypatch):
    """Tasks of a job array timed the backends at the same moment on shared cores and chose
    differently; one measures now while the others wait for its record."""
    import threading
    import time

    from engine import autotune

    _, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    calls, speeds = [], iter([{"onnxruntime": 100.0, "torch": 150.0}, {"onnxruntime": 150.0, "torch": 100.0}])

    def timing(sessions, batch, **kwargs):
        calls.append(1)
        time.sleep(0.5)  # the others start while this one measures
        return next(speeds)

    monkeypatch.setattr(autotune, "time_sessions", timing)
    chosen = []
    runs = [threading.Thread(target=lambda: chosen.append(
        autotune.measured_choice(card, ["onnxruntime", "torch"], 4, lambda name: object())[0])) for _ in range(3)]
    for run in runs:
        run.start()
        time.sleep(0.05)
    for run in runs:
        run.join()
    assert calls == [1] and chosen == ["torch"] * 3


def test_a_rerun_with_auto_continues_with_the_backend_that_began_the_output(tmp_path, monkeypatch):
    """A resubmitted task whose auto now chose another backend was refused ("this run's backend
    differ") and could only start over; it continues with the backend that began it."""
    from engine import autotune
    from engine.run import classify
    from galaxy.config import ClassifyConfig

    files = tuple(str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:6])
    out = tmp_path / "c.csv"
    first = classify(ClassifyConfig(files[:3], str(out), backend="onnxruntime", progress=False))
    assert first.backend == "onnxruntime fp32"

    def never(*args, **kwargs):
        raise AssertionError("auto timed the backends instead of continuing with the output's")

    monkeypatch.setattr(autotune, "measured_choice", never)
    again = classify(ClassifyConfig(files, str(out), backend="auto", progress=False))
    assert again.backend == "onnxruntime fp32" and (again.classified, again.resumed) == (3, 3)


def test_a_cache_on_a_file_system_without_locks_still_measures(default_model, tmp_path, monkeypatch):
    """Lustre without flock or NFS with nolock raise ENOLCK: auto failed with that error."""
    import errno

    from engine import autotune

    _, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(autotune.fcntl, "flock", no_locks)
    monkeypatch.setattr(autotune, "time_sessions", lambda sessions, batch, **kw: {"onnxruntime": 100.0, "torch": 150.0})
    chosen, _ = autotune.measured_choice(card, ["onnxruntime", "torch"], 4, lambda name: object())
    assert chosen == "torch"


@pytest.mark.parametrize("bf16_here, checked, offered", [(True, "bf16", True), (True, "fp32", False),
                                                          (False, "fp32", True), (False, "bf16", False)])
def test_auto_offers_torch_only_in_the_precision_its_check_ran(monkeypatch, bf16_here, checked, offered):
    """A torch check run in fp32 (a CPU without native bf16) let `auto` run torch in bf16 elsewhere, a
    precision never checked."""
    import engine.machine
    from engine import backends
    from galaxy.card import default_model_dir, load_card

    card = load_card(default_model_dir(), verify=False)
    monkeypatch.setattr(engine.machine, "native_bf16", lambda: bf16_here)
    record = {"precision": checked, "passed": True, "label_agreement": 1.0}
    assert backends.holds_check("torch", card, record, default_model_dir()) is offered
    card.backends = {"results": {"torch": record}}
    # without native bf16 auto offers no torch at all (fp32 torch is ONNX Runtime's fp32, slower)
    assert ("torch" in backends.cpu_candidates(card, default_model_dir())) is (offered and bf16_here)


def test_a_cached_cpu_choice_that_cannot_load_falls_back_to_fp32(monkeypatch, caplog):
    """A cached `auto` record naming int8 whose model cannot be rebuilt now (a read-only cache) ended the
    run, where a first measurement drops such a candidate and runs ONNX Runtime fp32."""
    from engine import backends
    from galaxy.card import default_model_dir, load_card
    from galaxy.errors import BackendUnavailable

    model_dir = default_model_dir()
    card = load_card(model_dir, verify=False)
    real = backends.load_named

    def load_named(name, *args, **kwargs):
        if name == "onnxruntime-int8":
            raise BackendUnavailable("cannot build the shipped int8 model: Read-only file system")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(backends, "load_named", load_named)
    monkeypatch.setattr(backends, "pick", lambda *args, **kwargs: "onnxruntime-int8")
    session = backends.load("auto", model_dir, card, backends.BackendOptions())
    assert session.name == "onnxruntime" and session.precision == "fp32"
    assert "onnxruntime-int8 cannot run here" in caplog.text and "using onnxruntime" in caplog.text
    with pytest.raises(BackendUnavailable):  # asked for by name: no other backend is put in its place
        backends.load_chosen("onnxruntime-int8", "onnxruntime-int8", model_dir, card, backends.BackendOptions())


@pytest.mark.parametrize("lasting", [False, True])
def test_a_candidate_that_failed_for_a_passing_cause_is_measured_again_next_time(monkeypatch, tmp_path, caplog, lasting):
    """A disk that filled once while the int8 model was built made `auto` record int8 as unable, and every
    later run used a slower backend until the record was deleted by hand. A lasting cause (a shipped recipe
    that rebuilds into another model here) is still recorded."""
    from engine import backends
    from engine.autotune import measured_choice
    from galaxy.card import default_model_dir, load_card
    from galaxy.errors import BackendUnavailable

    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    model_dir = default_model_dir()
    card = load_card(model_dir, verify=False)
    candidates, fail = ["onnxruntime", "onnxruntime-int8"], [True]

    def load(name):
        if name == "onnxruntime-int8" and fail[0]:
            exc = BackendUnavailable("cannot build the shipped int8 model (No space left on device)")
            exc.lasting = lasting
            raise exc
        return backends.load_named(name, model_dir, card, backends.BackendOptions())

    chosen, record = measured_choice(card, candidates, 8, load, model_dir)
    assert chosen == "onnxruntime" and record["images_per_s"]["onnxruntime-int8"] is None
    cached = list((tmp_path / "autotune").glob("*.json"))
    assert bool(cached) is lasting
    fail[0] = False
    chosen, record = measured_choice(card, candidates, 8, load, model_dir)
    assert (record["images_per_s"]["onnxruntime-int8"] is None) is lasting  # measured again, unless lasting


def test_an_int8_rebuild_that_fails_reading_its_own_files_says_so_and_leaves_nothing(monkeypatch, tmp_path):
    """On a nearly full cache ONNX Runtime's quantizer wrote its files short and failed reading them back:
    a protobuf DecodeError traceback that said nothing of space, and a 5 MB hidden side file left each time."""
    import engine.int8_models as int8_models
    from galaxy.card import default_model_dir, load_card
    from galaxy.errors import BackendUnavailable

    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    model_dir = default_model_dir()
    card = load_card(model_dir, verify=False)
    shipped = int8_models.shipped_int8(model_dir, card)

    def short_written(pre, tmp, *args, **kwargs):
        int8_models.shape_inferred(Path(pre)).write_bytes(b"\x08\x01cut short")
        raise ValueError("Error parsing message with type 'onnx.ModelProto': Wire format was corrupt")

    monkeypatch.setattr(int8_models, "build_int8", short_written)
    monkeypatch.setattr(int8_models, "short_of_space", lambda folder: True)
    with pytest.raises(BackendUnavailable, match=r"Wire format was corrupt; [\d,]+ MiB free there\): free space"):
        int8_models._rebuild(model_dir, card, shipped)
    out = int8_models.int8_path(card, shipped["method"])
    assert not [p.name for p in out.parent.iterdir() if str(os.getpid()) in p.name]
    # with room to spare the same failure is not the disk's (a KeyError after `export --opset 7` had read
    # "free space" with 47 GB free, and was measured again every run): said as it is, and lasting
    monkeypatch.setattr(int8_models, "short_of_space", lambda folder: False)
    with pytest.raises(BackendUnavailable, match=r"from int8.json \(ValueError: Error parsing .*\): build one here "
                                                 "with `galaxy quantize`$") as caught:
        int8_models._rebuild(model_dir, card, shipped)
    assert caught.value.lasting and "free" not in str(caught.value)


def test_an_int8_build_removes_the_work_files_of_builds_killed_long_ago(tmp_path):
    """A kill -9 during an int8 build left its private work files (~21 MB each time); nothing removed them."""
    import time

    from engine.int8_models import private_files

    out = tmp_path / "model.int8-ptq.onnx"
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{pid}"))
    stale = [tmp_path / f".{out.stem}.{dead}{suffix}" for suffix in (".pre.onnx", ".pre-inferred.onnx", ".ranges.json")]
    fresh = tmp_path / f".{out.stem}.{dead + 1}.pre.onnx"  # perhaps a live build on another host: kept
    kept = [tmp_path / f".{out.name}.{dead}.tmp", tmp_path / "other.onnx"]
    for path in (*stale, fresh, *kept):
        path.write_bytes(b"x")
    hours_ago = time.time() - 2 * 3600
    for path in (*stale, *kept):
        os.utime(path, (hours_ago, hours_ago))
    private_files(out, ".pre.onnx")
    assert not any(path.exists() for path in stale) and fresh.exists() and all(path.exists() for path in kept)


def test_auto_on_a_gpu_passes_over_a_backend_whose_check_failed(default_model, monkeypatch):
    """`auto` on a GPU picked TensorRT even where the card recorded its check as failed (review of
    the derived engines; read on a CPU machine: availability is faked)."""
    model_dir, card = default_model
    monkeypatch.setattr(backends, "available", lambda name, card, model_dir=None: name in backends.GPU_BACKENDS)
    failed = dataclasses.replace(card, backends={"results": {"tensorrt": {"passed": False}}})
    assert backends.pick("auto", card) == "tensorrt"
    assert backends.pick("auto", failed) == "tensorrt-int8"  # next in order (never available in truth)
    assert backends.failed_check("tensorrt", failed) and not backends.failed_check("torch-cuda", failed)


def test_an_int8_check_holds_only_on_cpus_of_the_int8_arithmetic_it_ran_on(default_model, monkeypatch, caplog):
    """Without VNNI or AMX, ONNX Runtime sums pairs of uint8 x int8 products in 16 bits, which saturate, so a
    check on a VNNI CPU says nothing of an AVX2 one: int8 was never offered there, though the shipped models
    pass their check there too (2-core Zen 3, session 41: compact 99.61%, full 99.71% of labels kept) and
    their int8 engines ran 1.5-1.7x fp32's. A check now holds on CPUs of the int8 arithmetic it ran on, and
    each arithmetic's check is kept."""
    from engine import machine
    from engine.int8_models import int8_fingerprint

    model_dir, card = default_model
    vnni = {"precision": "int8", "label_agreement": 0.997, "accuracy": 0.92, "passed": True, "images_per_s": 1.0,
            "fingerprint": int8_fingerprint(model_dir, card),
            "machine": "Zen 5 (avx2 fma avx512f avx512_vnni), 2 cores"}
    avx2 = dict(vnni, label_agreement=0.996, machine="AMD EPYC (avx2 fma), 2 cores", arithmetic="avx2")
    only_vnni = dataclasses.replace(card, backends={"machine": vnni["machine"], "results": {"onnxruntime-int8": vnni}})
    only_avx2 = dataclasses.replace(card, backends={"results": {"onnxruntime-int8": avx2}})
    both = dataclasses.replace(card, backends={"machine": avx2["machine"], "results": {"onnxruntime-int8": avx2},
                                               "int8_arithmetic": {"vnni": vnni, "avx2": avx2}})
    # an old record naming no machine ran where int8 was offered then: a VNNI CPU, whatever machine the card
    # names (a later check of torch alone on an AVX2 CPU renames it: the VNNI check was read as an AVX2 one)
    legacy = dataclasses.replace(card, backends={"machine": avx2["machine"], "results": {"onnxruntime-int8": {
        k: v for k, v in vnni.items() if k != "machine"}}})
    # a CPU whose flags say nothing (ARM, macOS): its arithmetic is not known, so no check holds there
    other = dataclasses.replace(card, backends={"results": {"onnxruntime-int8": dict(vnni, arithmetic="other")}})
    offered = {}
    for arithmetic in ("vnni", "avx2", "avx512", "other"):
        monkeypatch.setattr(machine, "int8_arithmetic", lambda: arithmetic)
        offered[arithmetic] = [name for name, checked in (("only_vnni", only_vnni), ("only_avx2", only_avx2),
                                                          ("both", both), ("legacy", legacy), ("other", other))
                               if "onnxruntime-int8" in backends.cpu_candidates(checked, model_dir)]
    assert offered == {"vnni": ["only_vnni", "both", "legacy"], "avx2": ["only_avx2", "both"], "avx512": [],
                       "other": []}
    assert backends.check_record("onnxruntime-int8", both) is None  # (avx512)
    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "vnni")
    assert backends.check_record("onnxruntime-int8", both) == vnni
    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "avx2")
    assert backends.check_record("onnxruntime-int8", both) == avx2
    # asked for by name where only another arithmetic was checked: run, with a word
    session = backends.load_chosen("onnxruntime-int8", "onnxruntime-int8", model_dir, only_vnni,
                                   backends.BackendOptions())
    assert session.name == "onnxruntime-int8"
    assert "checked against ONNX Runtime fp32 on vnni CPUs only; this CPU's int8 arithmetic (avx2)" in caplog.text
    caplog.clear()
    backends.load_chosen("onnxruntime-int8", "onnxruntime-int8", model_dir, both, backends.BackendOptions())
    assert "CPUs only" not in caplog.text
    # a check of an earlier int8 model (the AVX2 checks of 2026-11-30, before the export's folds were exact):
    # not listed as a check elsewhere, and a stale one of this CPU's arithmetic said so, not taken silently
    stale = dict(avx2, fingerprint="0" * 64)
    stale_avx2 = dataclasses.replace(both, backends=dict(both.backends, results={"onnxruntime-int8": stale},
                                                         int8_arithmetic={"vnni": vnni, "avx2": stale}))
    assert set(backends.int8_checks_holding(stale_avx2, model_dir)) == {"vnni"}
    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "avx512")
    caplog.clear()
    backends.load_chosen("onnxruntime-int8", "onnxruntime-int8", model_dir, stale_avx2, backends.BackendOptions())
    assert "on vnni CPUs only; this CPU's int8 arithmetic (avx512)" in caplog.text
    stale_only = dataclasses.replace(card, backends={"results": {"onnxruntime-int8": stale}})
    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "avx2")
    caplog.clear()
    backends.load_chosen("onnxruntime-int8", "onnxruntime-int8", model_dir, stale_only, backends.BackendOptions())
    assert "ran another int8 model than the one loading" in caplog.text and "CPUs only" not in caplog.text
    assert machine.arithmetic_of(["avx2", "fma", "avx512f"]) == "avx512"  # AVX-512 without VNNI saturates too
    assert machine.arithmetic_of(["avx2", "fma", "amx_int8"]) == machine.arithmetic_of(["avx_vnni"]) == "vnni"
    assert machine.machine_int8_arithmetic("Intel(R) Xeon(R) Gold 6130 (avx2 fma avx512f), 2 cores") == "avx512"
    assert machine.machine_int8_arithmetic("x86_64 2 cpus") is None


def test_a_backend_named_whose_check_failed_runs_with_a_warning(default_model, caplog, monkeypatch):
    """`--backend onnxruntime-int8` where the card records its check as failed ran with no word at any
    verbosity, while `auto` rightly passed it over (review of the engine cache, session 40)."""
    from engine import machine

    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "vnni")  # the arithmetic the card's check ran on
    model_dir, card = default_model
    results = copy.deepcopy(card.backends["results"])
    results["onnxruntime-int8"].update(passed=False, label_agreement=0.99, arithmetic="vnni")
    failed = dataclasses.replace(card, backends={**card.backends, "results": results})
    session = backends.load_chosen("onnxruntime-int8", "onnxruntime-int8", model_dir, failed, backends.BackendOptions())
    assert session.name == "onnxruntime-int8"
    assert ("onnxruntime-int8: the card records its check against ONNX Runtime fp32 as failed (99.00% label "
            "agreement), so `auto` does not use it; running it as asked") in caplog.text
    caplog.clear()
    backends.load_chosen("onnxruntime-int8", "onnxruntime-int8", model_dir, card, backends.BackendOptions())
    assert "as failed" not in caplog.text
    results["onnxruntime-int8"]["fingerprint"] = "0" * 64  # a check of another int8 model (plain ptq, say): not this
    backends.load_chosen("onnxruntime-int8", "onnxruntime-int8", model_dir, failed, backends.BackendOptions())
    assert "as failed" not in caplog.text
