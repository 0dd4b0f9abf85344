"""Figures for people: reliability diagram, accuracy at coverage, purity and completeness by probability cut,
training curves (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(bins: list[dict], ece: float, path, title: str = "") -> Path:
    """Bar chart of accuracy against mean confidence per bin, with the diagonal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    filled = [b for b in bins if b["count"]]
    width = bins[0]["upper"] - bins[0]["lower"]
    ax.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    ax.plot([bins[0]["lower"], 1], [bins[0]["lower"], 1], "k--", lw=1, label="perfectly calibrated")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(bins[0]["lower"], 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{title} ECE = {100 * ece:.1f}%".strip())
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def coverage_curve(coverage: dict[str, float], path, title: str = "") -> Path:
    """Accuracy on the most confident fraction of the sample."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=110)
    xs = [float(k) for k in coverage]
    ax.plot(xs, list(coverage.values()), "o-")
    ax.set_xlabel("fraction of galaxies kept (most confident first)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def purity_completeness_curves(table: dict, path, title: str = "") -> Path:
    """Purity and completeness of the sample p_c >= cut against the cut, one panel per class."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(table), figsize=(4 * len(table), 3.5), dpi=110, squeeze=False)
    for ax, (name, rows) in zip(axes[0], table.items()):
        cuts = [row["cut"] for row in rows]
        for key, style in (("purity", "o-"), ("completeness", "s--")):
            ax.plot(cuts, [float("nan") if row[key] is None else row[key] for row in rows], style, label=key)
        if all(row["completeness"] is None for row in rows):  # purity alone says how clean the others stay
            ax.text(0.5, 0.5, f"no galaxy labelled {name}:\nno completeness", ha="center", transform=ax.transAxes)
        ax.set_xlabel(f"cut: p_{name} >=")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def training_curves(history: list[dict], path) -> Path:
    """Training loss and validation accuracy (weights and EMA) per epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
    left.plot(epochs, [row["train_loss"] for row in history], label="train")
    left.plot(epochs, [row["val_raw"]["loss"] for row in history], label="validation")
    left.plot(epochs, [row["val_ema"]["loss"] for row in history], label="validation (EMA)")
    left.set_xlabel("epoch")
    left.set_ylabel("cross entropy")
    left.legend()
    right.plot(epochs, [row["val_raw"]["accuracy"] for row in history], label="weights")
    right.plot(epochs, [row["val_ema"]["accuracy"] for row in history], label="EMA weights")
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
