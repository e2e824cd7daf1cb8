"""Evaluation: reports on labelled images, per-source and cross-source figures, the card."""
