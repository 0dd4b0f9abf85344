"""The network: a timm model with a head for our classes, and its weights on disk."""

from __future__ import annotations

from pathlib import Path

import torch

from galaxy.card import CARD_FILE, WEIGHTS_FILE, ModelCard, file_sha256, load_card
from galaxy.errors import ModelError, UsageError
from galaxy.files import write_atomically


def create_network(architecture: str, num_classes: int, drop_rate: float = 0.0) -> torch.nn.Module:
    """A timm model with random weights and a `num_classes` head (`drop_rate`: dropout before it)."""
    import timm

    import galaxy.training.compact_xception  # noqa: F401  (registers the xception_compact_* variants with timm)

    extra = {"drop_rate": drop_rate} if drop_rate else {}
    try:
        return timm.create_model(architecture, pretrained=False, num_classes=num_classes, **extra)
    except RuntimeError as exc:
        raise UsageError(f"unknown timm architecture {architecture!r}: {exc}") from None


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file, a model directory, or a torch file (no pickle code run)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError ("header too large") names neither the file nor the model
            raise ModelError(f"{path}: not readable safetensors weights ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean "not weights"
        raise UsageError(f"{path} is not a torch weights file loadable without pickle code: {load_failure(exc)}") \
            from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_failure(exc: Exception) -> str:
    """Why torch.load refused a file, in one line: its weights-only refusal went on for six lines and advised
    loading the file again with weights_only=False, which would run any code the file holds."""
    text = str(exc)
    if "Weights only load failed" in text:
        return "it holds Python objects, not only tensors, or is no torch file (torch's weights-only loader refused it)"
    first = text.strip().splitlines()[0].split(". ")[0][:160] if text.strip() else ""  # its first sentence
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_partial(network: torch.nn.Module, state: dict) -> list[str]:
    """Load every tensor whose name and shape match; return the names left at their init.

    Used for transfer learning: a 1000-class ImageNet head does not fit our 2-class head.
    """
    own = network.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise UsageError("the initial weights share no tensor with the network; wrong architecture?")
    network.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def init_imagenet(architecture: str, num_classes: int, drop_rate: float = 0.0) -> torch.nn.Module:
    """The timm model with ImageNet weights, downloaded by timm (the Hugging Face hub, or for
    legacy_xception a GitHub release through torch.hub) or read from their local cache."""
    import timm

    extra = {"drop_rate": drop_rate} if drop_rate else {}
    if architecture.startswith("xception_compact_"):  # this project's own: nobody trained it on ImageNet
        raise UsageError(f"--init imagenet: no ImageNet weights exist for {architecture} (a compact Xception of "
                         "this project): use --init scratch, or distill it from a trained model (galaxy distill)")
    try:
        return timm.create_model(architecture, pretrained=True, num_classes=num_classes, **extra)
    except Exception as exc:  # network, hub and file errors all come through here
        raise UsageError(
            f"could not get ImageNet weights for {architecture!r} ({type(exc).__name__}: {exc}). "
            "timm downloads them (Hugging Face hub or GitHub): run once with internet access so they are cached, "
            "or download them and pass --init PATH/TO/weights.safetensors"
        ) from None


def save_weights(network: torch.nn.Module, model_dir) -> str:
    """Write fp16 safetensors weights; return their sha256."""
    from safetensors.torch import save_file

    path = Path(model_dir) / WEIGHTS_FILE
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
             .contiguous() for k, v in network.state_dict().items()}

    def write(tmp: Path):
        mode = tmp.stat().st_mode  # as the umask makes files (write_atomically created it)
        save_file(state, str(tmp))  # made again 0600: group members of a shared folder could not read it
        tmp.chmod(mode)

    write_atomically(path, write)
    return file_sha256(path)


class TemperatureScaled(torch.nn.Module):
    """logits / T: the card's calibration, inside the graph so every export carries it."""

    def __init__(self, network: torch.nn.Module, temperature: float):
        super().__init__()
        self.network = network
        self.register_buffer("inverse_temperature", torch.tensor(1.0 / temperature, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x) * self.inverse_temperature


def load_network(model_dir, card: ModelCard | None = None, calibrated: bool = True
                 ) -> tuple[torch.nn.Module, ModelCard]:
    """The network of a model directory in fp32 eval mode, with its (verified) card.

    With `calibrated` (the default) and a temperature in the card, the network's logits are
    divided by it (`TemperatureScaled`), so softmax gives calibrated probabilities.
    """
    card = card or load_card(model_dir)
    try:
        network = create_network(card.architecture, len(card.classes))
    except UsageError as exc:  # the card's, not an option's: it had named neither the card nor the folder
        raise ModelError(f"{Path(model_dir) / CARD_FILE}: {exc}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(model_dir).items()}
    try:
        missing, unexpected = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit: a card naming another number of classes than its head
        raise ModelError(f"{model_dir}: weights do not fit {card.architecture} with the card's {len(card.classes)} "
                         f"classes ({str(exc).splitlines()[-1].strip()[:200]})") from None
    if missing or unexpected:
        raise ModelError(f"{model_dir}: weights do not fit {card.architecture} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if calibrated and card.temperature != 1.0:
        network = TemperatureScaled(network, card.temperature)
    return network.eval(), card


def network_cost(network: torch.nn.Module, size: int, channels: int = 3) -> dict:
    """Work per galaxy: {"gflop_per_galaxy": forward FLOPs of one (1, channels, size, size) input
    counted by torch's FlopCounterMode (a multiply-add is 2), "parameters": count}."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = network.training
    network.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(torch.zeros(1, channels, size, size, device=next(network.parameters()).device))
    network.train(was_training)
    return {"gflop_per_galaxy": round(counter.get_total_flops() / 1e9, 4),
            "parameters": sum(p.numel() for p in network.parameters())}
