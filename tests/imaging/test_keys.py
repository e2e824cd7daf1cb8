"""Image keys (content / validators), URL normalization and the perceptual hash."""

from __future__ import annotations

import hashlib
import io
import itertools
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageOps

from cartag.errors import FetchError
from cartag.imaging.decode import decode_image
from cartag.imaging.keys import (
    choose_image_key,
    content_key,
    content_sha256,
    echoable_url,
    hamming,
    normalize_url,
    phash,
    request_url,
    storable_url,
    validators_key,
)
from tests.support.images import real_photos

URL = "https://img.example.com/a/B.jpg?w=1"
ETAG = '"abc"'
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
SHA = hashlib.sha256(b"body").hexdigest()


# --- content keys -----------------------------------------------------------------------


def test_content_sha256_is_the_hex_digest() -> None:
    assert content_sha256(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_content_key() -> None:
    assert content_key(SHA) == "sha256:" + SHA


# --- normalize_url ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "HTTPS://CDN.Example.COM:443/A/B.jpg?X=1&y=2#frag",
            "https://cdn.example.com/A/B.jpg?X=1&y=2",
        ),
        ("http://example.com:80/x", "http://example.com/x"),
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("https://example.com:80/x", "https://example.com:80/x"),  # not https' default
        ("https://example.com:/x", "https://example.com/x"),
        ("http://[2001:DB8::1]:80/p", "http://[2001:db8::1]/p"),
        ("http://user:PW@Example.com/p", "http://user:PW@example.com/p"),
        # Path and query are opaque: no case folding, decoding, dot-segment
        # removal or parameter sorting.
        (
            "https://example.com/a%2Fb/../C.JPG?b=2&a=1",
            "https://example.com/a%2Fb/../C.JPG?b=2&a=1",
        ),
        ("https://example.com/x?sig=AbC%3D", "https://example.com/x?sig=AbC%3D"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_normalize_url_is_idempotent() -> None:
    once = normalize_url("HTTP://Example.com:80/a?b#c")

    assert normalize_url(once) == once


# --- validators_key ---------------------------------------------------------------------


def test_validators_key_golden_value() -> None:
    # Keys are stored: changing the canonical encoding orphans every cached
    # image, so it must only change together with the "v1:" prefix.
    assert validators_key(URL, ETAG, LAST_MODIFIED, 1234) == (
        "v1:e6d347b7a4ff57276975ea505977ccd43d36207cb16d8057cdfdbdb63c83cb02"
    )


@pytest.mark.parametrize(
    ("etag", "last_modified", "length"),
    [(None, None, None), (None, None, 1234), ("", "  ", 1234)],
)
def test_no_validators_no_key(
    etag: str | None, last_modified: str | None, length: int | None
) -> None:
    assert validators_key(URL, etag, last_modified, length) is None


@pytest.mark.parametrize(("etag", "last_modified"), [(ETAG, None), (None, LAST_MODIFIED)])
def test_either_validator_is_enough(etag: str | None, last_modified: str | None) -> None:
    key = validators_key(URL, etag, last_modified, None)

    assert key is not None
    assert re.fullmatch(r"v1:[0-9a-f]{64}", key)


def test_validators_key_is_stable_across_equivalent_urls() -> None:
    key = validators_key(URL, ETAG, LAST_MODIFIED, 1234)

    assert validators_key(URL, ETAG, LAST_MODIFIED, 1234) == key
    assert (
        validators_key("HTTPS://IMG.example.com:443/a/B.jpg?w=1#x", ETAG, LAST_MODIFIED, 1234)
        == key
    )


@pytest.mark.parametrize(
    ("url", "etag", "last_modified", "length"),
    [
        ("https://img.example.com/a/b.jpg?w=1", ETAG, LAST_MODIFIED, 1234),  # path case
        ("https://img.example.com/a/B.jpg?w=2", ETAG, LAST_MODIFIED, 1234),
        ("http://img.example.com/a/B.jpg?w=1", ETAG, LAST_MODIFIED, 1234),
        (URL, 'W/"abc"', LAST_MODIFIED, 1234),  # weak and strong ETags differ
        (URL, ETAG, None, 1234),
        (URL, None, LAST_MODIFIED, 1234),
        (URL, ETAG, "Thu, 22 Oct 2015 07:28:00 GMT", 1234),
        (URL, ETAG, LAST_MODIFIED, 1235),
        (URL, ETAG, LAST_MODIFIED, None),
    ],
)
def test_validators_key_changes_with_any_field(
    url: str, etag: str | None, last_modified: str | None, length: int | None
) -> None:
    assert validators_key(url, etag, last_modified, length) != validators_key(
        URL, ETAG, LAST_MODIFIED, 1234
    )


def test_fields_cannot_bleed_into_each_other() -> None:
    # A naive "etag|last_modified" join would make these two equal.
    assert validators_key(URL, "a|b", "c", None) != validators_key(URL, "a", "b|c", None)


# --- choose_image_key -------------------------------------------------------------------


def test_validators_key_is_chosen_when_present() -> None:
    key = choose_image_key(URL, ETAG, None, 10, SHA, content_hash_hosts=[])

    assert key == validators_key(URL, ETAG, None, 10)


def test_content_key_without_validators() -> None:
    key = choose_image_key(URL, None, None, 10, SHA, content_hash_hosts=[])

    assert key == content_key(SHA)


@pytest.mark.parametrize(
    ("url", "hosts", "content_keyed"),
    [
        ("https://img.example.com/x.jpg", ["img.example.com"], True),
        ("https://IMG.Example.com:8443/x.jpg", ["img.example.com"], True),  # case, port
        ("https://img.example.com./x.jpg", ["img.example.com"], True),  # FQDN dot
        ("https://img.example.com/x.jpg", ["IMG.EXAMPLE.COM"], True),
        ("https://img.example.com/x.jpg", ["*.example.com"], True),
        ("https://a.b.example.com/x.jpg", ["*.example.com"], True),
        ("https://example.com/x.jpg", ["*.example.com"], False),  # apex is not a subdomain
        ("https://badexample.com/x.jpg", ["*.example.com"], False),
        ("https://img.example.com/x.jpg", ["example.com"], False),  # exact entry: exact host
        ("https://img.example.com.evil.org/x.jpg", ["img.example.com"], False),
        ("https://user@img.example.com/x.jpg", ["img.example.com"], True),
        ("https://[2001:db8::1]/x.jpg", ["2001:db8::1"], True),
        ("https://other.org/x.jpg", ["img.example.com", "*.example.com"], False),
    ],
)
def test_content_hash_hosts(url: str, hosts: list[str], content_keyed: bool) -> None:
    key = choose_image_key(url, ETAG, LAST_MODIFIED, 10, SHA, content_hash_hosts=hosts)

    assert (key == content_key(SHA)) is content_keyed
    if not content_keyed:
        assert key == validators_key(url, ETAG, LAST_MODIFIED, 10)


# --- phash ------------------------------------------------------------------------------


def _scene() -> Image.Image:
    image = Image.linear_gradient("L").resize((128, 96)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 70, 70), fill=(200, 30, 30))
    draw.rectangle((80, 10, 120, 50), fill=(20, 20, 200))
    return image


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _decoded_phash(data: bytes) -> str:
    return phash(decode_image(data, max_pixels=10**8).image)


def test_phash_format_and_determinism() -> None:
    value = phash(_scene())

    assert re.fullmatch(r"[0-9a-f]{16}", value)
    assert phash(_scene()) == value


def test_phash_golden_value() -> None:
    # Hashes are stored with fixes; a change in the algorithm stops old fixes
    # from matching new images. A bit or two of drift across Pillow versions
    # (resampling rounding) is tolerated.
    assert hamming(phash(_scene()), "fb4f84317f48b007") <= 2


def test_phash_ignores_mode_and_size_but_not_content() -> None:
    scene = _scene()

    assert hamming(phash(scene), phash(scene.convert("L"))) <= 2
    assert hamming(phash(scene), phash(scene.resize((512, 384)))) <= 2
    assert hamming(phash(scene), phash(ImageOps.mirror(scene))) > 10
    assert hamming(phash(scene), phash(ImageOps.invert(scene))) > 10


def test_phash_of_a_flat_image() -> None:
    assert phash(Image.new("RGB", (50, 50), (0, 0, 0))) == "0" * 16
    assert phash(Image.new("RGB", (50, 50), (128, 128, 128))) == "8" + "0" * 15  # DC bit only


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[Image.Image]:
    # 27 photos: 3 per colour folder.
    return [Image.open(path).convert("RGB") for path in real_photos(shared_data, 27)]


def test_phash_survives_reencoding(photos: list[Image.Image]) -> None:
    for photo in photos:
        assert hamming(_decoded_phash(_jpeg(photo, 75)), _decoded_phash(_jpeg(photo, 95))) <= 4


def test_phash_survives_resizing(photos: list[Image.Image]) -> None:
    for photo in photos:
        half = photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS)
        assert hamming(_decoded_phash(_jpeg(photo, 90)), _decoded_phash(_jpeg(half, 90))) <= 4


def test_phash_separates_different_photos(photos: list[Image.Image]) -> None:
    hashes = [phash(photo) for photo in photos]
    distances = [hamming(a, b) for a, b in itertools.combinations(hashes, 2)]

    assert sum(d > 10 for d in distances) >= 0.95 * len(distances)
    assert sorted(distances)[len(distances) // 2] > 20


# --- hamming ----------------------------------------------------------------------------


def test_hamming() -> None:
    assert hamming("0" * 16, "0" * 16) == 0
    assert hamming("0" * 16, "f" * 16) == 64
    assert hamming("8000000000000001", "0000000000000000") == 2
    assert hamming("ABCDEF0123456789", "abcdef0123456789") == 0


@pytest.mark.parametrize(("a", "b"), [("00", "000"), ("zz", "00")])
def test_hamming_rejects_bad_input(a: str, b: str) -> None:
    with pytest.raises(ValueError):
        hamming(a, b)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1/", "invalid_url"),  # urllib raises "Invalid IPv6 URL"
        ("http://[127.0.0.1]/", "invalid_url"),
        ("ftp://cdn.example/a.jpg", "invalid_url"),
        ("file:///etc/passwd", "invalid_url"),
        ("data:image/png;base64,AAAA", "invalid_url"),
        ("//cdn.example/a.jpg", "invalid_url"),
        ("http://", "invalid_url"),
        ("", "invalid_url"),
        ("https://cdn.example/" + "a" * 2029, "url_too_long"),  # 2,049 characters
        # Control characters: a NUL cannot be stored (PostgreSQL), none can be fetched.
        ("https://cdn.example/\0.jpg", "invalid_url"),
        ("https://cdn.example/a.jpg?q=\0", "invalid_url"),
        ("https://cdn\0.example/a.jpg", "invalid_url"),
        ("https://cdn.example/\x1b[31m.jpg", "invalid_url"),
        ("https://cdn.example/\x7f.jpg", "invalid_url"),
        # A lone surrogate (JSON's "\ud800"): no character, no UTF-8 for it.
        ("https://cdn.example/\ud800.jpg", "invalid_url"),
        ("https://cdn.\udfff.example/a.jpg", "invalid_url"),
    ],
)
def test_request_url_refuses_what_cannot_be_fetched_or_stored(url: str, reason: str) -> None:
    with pytest.raises(FetchError) as caught:
        request_url(url)
    assert caught.value.reason == reason


def test_urls_request_url_refuses_are_kept_and_echoed_encodable() -> None:
    url = "https://cdn.example/\0a\ud800.jpg"
    assert storable_url(url) == "https://cdn.example/%00a%ED%A0%80.jpg"
    assert echoable_url(url) == "https://cdn.example/\0a\ufffd.jpg"
    assert storable_url(URL) == echoable_url(URL) == URL
    storable_url(url).encode("ascii")


def test_request_url_normalizes_a_good_url() -> None:
    assert request_url(" HTTPS://CDN.Example.com:443/A.jpg#x ") == "https://cdn.example.com/A.jpg"
    # Tabs and line breaks inside are dropped, as urllib and browsers drop them.
    assert request_url("https://cdn.example/a\n.jpg\t") == "https://cdn.example/a.jpg"
    longest = "https://cdn.example/" + "a" * 2028  # 2,048 characters: accepted
    assert request_url(longest) == longest
