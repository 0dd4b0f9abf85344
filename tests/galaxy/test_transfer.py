"""Transfer learning: depth groups, the unfreezing schedule, --init, and determinism."""

import json

import pytest
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.training.model import create_network
from galaxy.training.transfer import apply_freeze, depth_groups, optimizer_groups, trainable_from
from tests.conftest import EXAMPLES


def test_depth_groups_cover_every_parameter_once_head_last():
    network = create_network("legacy_xception", 2)
    groups = depth_groups(network, layer_decay=0.5)
    assert [g.name for g in groups] == ["early", "middle", "late", "head"]
    seen = [id(p) for g in groups for p in g.parameters()]
    assert len(seen) == len(set(seen)) == len(list(network.parameters()))
    assert groups[-1].modules == [network.get_classifier()]
    assert [g.lr_scale for g in groups] == [0.125, 0.25, 0.5, 1.0]
    lrs = [g["lr"] for g in optimizer_groups(groups, 1e-3)]
    assert lrs == [1.25e-4, 2.5e-4, 5e-4, 1e-3]


def test_unfreezing_schedule_head_then_late_then_all():
    assert [trainable_from(e, 2, 4) for e in range(1, 8)] == [3, 3, 2, 2, 0, 0, 0]
    assert trainable_from(1, 0, 4) == 0  # from scratch nothing is frozen
    network = create_network("legacy_xception", 2)
    groups = depth_groups(network)
    network.train()
    apply_freeze(groups, 3)
    assert all(p.requires_grad for p in groups[-1].parameters())
    assert not any(p.requires_grad for g in groups[:-1] for p in g.parameters())
    assert not groups[0].modules[1].training  # frozen BatchNorm keeps its statistics


def _train(out, *extra):
    return CliRunner().invoke(cli, ["train", str(EXAMPLES / "labels.csv"), "-o", str(out), "--size", "32",
                                    "--batch-size", "8", "--val-fraction", "0.25", "--workers", "2", *extra])


@pytest.mark.slow
def test_same_seed_same_weights_and_init_from_a_model(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert _train(first, "--epochs", "1").exit_code == 0
    assert _train(second, "--epochs", "1").exit_code == 0
    sha = [json.loads((m / "card.json").read_text())["weights"]["sha256"] for m in (first, second)]
    assert sha[0] == sha[1]  # deterministic with a seed on the CPU
    tuned = tmp_path / "tuned"
    result = _train(tuned, "--epochs", "2", "--init", str(first), "--freeze-epochs", "1", "--layer-decay", "0.5")
    assert result.exit_code == 0, result.output
    card = json.loads((tuned / "card.json").read_text())
    history = json.loads((tuned / "history.json").read_text())
    assert history[0]["training"] == ["head"] and history[1]["training"] == ["late", "head"]
    assert card["training"]["config"]["init"] == str(first)
    learned = set((tuned / "train_ids.txt").read_text().split())  # what its weights learned, through --init too
    assert set((first / "train_ids.txt").read_text().split()) <= learned
    assert card["calibration"]["temperature"] > 0 and "ece" in card["metrics"]["validation"]


@pytest.mark.slow
def test_init_from_a_model_with_another_split_of_the_same_data_is_refused(tmp_path):
    first = tmp_path / "a"
    assert _train(first, "--epochs", "1").exit_code == 0
    result = _train(tmp_path / "leaky", "--epochs", "1", "--init", str(first), "--seed", "5")
    assert result.exit_code == 2
    assert "of this run's validation images" in result.output and "--seed" in result.output
    assert f"--init {first} was trained" in result.output  # named once (it had been "--init A A was")
    learned = (first / "train_ids.txt").read_text()
    (first / "train_ids.txt").unlink()  # a model that does not say what it learned: refused by its split
    result = _train(tmp_path / "leaky", "--epochs", "1", "--init", str(first), "--seed", "5")
    assert result.exit_code == 2
    assert "another validation split" in result.output and "--seed" in result.output
    assert f"--init {first} was trained" in result.output
    # a model that learned from it (same split) cannot say all it learned either: it writes no list, so the
    # split rule holds it too (its list of its own images alone had let a new split validate on A's; review)
    middle = tmp_path / "m"
    assert _train(middle, "--epochs", "1", "--init", str(first)).exit_code == 0
    assert not (middle / "train_ids.txt").exists()
    assert "train_ids_file" not in json.loads((middle / "card.json").read_text())["split"]
    result = _train(tmp_path / "leaky", "--epochs", "1", "--init", str(middle), "--seed", "5")
    assert result.exit_code == 2 and "another validation split" in result.output
    (first / "train_ids.txt").write_text(learned)
    # nor can one begun from a weights file without its card (A's, copied out: it had written a list of its
    # own images alone, as if the weights had learned nothing)
    bare = tmp_path / "copied.safetensors"
    bare.write_bytes((first / "model.safetensors").read_bytes())
    from_bare = tmp_path / "from-bare"
    result = _train(from_bare, "--epochs", "1", "--init", str(bare))
    assert result.exit_code == 0, result.output
    assert not (from_bare / "train_ids.txt").exists()
    assert "train_ids_file" not in json.loads((from_bare / "card.json").read_text())["split"]

    # data made of its training images alone holds none of its validation ids, yet a new split of it
    # validates on images the model learned: its train_ids.txt tells
    trained = set((first / "train_ids.txt").read_text().split())
    rows = [line for line in (EXAMPLES / "labels.csv").read_text().splitlines()[1:] if line.split(",")[0] in trained]
    only_trained = tmp_path / "trained.csv"
    only_trained.write_text("id,file,label\n" + "".join(
        f"{i},{EXAMPLES / f},{label}\n" for i, f, label in (line.split(",") for line in rows)))
    result = CliRunner().invoke(cli, ["train", str(only_trained), "-o", str(tmp_path / "leaky2"), "--size", "32",
                                      "--epochs", "1", "--batch-size", "8", "--init", str(first)])
    assert result.exit_code == 2 and "was trained on" in result.output and "validation images" in result.output


@pytest.mark.slow
def test_the_default_model_is_fine_tuned_on_images_it_only_validated_on(tmp_path):
    """The bundled samples are all in the default model's validation split and none in its training set:
    nothing can leak, yet `--init default` on them (the README's fine-tuning example) was refused as
    "another validation split" (README review, session 44). Refused now only where it learned from them."""
    result = CliRunner().invoke(cli, ["train", str(EXAMPLES / "labels.csv"), "-o", str(tmp_path / "tuned"),
                                      "--init", "default", "--epochs", "1", "--batch-size", "8", "-q"])
    assert result.exit_code == 0, result.output


def test_a_model_records_what_its_initial_weights_and_teachers_learned(model_copy):
    """Fine-tuned from a model (--init) or taught by one, a model carries what they learned: its
    train_ids.txt names their training images too, for the leak checks of later runs."""
    from galaxy.labels import LabelledSet
    from galaxy.training.leak_checks import learned_by
    from galaxy.training.train_data import TrainingData

    inherited = frozenset(learned_by(model_copy))
    # the default (compact) model: its 4,155 training galaxies and the 6,155 unlabelled cutouts it was distilled on
    assert len(inherited) == 4155 + 6155 and not learned_by("scratch")
    own = LabelledSet(("mine.jpeg",), ("mine",), (1,), ("elliptical", "spiral"))
    data = TrainingData(own, None, ("pool/u1.jpeg",), ("u1",), None, None, 0.7, None, None, None, None,
                        inherited_ids=inherited)
    assert set(data.learned_ids()) == inherited | {"mine", "u1"}


def test_a_resume_compares_paths_as_files_not_as_spellings():
    from galaxy.training.checkpoint import comparable_paths

    then = {"data": "labels.csv", "teachers": ["./teacher"], "init": "default", "lr": 0.001}
    assert comparable_paths(then) == comparable_paths({**then, "data": "./labels.csv", "teachers": ["teacher"]})
    assert comparable_paths(then) != comparable_paths({**then, "data": "other.csv"})


def test_a_model_of_a_vote_table_is_found_in_a_run_naming_the_same_files_by_path(model_copy):
    """A GZ2 vote table's ids are dr7objids and its files asset ids: a model trained on it recorded the
    dr7objids alone, and a run on a CSV of the same files (ids: the stems) took it as --init with 33 of
    its 40 validation images learned."""
    from galaxy.config import TrainConfig
    from galaxy.errors import UsageError
    from galaxy.labels import LabelledSet
    from galaxy.training.leak_checks import check_split
    from galaxy.training.train_data import TrainingData

    votes = LabelledSet(("img/12345.jpeg",), ("587722981742084144",), (1,), ("elliptical", "spiral"))
    data = TrainingData(votes, None, (), (), None, None, 0.7, None, None, None, None)
    assert set(data.learned_ids()) == {"587722981742084144", "12345"}  # both: either may name it later
    (model_copy / "train_ids.txt").write_text("587722981742084144\n12345\n")
    config = TrainConfig(data="by_path.csv", out_dir="m")
    with pytest.raises(UsageError, match=r"trained on 1 of this run's validation images \(e.g. 12345\)"):
        check_split(model_copy, "--init", config, ["12345"], ["12345"], val_paths=["img/12345.jpeg"])
    with pytest.raises(UsageError, match="trained on 1 of this run's validation images"):  # the other way round
        check_split(model_copy, "--init", config, ["587722981742084144"], ["587722981742084144"],
                    val_paths=["img/12345.jpeg"])


@pytest.mark.slow
def test_a_checkpoint_is_checked_by_what_it_learned_and_gives_its_normalisation(tmp_path):
    """--init RUN/checkpoints/last.pt of a run with another --classes order (another split of the same data,
    same seed) was accepted: validation images it had learned were validated on, unrecorded; and --init of a
    model's weights file or of a checkpoint took mean/std from the new data, not the weights' own
    (review of training, session 39)."""
    reversed_run = tmp_path / "r"
    assert _train(reversed_run, "--epochs", "1", "--classes", "spiral,elliptical").exit_code == 0
    result = _train(tmp_path / "leaky", "--epochs", "1", "--init", str(reversed_run / "checkpoints" / "last.pt"))
    assert result.exit_code == 2 and "(a checkpoint; another --classes order" in result.output, result.output

    first = tmp_path / "a"
    assert _train(first, "--epochs", "1").exit_code == 0
    mean = json.loads((first / "card.json").read_text())["input_spec"]["mean"]
    for init in (first / "model.safetensors", first / "checkpoints" / "last.pt"):
        out = tmp_path / f"from-{init.suffix[1:]}"
        result = _train(out, "--epochs", "1", "--init", str(init), "--crop", "0.7")  # other pixels, same weights
        assert result.exit_code == 0, result.output
        assert json.loads((out / "card.json").read_text())["input_spec"]["mean"] == mean
