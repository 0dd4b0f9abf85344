"""train --fits-views: labelled images also seen as the FITS path shows their flux."""

import json

import torch

from galaxy.training.image_cache import build_fits_view_cache
from tests.conftest import EXAMPLES


def test_fits_view_cache_is_deterministic_and_holds_a_grey_view():
    paths = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:3]]
    first = build_fits_view_cache(paths, 2, 0.7, 48, workers=2, seed=0, show=False)
    assert first.shape == (3, 3, 3, 48, 48) and first.dtype == torch.float16
    assert torch.equal(first, build_fits_view_cache(paths, 2, 0.7, 48, workers=1, seed=0, show=False))
    assert torch.equal(first[:, 2, 0], first[:, 2, 2])  # the r band alone is grey
    assert not torch.equal(first, build_fits_view_cache(paths, 2, 0.7, 48, workers=2, seed=1, show=False))


def test_train_with_fits_views_records_them(tmp_path):
    from click.testing import CliRunner

    from galaxy.cli import cli

    result = CliRunner().invoke(cli, ["train", str(EXAMPLES / "labels.csv"), "-o", str(tmp_path / "m"), "--size", "32",
                                      "--epochs", "1", "--fits-views", "1", "--fits-probability", "0.5",
                                      "--no-calibrate", "-q"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training"]["data"]["fits_views"] == {"per_image": 1, "probability": 0.5, "r_band_alone": True}
