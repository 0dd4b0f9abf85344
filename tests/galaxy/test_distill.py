"""The compact Xception (timm-registered) and `galaxy distill` on a small real subset."""

import json

import pytest
import torch
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.training.model import create_network, network_cost
from tests.conftest import SHARED_DATA


def test_compact_variants_are_timm_models_much_cheaper_than_the_full_one():
    import timm

    full = network_cost(create_network("legacy_xception", 2), 96)
    assert full["gflop_per_galaxy"] == pytest.approx(1.65, abs=0.01)  # the measurement
    assert "xception_compact_w50_d2" in timm.list_models("xception_compact_*")
    compact = create_network("xception_compact_w50_d2", 2, drop_rate=0.1)
    cost = network_cost(compact, 96)
    assert cost["gflop_per_galaxy"] <= 0.25 and cost["parameters"] < full["parameters"] / 5
    assert compact(torch.zeros(3, 3, 64, 64)).shape == (3, 2)
    assert len(compact.middle) == 2 and compact.get_classifier().in_features == 1024
    # counted where the network lies (a GPU after training there; meta stands in for it here)
    assert network_cost(compact.to("meta"), 96) == cost


@pytest.mark.slow
def test_distill_a_compact_student_from_the_shipped_model(tmp_path, default_model):
    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss data set is not at {SHARED_DATA}")
    out = tmp_path / "student"
    result = CliRunner().invoke(cli, ["distill", str(default_model[0]), "--data", str(SHARED_DATA / "labels.csv"),
                                      "-o", str(out), "--arch", "xception_compact_w25_d2", "--size", "32",
                                      "--batch-size", "8", "--limit", "16", "--epochs", "1", "--workers", "2",
                                      "--teacher-views", "1", "-q"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"] == "xception_compact_w25_d2"
    training = card["training"]
    assert training["command"].startswith("galaxy distill ")
    assert training["teacher"]["teachers"][0]["weights_sha256"] == default_model[1].weights_sha256
    assert training["config"]["soft_temperature"] == 2.0 and training["config"]["init"] == "scratch"
    assert 0 < training["cost"]["gflop_per_galaxy"] < 0.01 and training["cost"]["parameters"] > 0
    from galaxy.training.model import load_network

    network, _ = load_network(out)  # the card's architecture name rebuilds the network
    assert network(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.slow
def test_train_seed_reruns_a_recipe_on_the_same_split(tmp_path, default_model):
    """--train-seed changes the weights, order and augmentation but not the split; --train-seed 0 is --seed 0."""
    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss data set is not at {SHARED_DATA}")

    def distil(name, *extra):
        out = tmp_path / name
        result = CliRunner().invoke(cli, ["distill", str(default_model[0]), "--data", str(SHARED_DATA / "labels.csv"),
                                          "-o", str(out), "--arch", "xception_compact_w25_d2", "--size", "32",
                                          "--batch-size", "8", "--limit", "16", "--epochs", "1", "--workers", "2",
                                          "--teacher-views", "1", "--no-calibrate", "-q", *extra])
        assert result.exit_code == 0, result.output
        return json.loads((out / "card.json").read_text())

    base, same, other = distil("base"), distil("same", "--train-seed", "0"), distil("other", "--train-seed", "1")
    assert base["split"] == same["split"] == other["split"]
    assert base["weights"] == same["weights"] and other["weights"] != base["weights"]
    assert other["training"]["config"]["train_seed"] == 1 and base["training"]["config"]["train_seed"] is None


def test_a_resume_refuses_a_teacher_whose_weights_changed(tmp_path, default_model):
    """The checkpoint did not say which targets it learned from: a teacher replaced between the kill
    and the resume was used for the rest of the run, and the card named only the new one."""
    import shutil

    from galaxy.card import shipped_model_dirs

    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss data set is not at {SHARED_DATA}")
    teacher = tmp_path / "teacher"
    shutil.copytree(default_model[0], teacher)
    common = ["distill", str(teacher), "--data", str(SHARED_DATA / "labels.csv"), "--arch", "xception_compact_w25_d2",
              "--size", "32", "--batch-size", "8", "--limit", "16", "--workers", "2", "--teacher-views", "1", "-q"]
    out = tmp_path / "student"
    assert CliRunner().invoke(cli, [*common, "-o", str(out), "--epochs", "1"]).exit_code == 0
    other = next(d for d in map(str, shipped_model_dirs()) if d != str(default_model[0]))
    shutil.rmtree(teacher)
    shutil.copytree(other, teacher)  # another model at the teacher's path
    result = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "resumed"), "--epochs", "2", "--resume",
                                      str(out / "checkpoints" / "last.pt")])
    assert result.exit_code == 2 and "learned from other soft targets" in result.output, result.output
    assert not (tmp_path / "resumed" / "checkpoints" / "soft_targets.npz").exists()  # refused before labelling
