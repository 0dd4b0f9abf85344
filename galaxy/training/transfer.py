"""Transfer learning: where the initial weights come from, and how the network is unfrozen.

The network (any timm classifier) is cut into depth groups: the head, then the body's
top-level children split into `BODY_GROUPS` runs of roughly equal parameter count, deepest
last. Discriminative learning rates: the head trains at the base rate and each group below
it at `layer_decay` times the group above. The freeze schedule trains the head alone for
`freeze_epochs` epochs, then the head and the deepest body group for as long again, then
everything (as in ULMFiT/fastai's gradual unfreezing). From scratch nothing is frozen.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from galaxy.card import FULL_MODEL, MODELS_DIR, load_card
from galaxy.config import TrainConfig
from galaxy.errors import UsageError
from galaxy.training.model import create_network, init_imagenet, load_partial, read_state_dict

log = logging.getLogger(__name__)

BODY_GROUPS = 3  # early, middle, late


def initial_weights(init: str) -> str:
    """What `--init` names: "scratch", "imagenet", or a weights path ("default": the shipped full Xception)."""
    if init == "default":
        return str(MODELS_DIR / FULL_MODEL)
    return init


def init_model_folder(init: str) -> Path | None:
    """The galaxy model folder an initial weights path is of: the folder itself, or the folder of its
    weights file (`--init MODEL/model.safetensors` had skipped the checks `--init MODEL` makes: the
    leak check against this run's validation split, the architecture, the classes); None for weights
    without a card."""
    from galaxy.card import CARD_FILE, WEIGHTS_FILE

    if init in ("scratch", "imagenet"):
        return None
    path = Path(init)
    folder = path if path.is_dir() else path.parent if path.name == WEIGHTS_FILE else None
    return folder if folder is not None and (folder / CARD_FILE).is_file() else None


def checkpoint_record(init: str) -> dict | None:
    """What a training checkpoint (`--init RUN/checkpoints/last.pt`) says of the run that wrote it: its
    config (architecture, classes, data, seed, val_fraction, limit) and the folder it ran in; None for
    any other file. (A checkpoint is read with weights_only: plain containers and tensors only.)"""
    path = Path(init)
    if path.suffix not in (".pt", ".pth") or not path.is_file():
        return None
    stat = path.stat()
    return _checkpoint_record(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _checkpoint_record(path: str, size: int, mtime_ns: int) -> dict | None:
    """`checkpoint_record`, read once per file version: the data checks and the network's set-up each ask,
    and a full-model last.pt is 0.4 GB."""
    del size, mtime_ns  # the cache key
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a checkpoint of ours: read_state_dict says what it is
        return None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        return None
    learned = state.get("learned")  # written since session 39: the ids the run learned
    return {"config": state["config"], "cwd": state.get("cwd"), "spec": state.get("spec"),
            "learned": frozenset(learned) if isinstance(learned, list) else None}


def heads_by_class(network: torch.nn.Module, state: dict, init_classes: tuple, classes: tuple) -> dict:
    """`state` with its classifier rows put in the order of `classes` by name: rows of the classes the
    initial model has, fresh ones (the network's own initial values) for the others. Loaded by position,
    `--classes spiral,elliptical` from a model of (elliptical, spiral) had swapped every probability."""
    head = network.get_classifier() if hasattr(network, "get_classifier") else None
    if not isinstance(head, torch.nn.Module) or tuple(init_classes) == tuple(classes):
        return state
    head_ids = {id(p) for p in head.parameters()}
    own = network.state_dict()
    out = dict(state)
    for name, parameter in network.named_parameters():
        if id(parameter) not in head_ids or name not in state:
            continue
        rows = own[name].clone()
        if state[name].shape[0] != len(init_classes) or state[name].shape[1:] != rows.shape[1:]:
            out.pop(name)  # not a row per class: left as the network made it
            continue
        for i, name_of_class in enumerate(classes):
            if name_of_class in init_classes:
                rows[i] = state[name][init_classes.index(name_of_class)]
        out[name] = rows
    return out


def _initial_network(config: TrainConfig) -> torch.nn.Module:
    n, init = len(config.classes), initial_weights(config.init)
    if init == "scratch":
        return create_network(config.architecture, n, config.drop_rate)
    if init == "imagenet":
        return init_imagenet(config.architecture, n, config.drop_rate)
    network = create_network(config.architecture, n, config.drop_rate)
    state = read_state_dict(init)
    # what the weights are of: a model folder's card, or the config a training checkpoint (last.pt) recorded
    folder, checkpoint = init_model_folder(init), checkpoint_record(init)
    recorded, where = ((load_card(folder, verify=False).to_dict(), folder) if folder is not None else
                       (checkpoint["config"], init) if checkpoint is not None else ({}, None))
    architecture, classes = recorded.get("architecture"), tuple(recorded.get("classes") or ())
    if architecture and architecture != config.architecture:  # all but a bias had been left at random, unsaid
        raise UsageError(f"--init {config.init} is a {architecture} ({where}); --arch {config.architecture}"
                         f" cannot take its weights: give --arch {architecture}, or --init scratch")
    if classes:
        state = heads_by_class(network, state, classes, tuple(config.classes))
    fresh = load_partial(network, state)
    own = network.state_dict()
    if len(fresh) > len(own) / 2:
        raise UsageError(f"--init {config.init} fits only {len(own) - len(fresh)} of the {len(own)} tensors of "
                         f"{config.architecture} (e.g. {fresh[0]} left at random): weights of another architecture?")
    log.info("initialised from %s; left at random: %s", init, fresh)
    return network


@dataclass
class DepthGroup:
    """Modules of one depth group and the learning rate factor they train at."""

    name: str
    modules: list[torch.nn.Module]
    lr_scale: float

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]


def depth_groups(network: torch.nn.Module, layer_decay: float = 1.0) -> list[DepthGroup]:
    """The network's depth groups, shallowest first, head last, with their LR factors.

    Raises:
        UsageError: the network has no separate classifier (timm's `get_classifier`).
    """
    head = network.get_classifier() if hasattr(network, "get_classifier") else None
    if not isinstance(head, torch.nn.Module) or not any(True for _ in head.parameters()):
        raise UsageError(f"{type(network).__name__} has no classifier head to train first")
    head_ids = {id(p) for p in head.parameters()}
    body = [m for _, m in network.named_children()
            if m is not head and any(id(p) not in head_ids for p in m.parameters())]
    sizes = [sum(p.numel() for p in m.parameters()) for m in body]
    total, groups, start, done = sum(sizes), [], 0, 0
    for g in range(BODY_GROUPS):
        end, goal = start, total * (g + 1) / BODY_GROUPS
        while end < len(body) and (done + sizes[end] <= goal or end == start):
            done += sizes[end]
            end += 1
        if g == BODY_GROUPS - 1:
            end = len(body)
        groups.append(body[start:end])
        start = end
    out = [DepthGroup(name, modules, layer_decay ** (BODY_GROUPS - i))
           for i, (name, modules) in enumerate(zip(("early", "middle", "late"), groups)) if modules]
    return out + [DepthGroup("head", [head], 1.0)]


def optimizer_groups(groups: list[DepthGroup], lr: float) -> list[dict]:
    """Optimizer parameter groups, one per depth group, at the group's learning rate."""
    return [{"params": g.parameters(), "lr": lr * g.lr_scale, "group": g.name} for g in groups]


def trainable_from(epoch: int, freeze_epochs: int, n_groups: int) -> int:
    """Index of the shallowest trainable group in 1-based `epoch` (0: all train).

    Epochs 1..F: the head only; F+1..2F: the head and the deepest body group; then all.
    """
    if freeze_epochs <= 0:
        return 0
    stage = (epoch - 1) // freeze_epochs  # 0: head, 1: + late, 2+: all
    return max(0, n_groups - 1 - stage) if stage < 2 else 0


def apply_freeze(groups: list[DepthGroup], first_trainable: int) -> None:
    """Freeze groups below `first_trainable`: no gradients, and BatchNorm statistics held."""
    for i, group in enumerate(groups):
        trainable = i >= first_trainable
        for module in group.modules:
            for p in module.parameters():
                p.requires_grad_(trainable)
            if not trainable:
                module.eval()
