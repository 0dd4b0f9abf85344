"""`galaxy report`: one self-contained HTML page about a catalog galaxy wrote.

Counts (per label, failed inputs and their commonest reasons, each with one of its files), a histogram of P(spiral), the
montage (`galaxy.evaluation.montage`), and the model card: the catalog's own metadata (model, weights hash,
InputSpec, backend, command, date) and, when the weights and temperature are a shipped model's, its
validation figures. Pictures are inline PNG data URIs and the style is inline: the page needs no network
and no other file. The catalog is streamed.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

from galaxy.version import __version__
from galaxy.catalog.formats import MASKED_COLUMN, beside_catalog
from galaxy.catalog.written import shown_catalog_rows
from galaxy.catalog.text import safe_text
from galaxy.catalog.write import errors_path
from galaxy.errors import ModelError
from galaxy.evaluation.montage import (catalog_classes, catalog_metadata, montage_png, named_output,
                                      refuse_catalog_files, row_label, row_probability)
from galaxy.files import write_whole
from galaxy.io.fits import is_fits_path
from galaxy.io.masked import MASKED_WARNING, beyond_warning

BINS = np.linspace(0, 1, 21)
HISTOGRAM_BATCH = 65536
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%}code{font-size:90%;word-break:break-all}
.warning{background:#fff3cd;border:1px solid #e0c060;padding:0.5em 1em}"""


def _errors_name(catalog) -> str:
    """Where the errors file is, as seen from the catalog's folder (a `--ray` folder keeps it inside)."""
    path = beside_catalog(catalog, errors_path)
    try:
        return str(path.relative_to(Path(catalog).parent))
    except ValueError:  # beside the file a link names
        return str(path)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _summary(catalog, classes):
    counts, histogram, n, from_fits, masked = Counter(), np.zeros(len(BINS) - 1, np.int64), 0, 0, 0
    recorded = False  # a catalog written before masked_fraction existed cannot say
    pending = []  # probabilities binned HISTOGRAM_BATCH at a time (one np.histogram a row took most of a report's time)
    for row in shown_catalog_rows(catalog):
        p = row_probability(catalog, n, row, classes)
        counts[row_label(row, p, classes)] += 1
        pending.append(p)
        if len(pending) == HISTOGRAM_BATCH:
            histogram += np.histogram(pending, BINS)[0]
            pending.clear()
        from_fits += is_fits_path(str(row.get("path", "")).split(";")[0])
        masked += beyond_warning(row.get(MASKED_COLUMN))
        recorded = recorded or MASKED_COLUMN in row
        n += 1
    histogram += np.histogram(pending, BINS)[0]
    errors, reasons, example = 0, Counter(), {}
    path = beside_catalog(catalog, errors_path)
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                errors += 1
                reason = reason_kind(row.get("reason") or "")  # a short or foreign row: no KeyError
                reasons[reason] += 1
                example.setdefault(reason, row.get("path") or "")
    return (n, counts, histogram, errors, [(r, c, example[r]) for r, c in reasons.most_common(10)], from_fits,
            masked if recorded else None)


def reason_kind(reason: str) -> str:
    """What a failure reason says, for counting alike failures together: its text before the first ':',
    numbers shown as N ("1 x 1 pixels is too small" and "300 x 2 pixels is too small" are one kind; each
    size had been its own row of the ten commonest)."""
    kind = re.sub(r"\d+(?:\.\d+)?", "N", reason.split(":")[0]).strip()
    if kind.count("(") > kind.count(")"):  # cut inside a parenthesis ("not a FITS file (OSError: ..."): without it
        kind = kind[:kind.rindex("(")].rstrip()
    if len(kind) > 80:  # at a word, marked (it had stopped mid-word: "...was rea")
        kind = kind[:79].rsplit(" ", 1)[0] + "…"
    return kind or "(no reason given)"


def _histogram_png(histogram, shown: str = "spiral") -> str:
    from galaxy.evaluation.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.bar(BINS[:-1], histogram, width=np.diff(BINS), align="edge", color="tab:blue", edgecolor="black")
    ax.set_xlabel(f"P({shown})")
    ax.set_ylabel("galaxies")
    ax.set_yscale("log" if histogram.max() > 100 * max(1, histogram[histogram > 0].min()) else "linear")
    fig.tight_layout()
    uri = _png(fig)
    plt.close(fig)
    return uri


def _temperature(metadata) -> float | None:
    try:
        return float(metadata["temp"])
    except (KeyError, TypeError, ValueError):
        return None


def _known_card(metadata):
    """(card, note): the card of the shipped model whose weights and temperature are the catalog's,
    else None and why none applies ("" when no shipped model has these weights).

    The temperature must match too: after `galaxy calibrate` the same weights give other
    probabilities, and the card's ECE and temperature are not this catalog's.
    """
    from galaxy.card import load_card, shipped_model_dirs

    temperature = _temperature(metadata)
    other_reading = _read_otherwise(metadata)
    for model_dir in shipped_model_dirs():
        try:
            card = load_card(model_dir, verify=False)
        except (ModelError, OSError):  # a missing or unreadable card only means no validation figures
            continue
        if card.weights_sha256 != metadata.get("weights"):
            continue
        crop = _crop(metadata)
        if crop not in (None, card.input_spec.crop_fraction):
            other_reading = " and ".join(filter(None, (
                other_reading, f"reading the central {crop:g} of each side (the card's {card.input_spec.crop_fraction:g})")))
        if other_reading:
            return None, (f"The weights are {html.escape(card.name)}'s, but this catalog was made {other_reading}: "
                          "the card's validation figures do not apply; what the catalog records is below.")
        if temperature is not None and math.isclose(card.temperature, temperature, rel_tol=1e-6):
            return card, ""
        made = f"at temperature {temperature:g}" if temperature is not None else "with no temperature recorded"
        return None, (f"The weights are {html.escape(card.name)}'s, but this catalog was made {made} and its "
                      f"card's figures are for temperature {card.temperature:g} (recalibrated with <code>galaxy "
                      "calibrate</code>?): the card's validation figures do not apply; what the catalog records is below.")
    return None, ""


def _read_otherwise(metadata) -> str:
    """How a catalog's probabilities differ from one model reading each image once ("" when they do not):
    D4 test-time augmentation (a classify run's fingerprint, or evaluate's `tta`), an ensemble's mean."""
    try:
        tta = json.loads(metadata.get("run") or "{}").get("tta") or json.loads(metadata.get("tta") or "false")
        members = json.loads(metadata.get("ensemble") or "[]")
    except (ValueError, TypeError, AttributeError):  # not JSON text: not a record this module wrote
        return ""
    said = [f"as the mean of {len(members) + 1} models ({', '.join(html.escape(str(m.get('name'))) for m in members)} "
            "with this one)"] if members else []
    return " and ".join(said + (["with D4 test-time augmentation"] if tta else []))


def _crop(metadata) -> float | None:
    """The crop fraction the catalog's images were read with (its metadata's spec), None if not recorded."""
    try:
        return float(json.loads(metadata["spec"])["crop_fraction"])
    except (KeyError, TypeError, ValueError):
        return None


def _rows(pairs) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v}</td></tr>" for k, v in pairs)


def _card_html(card) -> str:
    val = card.metrics.get("validation", {})
    figures = [(name, f"{val[key]:.4f}") for name, key in (
        ("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("ROC AUC", "roc_auc"),
        ("ECE", "ece")) if key in val]
    if card.calibration:
        figures.append(("temperature", f"{card.temperature:.4f}"))
    return (f"<h2>Model card: {html.escape(card.name)}</h2><p>{html.escape(card.architecture)}, "
            f"{card.input_spec.size} px, validation split of {val.get('n', '?')} galaxies.</p>"
            f"<table>{_rows(figures)}</table><p>Trained with <code>"
            f"{html.escape(card.training.get('command', '?'))}</code></p>")


# Said above the counts of a catalog whose run was interrupted (its metadata's "complete": false).
INCOMPLETE = ('<p class="warning"><strong>Incomplete catalog:</strong> its run was interrupted (Ctrl-C or SIGTERM) '
              "before every input was classified; rerun the same <code>galaxy classify</code> command to finish it."
              "</p>")


def report_output(out) -> Path:
    """The file a report named `out` is written to: `out` itself, with .html added when it has no suffix.

    Raises:
        UsageError: `out` has another suffix (the report is one HTML page).
    """
    return named_output(out, (".html", ".htm"), "a report is written as HTML")


def report(catalog, out, per_row: int = 8) -> Path:
    """Write the HTML report of `catalog` to `out`; return its path.

    A catalog where every input failed (no rows, an errors file) gets its page too: the counts and
    the reasons, without histogram or montage.

    Raises:
        UsageError: `out` is one of the catalog's own files; the catalog has no probabilities.
    """
    catalog = Path(catalog).absolute()  # `galaxy report .` inside a --ray folder: a path with a name
    refuse_catalog_files(catalog, Path(out), "report")
    out = report_output(out)
    refuse_catalog_files(catalog, out, "report")  # again: `-o page` became page.html, the catalog's own name
    classes = catalog_classes(catalog)  # (rows first: a file that cannot be read says so, naming it)
    metadata = catalog_metadata(catalog)
    n, counts, histogram, errors, reasons, from_fits, masked = _summary(catalog, classes)
    count_rows = [("classified", f"{n:,}")] + [(f"label {k}", f"{v:,} ({100 * v / max(n, 1):.1f}%)")
                                              for k, v in sorted(counts.items())]
    count_rows.append(("could not be read", f"{errors:,}" + (f" (see <code>{html.escape(_errors_name(catalog))}</code>)"
                                                               if errors else "")))
    if from_fits and masked is not None:  # filled regions can move a label (README: masked_fraction)
        count_rows.append((f"crop over {MASKED_WARNING:.0%} masked and filled",
                           f"{masked:,} (<code>{MASKED_COLUMN} &gt; {MASKED_WARNING:g}</code>)"))
    meta_rows = [(k, f"<code>{html.escape(str(v))}</code>") for k, v in metadata.items()
                 if k not in ("config", "run")]
    card, card_note = _known_card(metadata)
    card_html = (_card_html(card) if card is not None
                 else f"<h2>Model card</h2><p>{card_note}</p>" if card_note else "")
    precision = str(metadata.get("backend", "")).split()[1:2]  # "onnxruntime-int8 int8": the precision it ran at
    if card is not None and precision and precision[0] != "fp32":
        card_html += (f"<p>The card's figures are of fp32 inference; this catalog was made at "
                      f"{html.escape(precision[0])} ({html.escape(str(metadata['backend']))}), which keeps most labels "
                      "but not all (<code>galaxy models</code> shows how many of the validation split's were kept in "
                      "its check).</p>")
    if card is not None and from_fits:
        card_html += (f"<p>{from_fits:,} of these {n:,} galaxies were read from FITS files, and the card's figures are "
                      "of the JPEG cutouts it was validated on: from FITS flux a model keeps the label the JPEG of the "
                      "same galaxy gets for most galaxies but not all (the README's FITS round trip measures how many, "
                      "per model; fewer from one band alone).</p>")
    if n:
        montage_uri = "data:image/png;base64," + base64.b64encode(montage_png(catalog, per_row, metadata=metadata)).decode()
        shown = classes[1]
        pictures = (f'<h2>Confidence</h2><img alt="histogram of P({html.escape(shown)})" '
                    f'src="{_histogram_png(histogram, shown)}">\n'
                    f'<h2>Montage</h2><img alt="most confident {html.escape(classes[1])} and '
                    f'{html.escape(classes[0])} galaxies, and the most uncertain" src="{montage_uri}">')
    else:
        pictures = "<h2>Confidence</h2><p>No galaxy was classified: no histogram and no montage.</p>"
    reason_rows = "".join(f"<tr><td>{html.escape(r)}</td><td>{c:,}</td><td><code>{html.escape(e)}</code></td></tr>"
                          for r, c, e in reasons)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>galaxy report: {html.escape(catalog.name)}</title>
<style>{STYLE}</style></head><body>
<h1>Galaxy morphology: {html.escape(catalog.name)}</h1>
{INCOMPLETE if str(metadata.get("complete", "true")).lower() == "false" else ""}
<h2>Counts</h2><table>{_rows(count_rows)}</table>
{f'<h3>Why inputs failed</h3><table><tr><th>reason</th><th>files</th><th>e.g.</th></tr>{reason_rows}</table>'
   if reasons else ''}
{pictures}
{card_html}
<h2>How this catalog was made</h2><table>{_rows(meta_rows)}</table>
<p>Report by galaxy-engine {html.escape(__version__)}. Run fingerprint: <code>{html.escape(metadata.get("run", ""))}</code></p>
</body></html>
"""
    return write_whole(out, safe_text(page).encode("utf-8"))  # (a catalog named in bytes that are not UTF-8)
