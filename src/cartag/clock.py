"""The clock boundary: code asks a Clock for the time so tests can fix it."""

from __future__ import annotations

import datetime as dt


class Clock:
    """Base clock. Subclasses return timezone-aware UTC datetimes."""

    def now(self) -> dt.datetime:
        raise NotImplementedError


class SystemClock(Clock):
    """The real wall clock, in UTC."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FakeClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += dt.timedelta(seconds=seconds)
