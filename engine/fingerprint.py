"""The settings a resumable run began with, and the check that a rerun keeps them.

A run records what its rows depend on (model weights and temperature, backend, TTA, crop, kept columns,
how it read its inputs: `galaxy.catalog.metadata.run_fingerprint`) as its fingerprint: in a journal's
`fingerprint.json`, a `--ray` folder's bookkeeping, and a finished catalog's metadata. A rerun whose
fingerprint differs is refused, naming each setting with both values, since one catalog would mix rows
made two ways.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from galaxy.catalog.metadata import (CROP_RULE_KEY, CROP_RULE_MIXED, READING_KEYS, READING_RECORDED, READING_VERSION,
                                     as_recorded_now, begun_with_older_crop, reading_settings)
from galaxy.catalog.written import read_catalog_metadata
from galaxy.errors import UsageError
from galaxy.files import write_atomically

FINGERPRINT = "fingerprint.json"  # in a journal (and a --ray folder's bookkeeping): the settings a run began with

log = logging.getLogger(__name__)


def changed_settings(earlier: dict, fingerprint: dict, defaults: dict | None = None) -> str | None:
    """The settings in which `fingerprint` differs from an `earlier` one (in today's form), each with
    both values ("bands [0, 1, 2] then, [2, 1, 0] now; tta ..."); None when none differs. A setting
    that either leaves out (or records as None) counts at its value in `defaults` (the card's crop, which a run names
    with --crop-fraction or not: `--crop-fraction 0.5` on a model read at 0.5 changes nothing)."""
    given = as_recorded_now(earlier, fingerprint)

    def known(values):  # None is "not given" (a --ray folder records --id-column so): the default stands
        return {k: v for k, v in values.items() if v is not None}

    earlier, now = {**(defaults or {}), **known(given)}, {**(defaults or {}), **known(fingerprint)}
    changed = sorted(k for k in set(earlier) | set(now) if earlier.get(k) != now.get(k))
    if not changed:
        return None

    def said(key, values, recorded) -> str:
        text = json.dumps(values[key]) if key in recorded and values.get(key) is not None else "not given"
        return text if len(text) <= 60 else text[:57] + "..."

    return "; ".join(f"{k} {said(k, earlier, given)} then, {said(k, now, fingerprint)} now" for k in changed)


def keep_fingerprint(path: Path, fingerprint: dict, output, defaults: dict | None = None) -> bool:
    """The one fingerprint check of a resumable output (a catalog's journal, a `--ray` folder).

    `fingerprint` says what a run must share with the run it continues (model, backend, TTA, ...).
    When `path` holds an earlier one that differs (`changed_settings`, with `defaults`), the rerun
    is refused, naming what changed; otherwise it is stored there (atomically) for the next rerun.

    Returns whether the run it continues began before the square-crop rule (`warn_older_crop`): then
    the stored fingerprint says so (CROP_RULE_MIXED), for every later rerun.

    Raises:
        UsageError: `output` was started with other settings, or its recorded ones cannot be read.
    """
    path = Path(path)
    older = False
    if path.exists():
        earlier = recorded_fingerprint(path)
        if earlier is None:  # a damaged record: what the run began with is not known
            raise UsageError(f"{output}: the settings its run began with ({path}) cannot be read; use --overwrite "
                             "to start over")
        changed = changed_settings(earlier, fingerprint, defaults)
        if changed:
            raise UsageError(f"{output} was started with other settings ({changed}); "
                             "use --overwrite to start over")
        older = warn_older_crop(earlier, fingerprint, output)
    if older:
        fingerprint = {**fingerprint, CROP_RULE_KEY: CROP_RULE_MIXED}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(fingerprint)))
    return older


def warn_older_crop(earlier: dict, fingerprint: dict, output) -> bool:
    """Warn that a run (reading under the square-crop rule: `fingerprint` records it) continued from a
    fingerprint made before that rule mixes two crops for any non-square cutouts: those of its rows
    made then were squashed to the square. Returns whether it warned."""
    if CROP_RULE_KEY not in fingerprint or not begun_with_older_crop(earlier):
        return False
    log.warning("%s was begun by a galaxy version before the square-crop rule (2026-11-29), which squashed "
                "non-square cutouts to the square; this run crops them square from the longer side, so if any of "
                "its inputs are not square the catalog mixes the two: use --overwrite to classify them all one way",
                output)
    return True


def recorded_fingerprint(path: Path) -> dict | None:
    """A journal's fingerprint.json, or None where it cannot be read or is not a record."""
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def output_fingerprint(output, fmt=None) -> dict | None:
    """The fingerprint stored in a finished catalog's metadata, when it has one. One written before
    the reading settings were recorded gets them from the command's config the metadata also holds,
    so a rerun that reads the files otherwise is refused (`as_recorded_now` can only guess for a
    journal a kill left, which records no config)."""
    meta = read_catalog_metadata(output, fmt)
    if "run" not in meta:
        return None
    run = json.loads(meta["run"])
    if isinstance(run, dict) and run.get(READING_RECORDED, 0) < READING_VERSION and "config" in meta:
        given = reading_of(meta["config"])  # what its command named; the rest is taken as now (as_recorded_now)
        given.pop(READING_RECORDED, None)
        run = {**run, **given}
    return run


def reading_of(config) -> dict:
    """`reading_settings` of a recorded ClassifyConfig (its JSON, or the dict a CSV sidecar gives);
    {} where it cannot be read."""
    from types import SimpleNamespace

    from galaxy.io.bands import parse_bands

    try:
        given = json.loads(config) if isinstance(config, str) else dict(config)
        settings = SimpleNamespace(**{key: given.get(key) for key in READING_KEYS})
        return reading_settings(settings, SimpleNamespace(fits_bands=parse_bands(settings.bands)))
    except (ValueError, TypeError, AttributeError, UsageError):  # not a record this version can read
        return {}


def journal_dir(output) -> Path:
    """The folder of an output's journal: catalog.csv -> catalog.csv.partial."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def earlier_backend(output, fmt=None) -> str | None:
    """The backend name the run that began `output` used (from its journal's fingerprint, else the
    finished catalog's), or None where there is none or it cannot be read."""
    journalled = journal_dir(output) / FINGERPRINT
    if journalled.is_file():
        fingerprint = recorded_fingerprint(journalled)
    elif Path(output).is_file():
        try:
            fingerprint = output_fingerprint(output, fmt)
        except (OSError, ValueError, KeyError, IndexError, UsageError):  # unreadable: the Journal says so
            return None
    else:
        return None
    backend = fingerprint.get("backend") if isinstance(fingerprint, dict) else None
    return backend.split()[0] if isinstance(backend, str) and backend.strip() else None
