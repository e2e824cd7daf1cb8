"""Micro-batching: images of concurrent requests share backbone calls.

On CPU a backbone call costs a fixed overhead plus a per-image part, so eight
one-image requests are served faster as one batch of eight than as eight
calls. :class:`MicroBatcher` queues the images of every caller and feeds them
to the classifier in batches of up to ``max_batch``, on ``workers`` runner threads:

- a batch is formed when a runner is free; it runs as soon as it is full, or
  ``max_delay_s`` after its first image arrived, whichever comes first; while
  every runner is busy, images simply queue up and the next batch starts as
  soon as one is free, so the delay is only ever paid by an idle runner
  waiting for company;
- with several runners, batches run at once (ONNX Runtime sessions with one
  intra-op thread each: on a busy 2-core machine two single-threaded runs get
  more done than one run spread over both cores, whose threads wait for each
  other at every operator; see ``benchmarks/RESULTS.md``);
- a large request (1,000 images) is cut into full batches that run back to back
  (or side by side);
- callers are served first come, first served; each gets its predictions in
  its own order, whatever order its batches finish in;
- if the classifier raises, exactly the callers with images in that batch get
  the exception;
- :meth:`MicroBatcher.swap` replaces the classifier atomically (a model
  promotion): the batch running finishes with the old model, every later batch
  uses the new one, and each prediction carries the version that made it.

The dispatcher and the runners are plain threads fed by thread-safe queues,
not asyncio tasks, so callers may live in different event loops (the API's, a
job runner's) or in no loop at all (:meth:`MicroBatcher.submit`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from cartag.models.classifier import Classifier, Prediction
from cartag.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    """One caller's images and where their predictions go."""

    images: Sequence[Image.Image]
    arrived: float  # time.monotonic() when queued
    future: concurrent.futures.Future[list[Prediction]] = field(
        default_factory=concurrent.futures.Future
    )
    results: list[Prediction | None] = field(init=False)  # by image index, None until run
    done: int = 0  # predictions received so far
    next: int = 0  # index of the first image not yet put in a batch

    def __post_init__(self) -> None:
        self.results = [None] * len(self.images)

    @property
    def remaining(self) -> int:
        return len(self.images) - self.next


# (request, index of its first image in the batch, number of its images)
_Batch = list[tuple[_Request, int, int]]


class BatcherClosedError(RuntimeError):
    """The batcher was closed before the request was answered."""


class MicroBatcher:
    """Merges the images of concurrent callers into batches for one classifier.

    Args:
        classifier: What runs the batches; ``predict`` is only ever called from
            the batcher's runner threads, with at most ``max_batch`` images, by
            up to ``workers`` threads at once.
        max_batch: Most images per ``predict`` call.
        max_delay_s: Longest time the first image of a batch waits for more.
        telemetry: Told the size and duration of every successful batch.
        workers: Batches that may run at once.

    Attributes:
        workers: Batches that may run at once.
        batches: Number of ``predict`` calls made so far.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        max_batch: int,
        max_delay_s: float,
        telemetry: Telemetry | None = None,
        workers: int = 1,
    ) -> None:
        if max_batch <= 0:
            raise ValueError("max_batch must be positive")
        if max_delay_s < 0:
            raise ValueError("max_delay_s must not be negative")
        if workers <= 0:
            raise ValueError("workers must be positive")
        self.classifier = classifier
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.telemetry = telemetry or Telemetry()
        self.workers = workers
        self.batches = 0
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        # Guards _closed against a submit racing close(): nothing may be queued
        # behind the stop sentinel, or its caller would wait forever.
        self._lock = threading.Lock()
        self._closed = False
        # Guards the requests' progress (next, results, done) and the batch count,
        # which the dispatcher and the runners both touch.
        self._state = threading.Lock()
        # A batch is only formed when a runner is free to take it.
        self._free = threading.Semaphore(workers)
        self._work: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._runners = [
            threading.Thread(target=self._runner, name=f"cartag-infer-{i}", daemon=True)
            for i in range(workers)
        ]
        for runner in self._runners:
            runner.start()
        self._thread = threading.Thread(target=self._run, name="cartag-batcher", daemon=True)
        self._thread.start()

    def submit(self, images: Sequence[Image.Image]) -> concurrent.futures.Future[list[Prediction]]:
        """Queue images; thread-safe, returns at once.

        Args:
            images: Decoded PIL images, any number.

        Returns:
            A future of one prediction per image, in order. Cancelling it drops
            the images not yet in a batch.

        Raises:
            BatcherClosedError: After :meth:`close`.
        """
        request = _Request(list(images), time.monotonic())
        if not request.images:
            request.future.set_result([])
            return request.future
        with self._lock:
            if self._closed:
                raise BatcherClosedError("the micro-batcher is closed")
            self._queue.put(request)
        return request.future

    def swap(self, classifier: Classifier) -> Classifier:
        """Run every batch that starts from now on with ``classifier``; thread-safe.

        Nothing waits and nothing fails: a batch already running finishes with the
        old classifier (each batch reads the attribute once), queued images go to
        the new one.

        Returns:
            The classifier that was in use.
        """
        old, self.classifier = self.classifier, classifier
        return old

    async def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """Classify images, batched with those of concurrent callers.

        Args:
            images: Decoded PIL images, any number.

        Returns:
            One prediction per image, in order.

        Raises:
            BatcherClosedError: The batcher is or gets closed.
            Exception: Whatever the classifier raised for a batch holding one of
                these images.
        """
        return await asyncio.wrap_future(self.submit(images))

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Stop after the batches running now; queued requests fail.

        Args:
            timeout_s: Longest wait for the running batches to finish.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._thread.join(timeout_s)
        for _ in self._runners:
            self._work.put(None)
        for runner in self._runners:
            runner.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # --- dispatcher and runner threads -------------------------------------------

    def _run(self) -> None:
        pending: collections.deque[_Request] = collections.deque()
        stopping = False
        while not stopping:
            if not pending:
                request = self._queue.get()
                if request is None:
                    break
                pending.append(request)
            # Wait for a runner before forming the batch: what arrives meanwhile joins it.
            self._free.acquire()
            stopping = self._fill(pending)
            if self._closed:
                self._free.release()
                break
            with self._state:
                batch = self._take_batch(pending)
            if batch:
                self._work.put(batch)
            else:
                self._free.release()
        self._fail_all(pending)

    def _runner(self) -> None:
        while True:
            batch = self._work.get()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            finally:
                self._free.release()

    def _fill(self, pending: collections.deque[_Request]) -> bool:
        """Add queued requests until a batch is full or its deadline passes.

        Returns:
            True if the stop sentinel was read.
        """
        deadline = pending[0].arrived + self.max_delay_s
        queued = sum(r.remaining for r in pending)
        while queued < self.max_batch:
            wait = deadline - time.monotonic()
            try:
                # Past the deadline, still take what is already queued: requests
                # that arrived during the previous batch share this one for free.
                request = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                return True
            pending.append(request)
            queued += request.remaining
        return False

    def _take_batch(self, pending: collections.deque[_Request]) -> _Batch:
        """Pop up to ``max_batch`` images off the front of ``pending`` (holding ``_state``).

        Returns:
            (request, start, count) triples: ``count`` images of ``request`` from ``start``.
        """
        batch: _Batch = []
        room = self.max_batch
        while pending and room > 0:
            request = pending[0]
            if request.future.cancelled() or request.remaining == 0:
                pending.popleft()
                continue
            count = min(room, request.remaining)
            batch.append((request, request.next, count))
            request.next += count
            room -= count
            if request.remaining == 0:
                pending.popleft()
        return batch

    def _run_batch(self, batch: _Batch) -> None:
        images: list[Image.Image] = []
        for request, start, count in batch:
            images.extend(request.images[start : start + count])
        # Read once: a swap during this batch must not mix two models in one answer.
        classifier = self.classifier
        started = time.monotonic()
        try:
            with self._state:
                self.batches += 1
            predictions = classifier.predict(images)
            if len(predictions) != len(images):
                raise RuntimeError(
                    f"the classifier returned {len(predictions)} predictions for "
                    f"{len(images)} images"
                )
            predictions = [
                p
                if p.model_version is not None
                else dataclasses.replace(p, model_version=classifier.version)
                for p in predictions
            ]
        except Exception as exc:
            log.warning("a batch of %d images failed: %r", len(images), exc)
            for request, _, _ in batch:
                with self._state:
                    request.next = len(request.images)  # its other images are not worth running
                _settle(request.future, exc)
            return
        try:
            self.telemetry.batch_ran(len(images), time.monotonic() - started)
        except Exception:  # noqa: BLE001 - metrics must never fail a batch
            log.exception("telemetry failed on a batch")
        offset = 0
        for request, start, count in batch:
            with self._state:
                request.results[start : start + count] = predictions[offset : offset + count]
                request.done += count
                complete = request.done == len(request.images)
            offset += count
            if complete:
                _settle(request.future, [p for p in request.results if p is not None])

    def _fail_all(self, pending: collections.deque[_Request]) -> None:
        error = BatcherClosedError("the micro-batcher was closed before answering")
        for request in pending:
            _settle(request.future, error)
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                return
            if queued is not None:
                _settle(queued.future, error)


def _settle(
    future: concurrent.futures.Future[list[Prediction]],
    outcome: list[Prediction] | BaseException,
) -> None:
    # set_running_or_notify_cancel() marks the future as ours to complete; it is
    # False when the caller cancelled it, which then needs nothing from us.
    if future.done() or not future.set_running_or_notify_cancel():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
