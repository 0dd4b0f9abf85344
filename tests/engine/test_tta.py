import numpy as np

from engine.tta import d4_views, run_d4


def test_d4_views_are_the_eight_symmetries():
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
    views = d4_views(x)
    assert len(views) == 8 and all(v.shape == x.shape for v in views)
    assert len({v.tobytes() for v in views}) == 8
    assert np.array_equal(views[0], x)


def test_run_d4_averages_per_image():
    class Session:
        max_batch = 5  # forces several calls

        def run(self, t):
            s = t.reshape(len(t), -1)[:, 0]  # top-left pixel: changes with the view
            p = 1 / (1 + np.exp(-s))
            return np.stack([1 - p, p], axis=1).astype(np.float32)

    x = np.random.default_rng(0).normal(size=(3, 1, 4, 4)).astype(np.float32)
    out = run_d4(Session(), x)
    corners = np.stack([x[:, 0, 0, 0], x[:, 0, 0, -1], x[:, 0, -1, 0], x[:, 0, -1, -1]], axis=1)
    expected = (1 / (1 + np.exp(-corners))).mean(axis=1)  # each corner is top-left in 2 of the 8 views
    np.testing.assert_allclose(out[:, 1], expected, rtol=1e-5)
