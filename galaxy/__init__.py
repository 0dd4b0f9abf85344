"""galaxy: batch classification of galaxy morphology (spiral / elliptical).

    import galaxy
    model = galaxy.load_model()
    table = model.classify(["cutouts/"])
"""

__version__ = "0.1.0"


def load_model(model_dir=None, **options):
    """Load a model directory (default: the shipped model); see `galaxy.api.Model`."""
    from galaxy.api import load_model as _load

    return _load(model_dir, **options)
