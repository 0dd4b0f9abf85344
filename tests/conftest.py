"""Shared fixtures. Tests never download anything; data beyond the repo comes from ../shared, or from
$GALAXY_SHARED_DATA (the folder holding gz1-sdss/, unlabeled-sdss/ and real-fits-smoke/)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GALAXY_SHARED_DATA") or ROOT.parent / "shared" / "data")
SHARED_DATA = SHARED / "gz1-sdss"
EXAMPLES = ROOT / "examples" / "sdss"
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session", autouse=True)
def galaxy_cache(tmp_path_factory):
    """A private engine cache, so tests neither read nor fill the user's ~/.cache/galaxy."""
    path = tmp_path_factory.mktemp("galaxy-cache")
    old = os.environ.get("GALAXY_CACHE")
    os.environ["GALAXY_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GALAXY_CACHE", None)
    else:
        os.environ["GALAXY_CACHE"] = old


@pytest.fixture(scope="session")
def default_model():
    """(model_dir, card) of the shipped default model."""
    from engine.artifacts import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="session")
def shared_data():
    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss data set is not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def real_jpeg() -> Path:
    return next(DATA.glob("*.jpeg"))


@pytest.fixture
def model_copy(tmp_path, default_model) -> Path:
    """A writable copy of the default model directory."""
    target = tmp_path / "model"
    shutil.copytree(default_model[0], target)
    return target


def set_validation_ids(model_dir: Path, ids) -> None:
    """Give a model copy another validation split: its val_ids.txt and the card's record of it, which
    `validation_ids` checks the file against."""
    from galaxy.card import ids_digest

    ids = sorted(ids)
    (model_dir / "val_ids.txt").write_text("\n".join(ids) + "\n")
    card = json.loads((model_dir / "card.json").read_text())
    card.setdefault("split", {}).update(val_ids_sha256=ids_digest(ids), n_val=len(ids))
    (model_dir / "card.json").write_text(json.dumps(card))


@pytest.fixture(scope="session")
def real_fits_smoke():
    """The 20 real single-band SDSS and KiDS FITS cutouts of ../shared (odd units and headers)."""
    folder = SHARED / "real-fits-smoke"
    files = sorted(folder.glob("*.fits"))
    if not files:
        pytest.skip(f"the real-fits-smoke data set is not at {folder}")
    return files
