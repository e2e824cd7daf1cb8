"""The image-type and color heads: training, calibration, the Placeholder offset,
recolored photos."""
