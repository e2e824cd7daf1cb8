"""The telemetry boundary: what the pipeline, the models and the API report as they work.

Code that does the work calls a :class:`Telemetry`; the base class does nothing, so
tests, the CLI and benchmarks can ignore it.
:class:`cartag.telemetry.prometheus.PrometheusTelemetry` turns the calls into Prometheus
metrics. Nothing in this module imports prometheus_client: the pipeline stays free of any
metrics library.

Every method must be cheap and must never raise into the caller (implementations swallow
their own errors: a metrics bug must not fail a classify). Methods may be called from any
thread (the micro-batcher's worker, decode pools, the event loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit


class AnsweredImage(Protocol):
    """What telemetry reads from a classify result (see ``pipeline.results.ClassifyResult``)."""

    @property
    def status(self) -> str: ...

    @property
    def source(self) -> str | None: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def model_version(self) -> str | None: ...


class Telemetry:
    """Observer of cartag's work. Every method is a no-op here; override the ones you need."""

    def request_finished(self, method: str, route: str, status: int, duration_s: float) -> None:
        """An HTTP request was answered.

        Args:
            method: HTTP method.
            route: The route template (``/v1/images/{image_key}``), never the raw path.
            status: HTTP status code sent.
            duration_s: Wall time from the first byte in to the last byte out.
        """

    def images_answered(self, results: Sequence[AnsweredImage]) -> None:
        """One classify call (request or job chunk) produced these results."""

    def download_failed(self, reason: str, host: str) -> None:
        """An image could not be downloaded (``reason`` as in ``net.outcomes.Failed``)."""

    def batch_ran(self, size: int, duration_s: float) -> None:
        """The model ran on a micro-batch of ``size`` images in ``duration_s`` seconds."""

    def fix_applied(self, advertiser_id: str, scope: str) -> None:
        """A fix request was applied for ``advertiser_id`` (``scope``: global or advertiser):
        every one counts, a correction of a correction made a minute later too."""

    def image_fixed(self, advertiser_id: str) -> None:
        """An image got its first fix of the UTC day in ``advertiser_id``'s name: the count
        the monitor's fix rate divides (:func:`cartag.store.monitoring.fixes_between`), so
        an image fixed again the same day is not counted again."""

    def advertiser_answered(self, advertiser_id: str, answered: int) -> None:
        """One classify call answered ``answered`` images (skipped ones not counted) for
        ``advertiser_id``: the denominator of its fix rate."""

    def model_loaded(
        self, version: str, backbone: str | None = None, int8_problem: str | None = None
    ) -> None:
        """``version`` is the model now in service, on ``backbone`` (its id: int8 or fp32);
        ``int8_problem``: why the int8 backbone it ships could not be used here."""

    def model_fallback(self, wanted: str | None, serving: str) -> None:
        """The ``production`` alias names ``wanted`` but it cannot serve here: ``serving``
        answers instead. ``wanted=None``: production is served again (no fallback)."""

    def model_host_failures(self, version: str | None, tries: int = 0) -> None:
        """The ``production`` alias names ``version``, which failed to load here ``tries``
        times in a row for a reason of this host (an I/O error, its folder missing, memory
        running out), not of its files: it is not refused and is tried again.
        ``version=None``: no such failure is pending (it loaded, or production moved on)."""

    def storage_failed(self, operation: str) -> None:
        """A write failed because the store is full, read-only or unreachable.

        Args:
            operation: What could not be written: ``request`` (answered 503),
                ``revalidation`` (cached answers served anyway), ``advertiser_images``,
                ``job_chunk`` (retried), ``last_loaded_model``.
        """


def host_of(url: str) -> str:
    """The lower-case host of a URL (for metric labels), ``invalid`` when it has none."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    return host.lower() if host else "invalid"
