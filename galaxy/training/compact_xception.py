"""A compact Xception: the entry / middle / exit flow of Chollet (2017) with width and depth reduced.

The same design as timm's `legacy_xception` (whose `Block` it reuses: depthwise-separable
3x3 convolutions with BatchNorm and ReLU, and a residual per block): a strided 3x3 stem,
three strided entry blocks, `depth` middle blocks at constant width, a strided exit block and
two separable convolutions before global pooling. Every width is the full model's times
`width` (rounded to a multiple of 8). The full model is width 1.0, depth 8.

The variants are registered with timm, so `timm.create_model("xception_compact_w50_d4")`
builds one and a model card names it; importing `galaxy.training.model` registers them.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

FULL_WIDTHS = {"stem": (32, 64), "entry": (128, 256, 728), "exit": (1024, 1536, 2048)}
WIDTHS = (25, 35, 50, 75)  # percent of the full model's widths
DEPTHS = (2, 4, 8)  # middle-flow blocks


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width / 8)) * 8)


class CompactXception(nn.Module):
    """Xception with widths times `width` and `depth` middle-flow blocks.

    Args:
        width: channel multiplier of every layer (1.0: the full model's 32 ... 2048).
        depth: number of middle-flow blocks (the full model has 8).
        num_classes: classifier outputs.
        drop_rate: dropout before the classifier.

    Input float32 (N, in_chans, H, W), any H, W >= 32; output logits (N, num_classes).
    """

    def __init__(self, width: float = 0.5, depth: int = 4, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, **kwargs):
        super().__init__()
        from timm.models.xception import Block, SeparableConv2d

        stem1, stem2 = (_scaled(c, width) for c in FULL_WIDTHS["stem"])
        e1, e2, e3 = (_scaled(c, width) for c in FULL_WIDTHS["entry"])
        x1, x2, x3 = (_scaled(c, width) for c in FULL_WIDTHS["exit"])
        self.width, self.depth, self.num_classes, self.drop_rate = width, depth, num_classes, drop_rate
        self.num_features = x3
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem1, 3, 2, 0, bias=False), nn.BatchNorm2d(stem1), nn.ReLU(inplace=True),
            nn.Conv2d(stem1, stem2, 3, bias=False), nn.BatchNorm2d(stem2), nn.ReLU(inplace=True))
        self.entry = nn.Sequential(Block(stem2, e1, 2, 2, start_with_relu=False), Block(e1, e2, 2, 2),
                                   Block(e2, e3, 2, 2))
        self.middle = nn.Sequential(*[Block(e3, e3, 3, 1) for _ in range(depth)])
        self.exit = nn.Sequential(
            Block(e3, x1, 2, 2, grow_first=False),
            SeparableConv2d(x1, x2, 3, 1, 1), nn.BatchNorm2d(x2), nn.ReLU(inplace=True),
            SeparableConv2d(x2, x3, 3, 1, 1), nn.BatchNorm2d(x3), nn.ReLU(inplace=True))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(x3, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit(self.middle(self.entry(self.stem(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        if self.drop_rate:
            x = nn.functional.dropout(x, self.drop_rate, training=self.training)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def architecture_name(width_percent: int, depth: int) -> str:
    return f"xception_compact_w{width_percent}_d{depth}"


def _entrypoint(width_percent: int, depth: int):
    def create(pretrained: bool = False, **kwargs) -> CompactXception:
        if pretrained:
            raise ValueError("compact Xception variants have no pretrained weights; distil one (galaxy distill)")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return CompactXception(width_percent / 100, depth, **kwargs)

    create.__name__ = create.__qualname__ = architecture_name(width_percent, depth)
    create.__module__ = __name__
    return create


def register() -> None:
    """Register every (width, depth) variant with timm (idempotent)."""
    from timm.models import is_model, register_model

    for w in WIDTHS:
        for d in DEPTHS:
            name = architecture_name(w, d)
            if not is_model(name):
                setattr(sys.modules[__name__], name, register_model(_entrypoint(w, d)))


register()
