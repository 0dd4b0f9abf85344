import numpy as np
from PIL import Image

import galaxy
from tests.conftest import EXAMPLES


def test_api_classifies_paths_tables_and_arrays():
    model = galaxy.load_model(backend="onnxruntime")
    files = sorted(EXAMPLES.glob("*.jpeg"))[:6]
    errors = []
    table = model.classify([str(p) for p in files] + [str(EXAMPLES / "labels.csv")], errors=errors)
    assert list(table["id"]) == [p.stem for p in files]
    assert table.colnames == ["id", "path", "p_elliptical", "p_spiral", "label"]
    assert len(errors) == 1 and errors[0][0].endswith("labels.csv")
    from astropy.table import Table

    by_table = model.classify(Table({"id": ["x", "y"], "file": [str(files[0]), str(files[1])]}))
    assert list(by_table["id"]) == ["x", "y"]
    np.testing.assert_allclose(by_table["p_spiral"], table["p_spiral"][:2], atol=1e-5)
    arrays = [np.asarray(Image.open(p), np.float32) / 255 for p in files[:2]]
    np.testing.assert_allclose(model.classify_arrays(arrays)[:, 1], table["p_spiral"][:2], atol=1e-4)
