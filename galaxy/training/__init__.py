"""Training and export: the network, its data, augmentation, self-training, ONNX export.

The only part of galaxy/ that imports torch (tests/test_layers.py holds the rule)."""
