"""engine: the runtime that turns image files into class probabilities, fast.

The data path, one module each: listing -> pipelines (decode) -> batching -> runner (backends,
TTA) -> journal -> the catalog (galaxy/catalog/write.py); run.py drives it for `galaxy classify`,
distributed.py over Ray. See the README's Architecture section.
"""
