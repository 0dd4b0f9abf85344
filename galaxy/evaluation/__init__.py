"""How good a model or a catalog is: metrics, temperature calibration, plots, montage, HTML report. Torch-free."""
