"""A read-through cache of URL lookups in front of the database (optional, Redis).

Classify looks up every URL of an inventory: which image it served last, with the
validators to revalidate it, and that image's stored answer. With
``CARTAG_REDIS_CACHE_URL`` set, those lookups are answered from Redis and only
misses go to the database; every API process and worker shares the entries.

What is cached is the model's stored answer and the URL's validators, never a fix:
fixes are read from the database on every classify, so a fix is visible at once.
Whoever changes a URL's image or an image's stored answer through the classify
service invalidates those URLs (new images, revalidations); entries also expire
after ``CARTAG_REDIS_CACHE_TTL_S``. A cache that fails (Redis down) is skipped,
never a failed classify.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cartag.errors import ConfigError
from cartag.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UrlLookup:
    """A URL, its validators, and the stored answer of the image it served.

    Only what answering needs: an image's scores and sizes stay in the database.
    """

    url: str
    image_key: str
    etag: str | None
    last_modified: str | None
    content_length: int | None
    checked_at: float  # POSIX seconds, UTC
    image_url: str
    content_sha256: str | None
    phash: str | None
    image_type: str | None
    color: str | None
    confidence: float | None
    model_version: str | None
    color_reason: str | None
    # Last, with a default: entries written before it existed still join.
    novelty: float | None = None

    def url_part(self) -> str:
        """The URL's own fields, serialised."""
        fields = (self.image_key, self.etag, self.last_modified, self.content_length)
        return json.dumps((*fields, self.checked_at), separators=(",", ":"))

    def image_part(self) -> str:
        """The image's answer fields, serialised."""
        fields = (self.image_url, self.content_sha256, self.phash, self.image_type, self.color)
        rest = (self.confidence, self.model_version, self.color_reason, self.novelty)
        return json.dumps((*fields, *rest), separators=(",", ":"))

    @classmethod
    def join(cls, url: str, url_part: str | bytes, image_part: str | bytes) -> UrlLookup:
        return cls(url, *json.loads(url_part), *json.loads(image_part))

    @staticmethod
    def image_key_of(url_part: str | bytes) -> str:
        key = json.loads(url_part)[0]
        assert isinstance(key, str)
        return key


class LookupCache:
    """The cache boundary. The base class caches nothing (no Redis configured).

    Entries come in two parts, invalidated separately: per URL (its image key and
    validators) and per image key (the stored answer), so a re-classified image is
    refreshed for every URL that serves it.
    """

    def get_many(self, urls: Sequence[str]) -> dict[str, UrlLookup]:
        """Entries of the URLs that are cached (both parts); the others are absent."""
        return {}

    def set_many(self, entries: Sequence[UrlLookup]) -> None:
        """Store entries (they expire after the cache's TTL)."""

    def touch(self, entries: Sequence[UrlLookup], checked_at: float) -> None:
        """Store entries again, revalidated at ``checked_at`` (POSIX seconds).

        Only those the cache still holds as given: an entry invalidated or replaced
        since it was read (another request stored the URL's new image meanwhile) is left
        alone, or the old answer would be served, unrevalidated, until the entry expired.
        """
        # Nothing to copy when nothing is cached (the base class): a re-run's 1,000
        # dataclasses.replace calls were ~2 % of its CPU.

    def invalidate(self, urls: Collection[str] = (), image_keys: Collection[str] = ()) -> None:
        """Forget these URLs (they serve another image or were revalidated) and images
        (their stored answer changed)."""

    def close(self) -> None:
        """Release connections."""


class InMemoryLookupCache(LookupCache):
    """Per-process dicts with expiry, for tests and single-process use.

    Args:
        ttl_s: Lifetime of an entry.
        now: Monotonic time source (tests pass a fake).
    """

    def __init__(self, ttl_s: float = 3600, now: Any = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._now = now
        self._urls: dict[str, tuple[float, str]] = {}
        self._images: dict[str, tuple[float, str]] = {}
        self.hits = 0
        self.misses = 0

    def get_many(self, urls: Sequence[str]) -> dict[str, UrlLookup]:
        found: dict[str, UrlLookup] = {}
        now = self._now()
        for url in urls:
            entry = self._urls.get(url)
            if entry is None or entry[0] <= now:
                continue
            image = self._images.get(UrlLookup.image_key_of(entry[1]))
            if image is not None and image[0] > now:
                found[url] = UrlLookup.join(url, entry[1], image[1])
        self.hits += len(found)
        self.misses += len(urls) - len(found)
        return found

    def touch(self, entries: Sequence[UrlLookup], checked_at: float) -> None:
        now = self._now()
        expires = now + self.ttl_s
        for entry in entries:
            held = self._urls.get(entry.url)
            if held is None or held[0] <= now or held[1] != entry.url_part():
                continue
            self._urls[entry.url] = (expires, replace(entry, checked_at=checked_at).url_part())
            image = self._images.get(entry.image_key)
            if image is not None and image[0] > now and image[1] == entry.image_part():
                self._images[entry.image_key] = (expires, image[1])

    def set_many(self, entries: Sequence[UrlLookup]) -> None:
        expires = self._now() + self.ttl_s
        for entry in entries:
            self._urls[entry.url] = (expires, entry.url_part())
            self._images[entry.image_key] = (expires, entry.image_part())

    def invalidate(self, urls: Collection[str] = (), image_keys: Collection[str] = ()) -> None:
        for url in urls:
            self._urls.pop(url, None)
        for key in image_keys:
            self._images.pop(key, None)


# KEYS: a URL's entry and its image's, per entry. ARGV: the TTL, then per entry the URL
# part as read, the URL part to store, the image part as read. An entry is stored again
# only where its URL part is still the one read (and its image part refreshed likewise).
_TOUCH_SCRIPT = """
local ttl = ARGV[1]
local arg = 2
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[arg] then
    redis.call('SET', KEYS[i], ARGV[arg + 1], 'EX', ttl)
    if redis.call('GET', KEYS[i + 1]) == ARGV[arg + 2] then
      redis.call('EXPIRE', KEYS[i + 1], ttl)
    end
  end
  arg = arg + 3
end
return 0
"""


class RedisLookupCache(LookupCache):
    """Entries in Redis under ``<prefix>u:<url>`` and ``<prefix>i:<image key>``.

    Args:
        url: ``redis://host:port/db``.
        ttl_s: Lifetime of an entry.
        prefix: Key prefix (one per deployment sharing a Redis database).
    """

    def __init__(self, url: str, *, ttl_s: int = 3600, prefix: str = "cartag:") -> None:
        import redis

        self.ttl_s = ttl_s
        self._url_prefix = f"{prefix}u:"
        # "i2:": image parts carry the novelty since migration 0008. A process of before
        # cannot read the longer entry, so during a rolling upgrade the two kinds of process
        # keep their image parts apart (URL parts are unchanged and shared).
        self._image_prefix = f"{prefix}i2:"
        try:
            self._redis: Any = redis.Redis.from_url(
                url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
        except ValueError as exc:
            raise ConfigError(
                f"CARTAG_REDIS_CACHE_URL {url!r} is not a Redis URL ({exc}); "
                "use redis://host:6379/1"
            ) from exc
        self._touch_script: Any = self._redis.register_script(_TOUCH_SCRIPT)

    def get_many(self, urls: Sequence[str]) -> dict[str, UrlLookup]:
        if not urls:
            return {}
        try:
            url_parts = self._redis.mget([self._url_prefix + u for u in urls])
            known = [(u, p) for u, p in zip(urls, url_parts, strict=True) if p]
            if not known:
                return {}
            keys = [UrlLookup.image_key_of(p) for _, p in known]
            image_parts = self._redis.mget([self._image_prefix + k for k in keys])
        except Exception as exc:  # noqa: BLE001 - the database answers instead
            log.warning("redis cache read failed (%s); reading the database", exc)
            return {}
        return {
            url: UrlLookup.join(url, part, image)
            for (url, part), image in zip(known, image_parts, strict=True)
            if image
        }

    def touch(self, entries: Sequence[UrlLookup], checked_at: float) -> None:
        if not entries:
            return
        keys: list[str] = []
        args: list[str | int] = [self.ttl_s]
        for e in entries:
            keys += [self._url_prefix + e.url, self._image_prefix + e.image_key]
            args += [e.url_part(), replace(e, checked_at=checked_at).url_part(), e.image_part()]
        try:
            # One round trip; compared and set in one step, so that an invalidation
            # in between cannot be undone.
            self._touch_script(keys=keys, args=args)
        except Exception as exc:  # noqa: BLE001 - a cache write is an optimisation
            log.warning("redis cache write failed (%s)", exc)

    def set_many(self, entries: Sequence[UrlLookup]) -> None:
        if not entries:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for e in entries:
                    pipe.set(self._url_prefix + e.url, e.url_part(), ex=self.ttl_s)
                    pipe.set(self._image_prefix + e.image_key, e.image_part(), ex=self.ttl_s)
                pipe.execute()
        except Exception as exc:  # noqa: BLE001 - a cache write is an optimisation
            log.warning("redis cache write failed (%s)", exc)

    def invalidate(self, urls: Collection[str] = (), image_keys: Collection[str] = ()) -> None:
        names = [self._url_prefix + u for u in urls] + [self._image_prefix + k for k in image_keys]
        if not names:
            return
        try:
            self._redis.delete(*names)
        except Exception as exc:  # noqa: BLE001 - entries still expire after the TTL
            log.error("redis cache invalidation of %d entries failed (%s)", len(names), exc)

    def close(self) -> None:
        self._redis.close()


def build_lookup_cache(settings: Settings) -> LookupCache:
    """Redis when ``CARTAG_REDIS_CACHE_URL`` is set, else no cache."""
    if not settings.redis_cache_url:
        return LookupCache()
    return RedisLookupCache(
        settings.redis_cache_url,
        ttl_s=settings.redis_cache_ttl_s,
        prefix=settings.redis_cache_prefix,
    )
