"""Fitting primitives: linear heads, classification metrics, temperature scaling,
confident learning."""
