"""int8 methods: the measured sensitivity search, the fake-quant fine-tune, and which recipe is used."""

import copy
import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from engine import backends, int8_models, quantize, quantize_sensitivity
from engine.artifacts import onnx_model
from galaxy.cli import cli
from galaxy.evaluation.metrics import label_agreement
from galaxy.io.images import load_input
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def split(default_model, shared_data):
    """(calibration, evaluation) paths: real training images of the default model, never validation ones."""
    model_dir, card = default_model
    paths = quantize.training_paths(model_dir, card, shared_data / "labels.csv", limit=16 + 64)
    return paths[:16], paths[16:]


def test_training_paths_never_hold_validation_images(default_model, shared_data):
    from galaxy.card import validation_ids

    model_dir, card = default_model
    paths = quantize.training_paths(model_dir, card, shared_data / "labels.csv", limit=None)
    val_ids = validation_ids(model_dir, card)
    assert val_ids and len(paths) > 1000
    assert not {p.rsplit("/", 1)[-1].split(".")[0] for p in paths} & {str(i) for i in val_ids}


def test_ptq_sensitive_records_agreement_and_keeps_nothing_when_plain_suffices(default_model, split, tmp_path):
    model_dir, card = default_model
    out = quantize.quantize(model_dir, card, split[0], out=tmp_path / "int8.onnx", method="ptq-sensitive",
                            evaluation_paths=split[1], target=0.0)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["recipe"] == int8_models.SENSITIVE_RECIPE and record["excluded_nodes"] == []
    assert 0.9 <= record["training_agreement"] <= 1 and record["evaluation_images"] == len(split[1])


def test_search_keeps_the_measured_most_sensitive_nodes_in_fp32(default_model, split, tmp_path, monkeypatch):
    """An unreachable target: the search measures each node and keeps the worst ones, up to the limit."""
    model_dir, card = default_model
    nodes = quantize_sensitivity.candidate_nodes(onnx_model(model_dir, card))
    assert len(nodes) > 20 and any(n.endswith("Gemm") for n in nodes)
    monkeypatch.setattr(quantize_sensitivity, "candidate_nodes", lambda _: [nodes[0], nodes[len(nodes) // 2], nodes[-1]])
    monkeypatch.setattr(quantize_sensitivity, "MAX_EXCLUDED_FRACTION", 0.5)
    out = quantize.quantize(model_dir, card, split[0], out=tmp_path / "int8.onnx", method="ptq-sensitive",
                            evaluation_paths=split[1], target=1.01)
    record = json.loads(out.with_suffix(".json").read_text())
    scores = record["scores"]
    assert len(scores) == 3 and all(v > 0 for v in scores.values())  # quantizing any one node changes outputs
    assert not record["reached_target"]
    assert [t["excluded"] for t in record["trials"]] == [0, 1]
    best = max(record["trials"], key=lambda t: (t["agreement"], -t["excluded"]))
    assert record["excluded_nodes"] == ([max(scores, key=scores.get)] if best["excluded"] else [])


def test_the_int8_backend_uses_the_preferred_built_recipe_and_auto_trusts_only_its_check(default_model, tmp_path,
                                                                                         monkeypatch):
    from engine import machine

    model_dir, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path))
    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "vnni")  # a VNNI CPU, whatever runs the test
    assert int8_models.built_int8(card) is None
    for method in ("ptq", "ptq-sensitive"):
        path = int8_models.int8_path(card, method)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        assert int8_models.built_int8(card) == (int8_models.RECIPES[method], path)
    with pytest.raises(Exception, match="unknown int8 method"):
        int8_models.int8_path(card, "fp8")
    checked = {"passed": True, "images_per_s": 1}
    for recipe, offered in ((int8_models.SENSITIVE_RECIPE, True), (int8_models.INT8_RECIPE, False), (None, False)):
        record = dict(checked, **({"recipe": recipe} if recipe else {}))  # no recipe: an old check of plain ptq
        card_ = dataclasses.replace(card, backends={"results": {"onnxruntime-int8": record}})
        assert ("onnxruntime-int8" in backends.cpu_candidates(card_)) == offered
    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "avx2")  # AVX2 or AVX-512 without VNNI: U8S8 may saturate
    record = dict(checked, recipe=int8_models.SENSITIVE_RECIPE)
    checked = dataclasses.replace(card, backends={"results": {"onnxruntime-int8": record}})
    assert "onnxruntime-int8" not in backends.cpu_candidates(checked)
    assert backends.pick("onnxruntime-int8", checked) == "onnxruntime-int8"  # asked for by name: given


def test_a_shipped_int8_recipe_rebuilds_the_checked_model_without_data(default_model, split, tmp_path, monkeypatch):
    """`quantize --ship` writes the ranges, the fp32 nodes and a fingerprint into the model folder; where
    nothing is built (a fresh machine, no training data) the int8 backend rebuilds the same model from
    them, `auto` may offer it, and a rebuild whose fingerprint differs is refused."""
    import shutil

    from engine import machine
    from galaxy.errors import BackendUnavailable

    model_dir, card = default_model
    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "vnni")
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "cache"))
    built = quantize.quantize(folder, card, split[0], method="ptq")
    original = built.read_bytes()
    shipped = int8_models.ship_int8(folder, card, "ptq")
    recipe = json.loads(shipped.read_text())
    assert recipe["recipe"] == int8_models.INT8_RECIPE and recipe["ranges"]
    assert recipe["weights_sha256"] == card.weights_sha256
    assert recipe["fingerprint"] == int8_models.model_fingerprint(built) and recipe["temperature"] == card.temperature
    recalibrated = dataclasses.replace(card, calibration=dict(card.calibration, temperature=card.temperature * 2))
    assert int8_models.shipped_int8(folder, recalibrated) is None  # a later calibrate made another int8 model
    built.unlink()
    assert int8_models.built_int8(card) is None and int8_models.int8_recipe(folder, card) == int8_models.INT8_RECIPE
    checked = dataclasses.replace(card, backends={"results": {"onnxruntime-int8": {
        "passed": True, "images_per_s": 1, "recipe": int8_models.INT8_RECIPE}}})
    assert "onnxruntime-int8" in backends.cpu_candidates(checked, folder)
    assert "onnxruntime-int8" not in backends.cpu_candidates(checked)  # no folder, nothing built: nothing to load
    session = backends.load("onnxruntime-int8", folder, card, backends.BackendOptions())
    assert session.recipe == int8_models.INT8_RECIPE and int8_models.built_int8(card) == (int8_models.INT8_RECIPE, built)
    assert built.read_bytes() == original  # the same file, not merely the same fingerprint
    built.unlink()
    recipe["fingerprint"] = "0" * 64
    shipped.write_text(json.dumps(recipe))
    with pytest.raises(BackendUnavailable, match="differs from the one checked"):
        int8_models.require_int8(folder, card)
    assert int8_models.built_int8(card) is None
    # remembered: later runs say why, not "no int8 model yet" (review of the engine cache, session 40)
    with pytest.raises(BackendUnavailable, match="was rebuilt here into another model than the one checked .*"
                                                 "rebuild-differs.json"):
        int8_models.require_int8(folder, card)
    # then a model built here is the way out (the shipped recipe is not tried again), and auto's
    # trust follows it: a check of the shipped model does not hold for it
    rebuilt_here = quantize.quantize(folder, card, split[0], method="ptq")
    assert int8_models.require_int8(folder, card) == (int8_models.INT8_RECIPE, rebuilt_here)
    assert int8_models.int8_fingerprint(folder, card) == int8_models.model_fingerprint(rebuilt_here) != "0" * 64
    assert not backends.holds_check("onnxruntime-int8", card, {"fingerprint": "0" * 64}, folder)
    assert int8_models.shipped_int8(folder, dataclasses.replace(card, weights_sha256="0" * 64)) is None


def test_auto_offers_int8_only_for_the_model_its_check_ran(default_model, split, tmp_path, monkeypatch):
    """A `galaxy quantize` of a copy of a model (same weights and temperature: the same cache entry) put
    a build no check had run under the shipped model's int8, and `auto` loaded it, since only recipe
    names were compared. The folder's shipped recipe now decides what loads, and a check holds only
    for the fingerprint it ran."""
    from engine import machine

    model_dir, card = default_model
    monkeypatch.setattr(machine, "int8_arithmetic", lambda: "vnni")
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "cache"))
    shipped = int8_models.shipped_int8(model_dir, card)
    recipe, path = int8_models.require_int8(model_dir, card)  # rebuilt from the folder's int8.json
    assert int8_models.model_fingerprint(path) == shipped["fingerprint"] == int8_models.int8_fingerprint(model_dir, card)
    other = quantize.quantize(model_dir, card, split[0], method="ptq")  # plain ptq: another model
    other.replace(path)  # ... built under the shipped recipe's cache entry
    assert int8_models.model_fingerprint(path) != shipped["fingerprint"]
    record = {"passed": True, "images_per_s": 1, "recipe": recipe, "fingerprint": shipped["fingerprint"]}
    checked = dataclasses.replace(card, backends={"results": {"onnxruntime-int8": record}})
    assert "onnxruntime-int8" in backends.cpu_candidates(checked, model_dir)
    session = backends.load("onnxruntime-int8", model_dir, card, backends.BackendOptions())
    assert session.fingerprint == shipped["fingerprint"]  # the foreign build was replaced, not loaded
    stale = dataclasses.replace(card, backends={"results": {"onnxruntime-int8": dict(record, fingerprint="0" * 64)}})
    assert "onnxruntime-int8" not in backends.cpu_candidates(stale, model_dir)


def test_fake_quant_finetune_moves_weights_and_exports_a_network_that_keeps_labels(default_model, tmp_path):
    import torch

    from galaxy.training import qat
    from galaxy.training.model import load_network

    model_dir, card = default_model
    images = np.stack([load_input(p, card.input_spec)[0] for p in sorted(EXAMPLES.glob("*.jpeg"))])
    network, _ = load_network(model_dir, card)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    wrapped = qat.wrap(copy.deepcopy(network))
    assert any(isinstance(m, qat.FakeQuantized) for m in wrapped.modules())
    assert not any(isinstance(m, qat.FakeQuantized) for m in qat.unwrap(wrapped).modules())
    tuned, record = qat.finetune(network, images[:8], steps=2, batch=2, lr=1e-5)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())  # the original is untouched
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    assert set(tuned.state_dict()) == set(before) and record["steps"] == 2
    out = qat.export(tuned, images, tmp_path / "tuned.onnx")
    reference = quantize_sensitivity.logits(onnx_model(model_dir, card), images)
    assert label_agreement(quantize_sensitivity.logits(out, images), reference) >= 0.9


def test_quantize_cli_names_the_methods_and_refuses_others(default_model, tmp_path):
    from click.testing import CliRunner

    from galaxy.cli import cli

    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n")
    result = CliRunner().invoke(cli, ["quantize", str(default_model[0]), "--calibration", str(labels), "--method", "fp8"])
    assert result.exit_code == 2 and "ptq-sensitive" in result.output and "qat" in result.output


@pytest.mark.slow
def test_check_backends_keeps_the_speeds_of_machines_checked_before(default_model, shared_data, tmp_path,
                                                                   monkeypatch):
    """check-backends records this machine's check and speeds and keeps the speeds an earlier check
    measured elsewhere (issue 16: the card keeps the speeds per machine), including a card from
    before that history, whose one machine's speeds sat in its results; and the records of the
    backends it was not asked to check."""
    import shutil

    from engine.checks import check_backends
    from engine.machine import cpu_name
    from galaxy.card import load_card, speeds_by_machine

    model_dir, _ = default_model
    copy = tmp_path / "model"
    copy.mkdir()
    for name in ("card.json", "model.safetensors", "val_ids.txt"):
        shutil.copy(model_dir / name, copy / name)
    card = load_card(copy)
    torch_check = {"precision": "bf16", "label_agreement": 1.0, "passed": True, "images_per_s": 50.0}
    card.backends = {"machine": "Older CPU (avx2 fma), 2 cores",
                     "results": {"onnxruntime": {"precision": "fp32", "accuracy": 0.9, "images_per_s": 73.0,
                                                 "passed": True}, "torch": torch_check,
                                 "onnxruntime-int8": {"precision": "int8", "label_agreement": 0.999, "passed": True,
                                                      "images_per_s": 99.0}}}
    card.save(copy)
    from engine import backends
    from galaxy.errors import ModelError

    real_load = backends.load_named

    def no_int8_built(name, *args, **kwargs):  # as for a model of your own before `galaxy quantize`
        if name == "onnxruntime-int8":
            raise ModelError("no int8 model for this model yet")
        return real_load(name, *args, **kwargs)

    monkeypatch.setattr(backends, "load_named", no_int8_built)
    record = check_backends(copy, load_card(copy), shared_data / "labels.csv", names=("onnxruntime-int8",))
    assert "no int8 model" in record["not_checked"]["onnxruntime-int8"]  # the rest is still checked
    # a check of int8 alone keeps torch's earlier record (it replaced every record: a `--backend torch`
    # check dropped int8's pass, and `auto` stopped offering it)
    assert list(record["results"]) == ["onnxruntime", "torch"] and record["results"]["torch"] == torch_check
    # ... and drops int8's earlier pass, which was printed as "passed" beside "not checked: no int8 model"
    assert "checked" in record["results"]["onnxruntime"]
    speeds = speeds_by_machine(load_card(copy).backends)
    assert speeds == record["speeds"]
    assert speeds["Older CPU (avx2 fma), 2 cores"] == {"onnxruntime": 73.0, "torch": 50.0, "onnxruntime-int8": 99.0}
    (here,) = [machine for machine in speeds if machine.startswith(cpu_name())]
    assert record["machine"] == here and speeds[here]["onnxruntime"] > 0 and "measured" in speeds[here]
    assert record["results"]["onnxruntime"]["accuracy"] == pytest.approx(0.925, abs=0.01)


def test_check_backends_refuses_a_name_that_is_no_backend_before_anything_runs(tmp_path):
    """A mistyped --backend was reported 'not checked' with exit 0, after the card's records had been replaced."""
    from galaxy.cli import cli
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["check-backends", "sdss-xception-compact", "--data", str(EXAMPLES / "labels.csv"),
                                      "--backend", "bogus"])
    assert result.exit_code == 2 and "cannot check backend 'bogus'" in result.output
    result = CliRunner().invoke(cli, ["check-backends", "sdss-xception-compact", "--data", str(EXAMPLES / "labels.csv"),
                                      "--backend", "torch,bogus"])  # as the help shows the default: one list
    assert result.exit_code == 2 and "cannot check backend 'bogus'" in result.output


@pytest.mark.parametrize("options,says", [
    (["--images=-5"], "Invalid value"), (["--images=8"], "Invalid value"), (["--evaluation-images=-1"], "Invalid value"),
    (["--evaluation-images=5", "--method", "ptq"], "give 0 (no agreement measured) or at least 16"),
    (["--evaluation-images=16"], "ptq-sensitive measures each node's sensitivity on them; give at least 64"),
    (["--evaluation-images=0"], "give at least 64")])
def test_quantize_refuses_image_counts_it_cannot_use(options, says):
    """--images -5 took all training images but the last five (a slice) and ran on; --evaluation-images 5
    failed after the work began, blaming the calibration images; with the default method the advice
    (0, or at least 16) failed on the next try (ptq-sensitive needs 64)."""
    from galaxy.cli import cli
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["quantize", "sdss-xception-compact", "--calibration",
                                      str(EXAMPLES / "labels.csv"), *options])
    assert result.exit_code == 2 and says in result.output, result.output


def test_processes_rebuilding_the_shipped_int8_model_at_once_all_get_it(default_model, tmp_path):
    """A job array's first tasks on a fresh cache: their rebuilds shared one set of work files (the pid
    was cut from their names) and deleted each other's, and 8 of 21 failed with tracebacks."""
    import os
    import shutil
    import subprocess
    import sys

    model_dir, card = default_model
    fp32 = onnx_model(model_dir, card)
    cache = tmp_path / "cache"
    (cache / "onnx").mkdir(parents=True)
    shutil.copy(fp32, cache / "onnx" / fp32.name)  # the fp32 engine cached, the int8 one not yet
    code = ("from engine.artifacts import resolve_model; from engine.int8_models import model_fingerprint, "
            "require_int8; d, c = resolve_model(None); print(model_fingerprint(require_int8(d, c)[1]))")
    env = {**os.environ, "GALAXY_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert {out.strip() for out, _ in outs} == {int8_models.shipped_int8(model_dir, card)["fingerprint"]}
    assert not [p.name for p in (cache / "onnx").iterdir() if p.name.startswith(".")]  # no work files left


def test_a_check_of_one_backend_keeps_this_machines_speeds_of_the_others(default_model, shared_data, tmp_path,
                                                                          monkeypatch, caplog):
    """A check of torch alone dropped int8's speed on this machine from the card's speeds (its record was
    kept), and a kept record did not say which machine it was checked on."""
    import shutil

    import engine.checks as checks
    from engine.machine import int8_arithmetic
    from galaxy.card import load_card

    model_dir, _ = default_model
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    real = checks.validation_tensors

    def few(*args, **kwargs):  # 64 galaxies: what is kept is the point here, not the figures
        val, tensors, labels = real(*args, **kwargs)
        return val, tensors[:64], labels[:64]

    monkeypatch.setattr(checks, "validation_tensors", few)
    here = int8_arithmetic()
    other = "avx2" if here != "avx2" else "vnni"
    card = load_card(copy)
    elsewhere = dict(card.backends["results"]["onnxruntime-int8"], arithmetic=other, machine="Another CPU")
    card.backends = dict(card.backends, results=dict(card.backends["results"], **{"onnxruntime-int8": elsewhere}),
                         int8_arithmetic={other: elsewhere})
    card.save(copy)
    with caplog.at_level("WARNING"):
        first = checks.check_backends(copy, load_card(copy), shared_data / "labels.csv", names=("onnxruntime-int8",))
    assert "CPUs only" not in caplog.text  # the check it runs is not missing (load_chosen's warning had been logged)
    machine = first["machine"]
    assert first["results"]["onnxruntime-int8"]["machine"] == machine
    # the check says which int8 arithmetic it ran on; another arithmetic's check is kept beside it
    assert first["results"]["onnxruntime-int8"]["arithmetic"] == here
    assert first["int8_arithmetic"] == {other: elsewhere, here: first["results"]["onnxruntime-int8"]}
    second = checks.check_backends(copy, load_card(copy), shared_data / "labels.csv", names=("torch",))
    assert second["results"]["onnxruntime-int8"] == first["results"]["onnxruntime-int8"]  # kept, with its machine
    assert second["int8_arithmetic"] == first["int8_arithmetic"]
    assert second["speeds"][machine]["onnxruntime-int8"] == first["speeds"][machine]["onnxruntime-int8"]
    assert second["speeds"][machine]["torch"] > 0
    # the kept speed says when it was measured: `galaxy models` listed it as one run's with today's (review)
    assert second["speeds"][machine]["measured_before"] == {"onnxruntime-int8": first["speeds"][machine]["measured"]}
    listing = CliRunner().invoke(cli, ["models", str(copy)])
    assert f"onnxruntime-int8 {first['speeds'][machine]['onnxruntime-int8']:,.0f} (measured " in listing.output


def test_plain_ptq_short_of_the_target_is_warned_of(default_model, monkeypatch, caplog):
    """ptq's 0.984 agreement on training images (target 0.998) was an INFO line: check-backends then
    refused a model nobody had been warned about (review of the derived engines)."""
    from engine import quantize_sensitivity

    _, card = default_model
    monkeypatch.setattr(quantize, "calibration_tensors", lambda *a, **k: np.zeros((100, 3, 4, 4), np.float32))
    fp32_logits = np.tile([[2.0, 0.0]], (100, 1))
    int8_logits = fp32_logits.copy()
    int8_logits[:3] = [0.0, 2.0]  # 97% agreement
    monkeypatch.setattr(quantize_sensitivity, "logits", lambda model, tensors: fp32_logits if model == "fp32"
                        else int8_logits)
    record = quantize._measured("fp32", None, "int8", None, card, [], 0.998, "ptq")
    assert record["training_agreement"] == 0.97 and "short of 0.9980" in caplog.text


def test_quantize_into_a_cache_that_cannot_be_written_names_it(default_model, split, tmp_path, monkeypatch):
    """A read-only cache gave `Error: .../.<stem>.<pid>.pre.onnx: Read-only file system`, naming a hidden
    work file and no way out (review of the derived engines)."""
    import errno

    from galaxy.errors import ModelError

    model_dir, card = default_model
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "cache"))

    def read_only(pre, path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(quantize, "build_int8", read_only)
    with pytest.raises(ModelError, match="cannot build the int8 model into .*Read-only file system.*set GALAXY_CACHE"):
        quantize.quantize(model_dir, card, split[0], method="ptq")
    assert not [p.name for p in (tmp_path / "cache" / "onnx").iterdir() if p.name.startswith(".")]


def test_the_shipped_int8_model_rebuilds_after_an_export_at_another_opset(model_copy, tmp_path, monkeypatch):
    """`galaxy export --opset 7` into the model folder made the int8 rebuild read that file, whose tensor
    names the shipped ranges do not key (KeyError), said as a full disk with 47 GB free and measured
    again every run (review of the engine cache, session 40): the rebuild reads galaxy's own opset."""
    from engine.artifacts import cached_onnx_path, onnx_model
    from galaxy.card import load_card
    from galaxy.training.export import export_onnx

    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "cache"))
    export_onnx(model_copy, None, opset=7)
    card = load_card(model_copy)
    assert card.export["opset"] == 7 and onnx_model(model_copy, card) == model_copy / "model.onnx"
    assert onnx_model(model_copy, card, canonical=True) == cached_onnx_path(card)
    recipe, path = int8_models.require_int8(model_copy, card)
    assert int8_models.model_fingerprint(path) == int8_models.shipped_int8(model_copy, card)["fingerprint"]


@pytest.mark.parametrize("command", [["check-backends", "--data", str(EXAMPLES / "labels.csv"), "--backend", "torch"],
                                     ["quantize", "--calibration", str(EXAMPLES / "labels.csv"), "--method", "ptq",
                                      "--ship", "--evaluation-images", "0"]])
def test_a_model_folder_that_cannot_be_written_is_refused_before_the_work(model_copy, monkeypatch, command):
    """check-backends ran all 1,039 validation images and quantize --ship built its model (13 minutes for
    the full model's ptq-sensitive) before finding the model folder read-only (review, session 40)."""
    import errno
    import tempfile
    from pathlib import Path

    from engine import checks

    probe = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == model_copy:
            raise OSError(errno.EROFS, "Read-only file system")
        return probe(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(checks, "validation_tensors", lambda *a, **k: pytest.fail("images read first"))
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: pytest.fail("built first"))
    result = CliRunner().invoke(cli, [command[0], str(model_copy), *command[1:]])
    assert result.exit_code == 2, result.output
    assert f"nothing can be written in {model_copy} (Read-only file system)" in result.output


def test_every_unreadable_calibration_image_is_counted_in_one_failure(tmp_path, default_model):
    """The first unreadable calibration image ended quantize, uncounted: one rerun per bad file."""
    from galaxy.errors import ImageReadError

    good = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))[:16]
    bad = []
    for k in range(3):
        (tmp_path / f"bad{k}.jpeg").write_text("not a JPEG")
        bad.append(str(tmp_path / f"bad{k}.jpeg"))
    with pytest.raises(ImageReadError) as caught:
        quantize.calibration_tensors(good[:4] + bad + good[4:], default_model[1].input_spec)
    assert caught.value.path == bad[0] and "calibration image unreadable" in caught.value.reason
    assert f"2 more unreadable: {bad[1]}, {bad[2]}" in caught.value.reason


def test_calibration_images_that_16_does_not_divide_are_batched_in_one_size(default_model, shared_data, tmp_path):
    """ORT's percentile calibrator stacks every batch's outputs: 50 images in batches of 16 and 17 had been a
    ValueError ("inhomogeneous shape"), and so were 100 and 300 (review, session 45)."""
    model_dir, card = default_model
    paths = quantize.training_paths(model_dir, card, shared_data / "labels.csv", limit=50)
    out = quantize.quantize(model_dir, card, paths, out=tmp_path / "int8.onnx", method="ptq")
    assert out.is_file() and out.stat().st_size > 0


def test_data_of_validation_images_alone_is_refused_saying_so(default_model):
    """The 40 samples are all of the default model's validation split: "need at least 16 calibration images, got
    0" had not said why (review, session 45)."""
    from galaxy.errors import UsageError

    model_dir, card = default_model
    with pytest.raises(UsageError, match="all 40 labelled images of .* are in .* validation split"):
        quantize.training_paths(model_dir, card, EXAMPLES / "labels.csv")
