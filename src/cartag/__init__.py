"""cartag: tags vehicle-listing photos with image type and vehicle color."""

__version__ = "0.1.0"
