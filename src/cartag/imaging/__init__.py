"""Image bytes and pixels: defensive decoding, content keys, the perceptual hash, the
synthetic "photo coming soon" cards (training data and the smoke check of a model), and
the image files under a folder.

A foundation package: it imports only core modules (errors).
"""
