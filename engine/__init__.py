"""engine: the runtime that turns image files into class probabilities, fast.

The data path, one module each: listing -> decode -> batching -> backends -> run (write).
"""
