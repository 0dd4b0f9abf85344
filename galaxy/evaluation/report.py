"""`galaxy report`: one self-contained HTML page about a catalog galaxy wrote.

Counts (per label, failed inputs and their commonest reasons, each with one of its files), a histogram of P(spiral), the
montage (`galaxy.evaluation.montage`), and the model card: the catalog's own metadata (model, weights hash,
InputSpec, backend, command, date) and, when the weights are a known model's, its validation
figures. Pictures are inline PNG data URIs and the style is inline: the page needs no network
and no other file. The catalog is streamed.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from galaxy.version import __version__
from galaxy.catalog.read import read_catalog_metadata, read_catalog_rows
from galaxy.catalog.write import errors_path

BINS = np.linspace(0, 1, 21)
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%}code{font-size:90%;word-break:break-all}"""



def _errors_name(catalog) -> str:
    """Where the errors file is, as seen from the catalog's folder (a `--ray` folder keeps it inside)."""
    path = errors_path(catalog)
    return str(path.relative_to(Path(catalog).parent))

def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _summary(catalog):
    counts, histogram, n = Counter(), np.zeros(len(BINS) - 1, np.int64), 0
    for row in read_catalog_rows(catalog):
        counts[str(row["label"])] += 1
        histogram += np.histogram([float(row["p_spiral"])], BINS)[0]
        n += 1
    errors, reasons, example = 0, Counter(), {}
    path = errors_path(catalog)
    if path.is_file():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                errors += 1
                reason = row["reason"].split(":")[0][:80]
                reasons[reason] += 1
                example.setdefault(reason, row["path"])
    return n, counts, histogram, errors, [(r, c, example[r]) for r, c in reasons.most_common(10)]


def _histogram_png(histogram) -> str:
    from galaxy.evaluation.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(BINS[:-1], histogram, width=np.diff(BINS), align="edge", color="tab:blue", edgecolor="black")
    ax.set_xlabel("P(spiral)")
    ax.set_ylabel("galaxies")
    ax.set_yscale("log" if histogram.max() > 100 * max(1, histogram[histogram > 0].min()) else "linear")
    fig.tight_layout()
    uri = _png(fig)
    plt.close(fig)
    return uri


def _known_card(metadata):
    """The card of the shipped model whose weights are the catalog's, else None."""
    from galaxy.card import load_card, shipped_model_dirs

    for model_dir in shipped_model_dirs():
        try:
            card = load_card(model_dir, verify=False)
        except Exception:  # a missing or unreadable card only means no validation figures
            continue
        if card.weights_sha256 == metadata.get("weights"):
            return card
    return None


def _rows(pairs) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v}</td></tr>" for k, v in pairs)


def report(catalog, out, per_row: int = 8) -> Path:
    """Write the HTML report of `catalog` to `out`; return its path."""
    from galaxy.evaluation.montage import montage

    catalog, out = Path(catalog), Path(out)
    metadata = read_catalog_metadata(catalog)
    n, counts, histogram, errors, reasons = _summary(catalog)
    with tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / "montage.png"
        montage(catalog, picture, per_row)
        montage_uri = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
    count_rows = [("classified", f"{n:,}")] + [(f"label {k}", f"{v:,} ({100 * v / max(n, 1):.1f}%)")
                                              for k, v in sorted(counts.items())]
    count_rows.append(("could not be read", f"{errors:,}" + (f" (see <code>{html.escape(_errors_name(catalog))}</code>)"
                                                               if errors else "")))
    meta_rows = [(k, f"<code>{html.escape(str(v))}</code>") for k, v in metadata.items()
                 if k not in ("config", "run")]
    card = _known_card(metadata)
    card_html = ""
    if card is not None:
        val = card.metrics.get("validation", {})
        figures = [(name, f"{val[key]:.4f}") for name, key in (
            ("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("ROC AUC", "roc_auc"),
            ("ECE", "ece")) if key in val]
        if card.calibration:
            figures.append(("temperature", f"{card.temperature:.4f}"))
        card_html = (f"<h2>Model card: {html.escape(card.name)}</h2><p>{html.escape(card.architecture)}, "
                     f"{card.input_spec.size} px, validation split of {val.get('n', '?')} galaxies.</p>"
                     f"<table>{_rows(figures)}</table><p>Trained with <code>"
                     f"{html.escape(card.training.get('command', '?'))}</code></p>")
    reason_rows = "".join(f"<tr><td>{html.escape(r)}</td><td>{c:,}</td><td><code>{html.escape(e)}</code></td></tr>"
                          for r, c, e in reasons)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>galaxy report: {html.escape(catalog.name)}</title>
<style>{STYLE}</style></head><body>
<h1>Galaxy morphology: {html.escape(catalog.name)}</h1>
<h2>Counts</h2><table>{_rows(count_rows)}</table>
{f'<h3>Why inputs failed</h3><table><tr><th>reason</th><th>files</th><th>e.g.</th></tr>{reason_rows}</table>'
   if reasons else ''}
<h2>Confidence</h2><img alt="histogram of P(spiral)" src="{_histogram_png(histogram)}">
<h2>Montage</h2><img alt="most confident spirals, ellipticals and most uncertain galaxies" src="{montage_uri}">
{card_html}
<h2>How this catalog was made</h2><table>{_rows(meta_rows)}</table>
<p>Report by galaxy-engine {html.escape(__version__)}. Run fingerprint: <code>{html.escape(metadata.get("run", ""))}</code></p>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
