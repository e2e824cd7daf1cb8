"""``cartag train``: Optuna sweeps of head configurations on a frozen dataset, and their
leaderboard."""
