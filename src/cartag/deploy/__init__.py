"""Deployment: a model's way from a folder to serving, used by the API, the CLI and sweeps.

- :mod:`cartag.deploy.registry`: register a model folder (copy, hash, load check, row).
- :mod:`cartag.deploy.loadcheck`: the files of a registered version, loaded and smoke-checked.
- :mod:`cartag.deploy.promote`: promotion (behind the gates of :mod:`cartag.gates`),
  rollback, a sweep's candidate.
- :mod:`cartag.deploy.sweeps`: the registry as a sweep is handed it (register, record
  metrics, point the candidate alias).
- :mod:`cartag.deploy.followup`: what follows a promotion (whose images to re-classify).
- :mod:`cartag.deploy.hotswap`: the model a server starts with, and the swap to a promoted one.
- :mod:`cartag.deploy.monitor`: watching the deployed models (answer mix, fix rates, jumps).

The SQL lives in :mod:`cartag.store.model_versions` and :mod:`cartag.store.monitoring`;
running the re-classification is :mod:`cartag.jobs.reclassify` (above this package:
callers start it).
"""
