"""Training data: labels and their review, held-out splits, filters, dataset versions,
the embedding cache."""
