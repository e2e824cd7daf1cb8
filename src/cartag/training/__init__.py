"""Training: datasets, heads, their evaluation, sweeps and the bundled model.

Subpackages, each importing only those listed before it (no cycles):

- :mod:`cartag.training.fitting`: fitting primitives (linear heads, metrics, temperature,
  confident learning);
- :mod:`cartag.training.datasets`: training data (labels, splits, filters, dataset
  versions built from sources, the embedding cache);
- :mod:`cartag.training.heads`: the type and color heads and their training;
- :mod:`cartag.training.evaluation`: evaluation reports, cross-source figures, the card;
- :mod:`cartag.training.sweep`: ``cartag train``: Optuna sweeps and their leaderboard;
- :mod:`cartag.training.bundled`: the bundled model's build and backbone fine-tuning.

A use case beside :mod:`cartag.pipeline` and :mod:`cartag.deploy`, which it does not
import: what a sweep needs of the registry is passed in by the caller.
"""
