"""Plain fakes of the app's boundaries: a fixed classifier and an offline fetcher."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from PIL import Image

from cartag.models.classifier import Classifier, Prediction, make_prediction
from cartag.net.fetch import Fetcher
from cartag.net.outcomes import Fetched, FetchOutcome, FetchRequest, Validators
from cartag.pipeline.classify import ClassifyStats
from cartag.pipeline.results import ClassifyResult, ImageRequest, skipped
from cartag.settings import Settings
from cartag.telemetry import Telemetry
from tests.support.images import jpeg_bytes

_JPEG = jpeg_bytes(64, 48, (200, 30, 30))


class FixedClassifier(Classifier):
    """Answers every image: a red Dealer photo (confidence 0.9), without a model."""

    version = "fixed-test"

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        return [make_prediction([0.9, 0.05, 0.05], [0.0] * 9 + [1.0, 0.0, 0.0]) for _ in images]


class SizeRecorder(FixedClassifier):
    """The fixed answer, remembering the size of each image it was given.

    Args:
        draft: What :meth:`draft_size` says (the bundled model's is 150).
    """

    version = "recorder-2"

    def __init__(self, draft: int) -> None:
        self.sizes: list[tuple[int, int]] = []
        self._draft = draft

    def draft_size(self) -> int:
        return self._draft

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        self.sizes.extend(image.size for image in images)
        return super().predict(images)


class OneImageFetcher(Fetcher):
    """Every URL serves the same small JPEG, and every address passes: no network.

    ``fetched`` records the URLs asked for, in order.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.fetched: list[str] = []

    async def fetch_many(self, requests: Sequence[FetchRequest]) -> list[FetchOutcome]:
        self.fetched.extend(r.url for r in requests)
        return [
            Fetched(r.url, r.url, _JPEG, Validators(None, None, len(_JPEG)), "image/jpeg")
            for r in requests
        ]

    async def check_address(self, url: str) -> None:
        return None


class CallbackOnlyService:
    """What a job runner needs of the classify service to send callbacks, and no model:
    classifying anything fails the test."""

    def __init__(self, settings: Settings, fetcher: Fetcher) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.telemetry = Telemetry()

    async def classify(self, *args: Any) -> list[Any]:
        raise AssertionError("no job should be classified")


class SkippingService:
    """A classify service without a model for job-runner tests: every image ``skipped``
    (http_404).

    Attributes:
        calls: Chunks classified so far.
        go: Each chunk waits for it (set unless ``hold``): a chunk held open, as a long
            one is, for as long as a test needs.
        disk: Filled on call ``fill_disk_on_call`` and freed on ``free_disk_on_call``
            (a full disk while a chunk is classified), when given.
    """

    def __init__(self, settings: Settings, disk: Any = None, *, hold: bool = False) -> None:
        self.settings = settings
        self.telemetry = Telemetry()
        self.fetcher: Any = None
        self.disk = disk
        self.fill_disk_on_call = 0
        self.free_disk_on_call = 0
        self.calls = 0
        self.go = asyncio.Event()
        if not hold:
            self.go.set()

    async def classify(
        self,
        advertiser_id: str,
        requests: Sequence[ImageRequest],
        stats: ClassifyStats | None = None,
    ) -> list[ClassifyResult]:
        self.calls += 1
        if self.disk is not None and self.calls == self.fill_disk_on_call:
            self.disk.full = True  # the disk fills while the chunk is being classified
        if self.disk is not None and self.calls == self.free_disk_on_call:
            self.disk.full = False
        await self.go.wait()
        return [skipped(r.url, "http_404") for r in requests]
