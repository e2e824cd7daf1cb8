"""Request and response bodies of the HTTP API (pydantic models), one module per area.

:mod:`~cartag.api.schemas.common` holds what the areas share (error bodies, id bounds).
"""
