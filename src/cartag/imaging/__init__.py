"""Image bytes and pixels: defensive decoding, content keys and the perceptual hash.

A foundation package: it imports only core modules (errors).
"""
