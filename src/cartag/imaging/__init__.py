"""Image bytes and pixels: defensive decoding, content keys, the perceptual hash, and the
synthetic "photo coming soon" cards (training data and the smoke check of a model).

A foundation package: it imports only core modules (errors).
"""
