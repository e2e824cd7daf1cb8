"""The micro-batcher: merging, delay, order, error isolation, shutdown."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from PIL import Image

from cartag.clock import SystemClock
from cartag.models.batching import BatcherClosedError, MicroBatcher
from cartag.models.classifier import Classifier, Prediction, make_prediction
from cartag.net.fetch import Fetcher
from cartag.pipeline.classify import ClassifyService
from cartag.pipeline.results import ImageRequest
from cartag.settings import Settings
from cartag.store.db import Database
from cartag.vocab import COLORS, IMAGE_TYPES
from tests.support.http_server import ImageServer
from tests.support.images import jpeg_bytes

POISON = 999


def _image(tag: int) -> Image.Image:
    # The tag rides in the width, so a prediction can say which image it is for.
    return Image.new("RGB", (tag + 1, 1))


def _tags(predictions: Sequence[Prediction]) -> list[int]:
    return [int(p.confidence) for p in predictions]


class CountingClassifier(Classifier):
    """Answers each image with its tag; records batches; can hold a batch or fail one.

    A batch holding the POISON tag raises. While ``gate`` is clear, predict()
    blocks, so that requests pile up behind the running batch.
    """

    version = "test"

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        tags = [image.width - 1 for image in images]
        self.calls.append(tags)
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        self.gate.wait(10)
        if POISON in tags:
            raise ValueError("poisoned batch")
        return [Prediction("Dealer", {}, "Red", {}, float(tag)) for tag in tags]


@pytest.fixture
def model() -> CountingClassifier:
    return CountingClassifier()


@pytest.fixture
def make_batcher(model: CountingClassifier) -> Iterator[type[MicroBatcher]]:
    made: list[MicroBatcher] = []

    class Tracked(MicroBatcher):
        def __init__(
            self, classifier: Classifier, *, max_batch: int, max_delay_s: float, workers: int = 1
        ) -> None:
            super().__init__(
                classifier, max_batch=max_batch, max_delay_s=max_delay_s, workers=workers
            )
            made.append(self)

    yield Tracked
    model.gate.set()
    for batcher in made:
        batcher.close()


def test_concurrent_callers_share_one_batch(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=16, max_delay_s=0.5)

    async def go() -> list[list[Prediction]]:
        return await asyncio.gather(
            *(batcher.predict([_image(10 * c + i) for i in range(2)]) for c in range(5))
        )

    answers = asyncio.run(go())
    assert len(model.calls) == 1 and sorted(model.calls[0]) == sorted(
        10 * c + i for c in range(5) for i in range(2)
    )
    assert [_tags(a) for a in answers] == [[10 * c, 10 * c + 1] for c in range(5)]
    # Inference ran in the batcher's thread, not in the event loop's.
    assert model.threads == {"cartag-infer-0"}


def test_full_batch_runs_without_waiting(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=4, max_delay_s=30)
    start = time.monotonic()
    assert _tags(batcher.submit([_image(i) for i in range(4)]).result(10)) == [0, 1, 2, 3]
    assert time.monotonic() - start < 5


def test_lone_request_waits_at_most_max_delay(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=64, max_delay_s=0.2)
    start = time.monotonic()
    assert _tags(batcher.submit([_image(7)]).result(10)) == [7]
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < 2.0  # waited for company, then ran alone


def test_late_request_gets_its_own_batch(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=64, max_delay_s=0.3)
    first = batcher.submit([_image(1)])
    time.sleep(0.05)
    second = batcher.submit([_image(2)])  # within the first one's delay: merged
    assert _tags(first.result(10)) == [1] and _tags(second.result(10)) == [2]
    third = batcher.submit([_image(3)])  # after the batch ran: a new one
    assert _tags(third.result(10)) == [3]
    assert model.calls == [[1, 2], [3]]


def test_large_request_is_cut_into_full_batches_in_order(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=8, max_delay_s=0.05)
    answer = batcher.submit([_image(i) for i in range(37)]).result(10)
    assert _tags(answer) == list(range(37))
    # The tail waits at most until max_delay after the request arrived, then runs alone.
    assert [len(c) for c in model.calls] == [8, 8, 8, 8, 5]


def test_requests_queued_behind_a_busy_worker_are_merged(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=5, max_delay_s=0)
    model.gate.clear()
    first = batcher.submit([_image(0)])
    assert model.entered.wait(10)
    queued = [batcher.submit([_image(10 + i), _image(20 + i)]) for i in range(4)]
    model.gate.set()
    assert _tags(first.result(10)) == [0]
    assert [_tags(f.result(10)) for f in queued] == [[10 + i, 20 + i] for i in range(4)]
    # 8 queued images, at most 5 a batch: the third request is split across two batches.
    assert model.calls == [[0], [10, 20, 11, 21, 12], [22, 13, 23]]


def test_a_failing_batch_fails_only_its_callers(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=4, max_delay_s=0)
    model.gate.clear()
    before = batcher.submit([_image(1)])
    assert model.entered.wait(10)
    victim = batcher.submit([_image(2), _image(3)])
    culprit = batcher.submit([_image(4), _image(POISON)])
    model.gate.set()
    assert _tags(before.result(10)) == [1]
    for failed in (victim, culprit):
        with pytest.raises(ValueError, match="poisoned"):
            failed.result(10)
    after = batcher.submit([_image(5)])
    assert _tags(after.result(10)) == [5]
    assert model.calls == [[1], [2, 3, 4, POISON], [5]]


def test_error_in_one_batch_drops_the_rest_of_that_request(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=2, max_delay_s=0)
    request = batcher.submit([_image(POISON), _image(1), _image(2), _image(3)])
    with pytest.raises(ValueError):
        request.result(10)
    assert batcher.submit([_image(4)]).result(10)[0].confidence == 4
    assert model.calls == [[POISON, 1], [4]]


def test_callers_in_different_event_loops_and_threads(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=32, max_delay_s=0.05)
    answers: dict[int, list[int]] = {}

    def caller(n: int) -> None:
        answers[n] = _tags(asyncio.run(batcher.predict([_image(n), _image(n + 100)])))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == {n: [n, n + 100] for n in range(6)}


def test_cancelled_request_is_skipped(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=4, max_delay_s=0)
    model.gate.clear()
    first = batcher.submit([_image(1)])
    assert model.entered.wait(10)
    dropped = batcher.submit([_image(2)])
    assert dropped.cancel()
    kept = batcher.submit([_image(3)])
    model.gate.set()
    assert _tags(first.result(10)) == [1] and _tags(kept.result(10)) == [3]
    assert model.calls == [[1], [3]]


def test_empty_request_and_close(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=4, max_delay_s=0)
    assert asyncio.run(batcher.predict([])) == []
    model.gate.clear()
    running = batcher.submit([_image(1)])
    assert model.entered.wait(10)
    queued = batcher.submit([_image(2)])
    closer = threading.Thread(target=batcher.close)
    closer.start()
    deadline = time.monotonic() + 10
    while not batcher._closed and time.monotonic() < deadline:
        time.sleep(0.01)  # close() must be under way before the running batch ends
    model.gate.set()
    closer.join(10)
    assert _tags(running.result(10)) == [1]  # the batch in flight finishes
    with pytest.raises(BatcherClosedError):
        queued.result(10)
    with pytest.raises(BatcherClosedError):
        batcher.submit([_image(3)])
    assert model.calls == [[1]]


def test_invalid_arguments(model: CountingClassifier) -> None:
    with pytest.raises(ValueError):
        MicroBatcher(model, max_batch=0, max_delay_s=0)
    with pytest.raises(ValueError):
        MicroBatcher(model, max_batch=1, max_delay_s=-1)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(model, max_batch=1, max_delay_s=0, workers=0)


class OutOfOrderClassifier(CountingClassifier):
    """The batch starting with image 0 only returns once another batch has finished."""

    def __init__(self, wait_s: float = 5.0) -> None:
        super().__init__()
        self.wait_s = wait_s
        self.other_finished = threading.Event()
        self.overlapped = False

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        if images[0].width - 1 == 0:
            self.overlapped = self.other_finished.wait(self.wait_s)
            return super().predict(images)
        try:
            return super().predict(images)
        finally:
            self.other_finished.set()


def test_batches_run_side_by_side_and_answers_keep_request_order(
    make_batcher: type[MicroBatcher],
) -> None:
    model = OutOfOrderClassifier()
    batcher = make_batcher(model, max_batch=2, max_delay_s=0.01, workers=2)
    answer = batcher.submit([_image(i) for i in range(6)]).result(10)
    # The first batch finished after a later one, yet the answer is in request order.
    assert model.overlapped
    assert _tags(answer) == list(range(6))
    assert sorted(len(c) for c in model.calls) == [2, 2, 2]
    assert model.threads <= {"cartag-infer-0", "cartag-infer-1"}


def test_one_runner_never_overlaps_batches(make_batcher: type[MicroBatcher]) -> None:
    model = OutOfOrderClassifier(wait_s=0.5)
    batcher = make_batcher(model, max_batch=2, max_delay_s=0.01, workers=1)
    started = time.monotonic()
    answer = batcher.submit([_image(i) for i in range(4)]).result(10)
    # Image 0's batch waited its full 0.5 s for a batch that could not start meanwhile.
    assert not model.overlapped and time.monotonic() - started >= 0.45
    assert _tags(answer) == list(range(4))


def test_a_failing_batch_among_parallel_ones_fails_its_callers_once(
    model: CountingClassifier, make_batcher: type[MicroBatcher]
) -> None:
    batcher = make_batcher(model, max_batch=2, max_delay_s=0.01, workers=2)
    bad = batcher.submit([_image(0), _image(1), _image(POISON), _image(3), _image(4)])
    with pytest.raises(ValueError, match="poisoned"):
        bad.result(10)
    good = batcher.submit([_image(7), _image(8)]).result(10)
    assert _tags(good) == [7, 8]


class WidthClassifier(Classifier):
    """A valid model answer whose confidence encodes the image width; records batch sizes."""

    version = "test-width"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        self.batch_sizes.append(len(images))
        out = []
        for image in images:
            type_p = np.full(len(IMAGE_TYPES), 1.0)
            type_p[0] = image.width  # Dealer, confidence width / (width + 2)
            out.append(make_prediction(type_p, np.ones(len(COLORS))))
        return out


def test_classify_service_runs_a_large_request_in_pipelined_chunks(
    settings: Settings, sqlite_db: Database
) -> None:
    settings = settings.model_copy(update={"inference_batch_size": 2, "max_batch_delay_ms": 5})
    model = WidthClassifier()
    n = 23  # several chunks of 4 batches of 2, the last one short

    async def go(server: ImageServer) -> list[float | None]:
        fetcher = Fetcher(settings)
        service = ClassifyService(settings, sqlite_db, fetcher, model, SystemClock())
        try:
            requests = [ImageRequest(url=server.url(f"/{i}.jpg")) for i in range(n)]
            results = await service.classify("adv", requests)
        finally:
            service.close()
            await fetcher.aclose()
        assert [r.url for r in results] == [q.url for q in requests]
        assert {r.status for r in results} == {"classified"}
        return [r.confidence for r in results]

    with ImageServer() as server:
        for i in range(n):
            server.add_file(f"/{i}.jpg", jpeg_bytes(width=40 + i, height=30))
        confidences = asyncio.run(go(server))
    # Every answer went back to its own image, in request order.
    assert confidences == pytest.approx([(40 + i) / (42 + i) for i in range(n)], abs=1e-6)
    assert sum(model.batch_sizes) == n and max(model.batch_sizes) <= 2


def _thread_cpu_ticks(thread: threading.Thread) -> int:
    """User + system CPU of a thread so far, in clock ticks (Linux /proc)."""
    with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_idle_batcher_uses_no_cpu(
    make_batcher: type[MicroBatcher], model: CountingClassifier
) -> None:
    # Its dispatcher and runners block on their queues: an idle server's re-runs (no
    # image to classify) must not pay for threads that poll.
    batcher = make_batcher(model, max_batch=4, max_delay_s=0.001, workers=2)
    assert _tags(batcher.submit([_image(1)]).result(5)) == [1]
    threads = [t for t in threading.enumerate() if t.name.startswith(("cartag-infer", "cartag-b"))]
    assert len(threads) >= 3  # two runners and the dispatcher
    before = [_thread_cpu_ticks(t) for t in threads]
    time.sleep(1.0)
    spent = sum(_thread_cpu_ticks(t) for t in threads) - sum(before)
    assert spent <= 2  # ticks of 10 ms: a polling loop would burn tens
