"""decode_image: formats, orientation, colour modes, and every DecodeError reason."""

from __future__ import annotations

import dataclasses
import io
import random
import struct
import threading
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, features

from cartag.errors import DecodeError
from cartag.imaging import limits
from cartag.imaging.decode import DecodedImage, decode_image
from cartag.settings import Settings
from tests.support.images import (
    bomb_png_bytes,
    cmyk_jpeg_bytes,
    gif_bytes,
    jpeg_bytes,
    noise_jpeg_bytes,
    placeholder_png,
    png_bytes,
    real_photos,
    truncated_jpeg_bytes,
    webp_bytes,
)

MAX_PIXELS = 64_000_000
RED = (200, 30, 30)
WHITE = (255, 255, 255)

needs_avif = pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")


def decode(data: bytes, **kwargs: int) -> DecodedImage:
    kwargs.setdefault("max_pixels", MAX_PIXELS)
    return decode_image(data, **kwargs)


def reason_of(data: bytes, **kwargs: int) -> str:
    with pytest.raises(DecodeError) as caught:
        decode(data, **kwargs)
    return caught.value.reason


def close(actual: object, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    """Whether a ``getpixel`` result is within ``tolerance`` of ``expected`` per channel."""
    assert isinstance(actual, tuple), actual
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


# --- plain decoding -------------------------------------------------------------------


def test_jpeg_decodes_to_rgb_with_original_size() -> None:
    decoded = decode(jpeg_bytes(64, 48, RED))

    assert decoded.format == "JPEG"
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (64, 48)  # small images are not enlarged
    assert close(decoded.image.getpixel((32, 24)), RED)


def test_result_is_frozen_and_independent_of_the_input() -> None:
    data = bytearray(jpeg_bytes())
    decoded = decode(bytes(data))
    data[:] = b"\x00" * len(data)

    assert decoded.image.getpixel((0, 0)) is not None  # pixels loaded, file closed
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.width = 1  # type: ignore[misc]


def test_placeholder_factory_decodes() -> None:
    decoded = decode(placeholder_png())

    assert decoded.format == "PNG"
    assert decoded.image.size == (640, 480)


def test_real_photo_decodes(shared_data: Path) -> None:
    (path,) = real_photos(shared_data, 1)
    decoded = decode(path.read_bytes())

    assert decoded.format == "JPEG"
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (decoded.width, decoded.height)


@pytest.mark.parametrize(("max_pixels", "target_size"), [(0, 320), (100, 0)])
def test_bad_arguments_are_a_programming_error(max_pixels: int, target_size: int) -> None:
    with pytest.raises(ValueError):
        decode_image(jpeg_bytes(), max_pixels=max_pixels, target_size=target_size)


# --- EXIF orientation ----------------------------------------------------------------

# Where the black block painted in the stored top-left corner ends up on screen.
CORNER_AFTER_ORIENTATION = {
    1: "top-left",
    2: "top-right",  # mirrored horizontally
    3: "bottom-right",  # rotated 180
    4: "bottom-left",  # mirrored vertically
    5: "top-left",  # transposed
    6: "top-right",  # rotated 90 clockwise
    7: "bottom-right",  # transversed
    8: "bottom-left",  # rotated 90 counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(CORNER_AFTER_ORIENTATION))
def test_exif_orientation_is_applied(orientation: int) -> None:
    decoded = decode(jpeg_bytes(60, 40, RED, exif_orientation=orientation))

    expected = (40, 60) if orientation >= 5 else (60, 40)
    assert (decoded.width, decoded.height) == expected
    assert decoded.image.size == expected
    width, height = expected
    corners = {
        "top-left": (2, 2),
        "top-right": (width - 3, 2),
        "bottom-left": (2, height - 3),
        "bottom-right": (width - 3, height - 3),
    }
    for name, xy in corners.items():
        pixel = decoded.image.getpixel(xy)
        if name == CORNER_AFTER_ORIENTATION[orientation]:
            assert close(pixel, (0, 0, 0), 40), name
        else:
            assert close(pixel, RED, 40), name


def test_orientation_swaps_the_reported_original_size_of_a_drafted_jpeg() -> None:
    decoded = decode(jpeg_bytes(4000, 3000, exif_orientation=6))

    assert (decoded.width, decoded.height) == (3000, 4000)
    assert decoded.image.size == (375, 500)


# Pillow reports corrupt EXIF with a UserWarning while opening the file; under
# warnings-as-errors that is a failure ("unsupported"), in production the
# warning is printed and the image is used. This checks the production path.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_broken_exif_is_ignored() -> None:
    image = Image.new("RGB", (30, 20), RED)
    data = encode(image, "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")

    decoded = decode(data)

    assert decoded.image.size == (30, 20)


# --- size: draft mode and the final shrink ----------------------------------------------


def test_large_jpeg_is_decoded_in_draft_mode() -> None:
    data = jpeg_bytes(4000, 3000)

    decoded = decode(data)

    assert (decoded.width, decoded.height) == (4000, 3000)
    # 1/8 scale straight out of libjpeg: a full decode followed by the
    # shrink would give 640x480 instead.
    assert decoded.image.size == (500, 375)


def test_a_smaller_draft_size_skips_the_decode_at_half_scale_and_the_resize() -> None:
    data = jpeg_bytes(1600, 1200)

    # By target_size (320): 1/2 scale (800x600), then shrunk to 640x480.
    assert decode(data).image.size == (640, 480)
    # Down to 260 (the model's input): 1/4 scale straight out of libjpeg, no resize.
    small = decode(data, draft_size=260)
    assert small.image.size == (400, 300)
    assert (small.width, small.height) == (1600, 1200)
    assert close(small.image.getpixel((200, 150)), (200, 30, 30))
    # A 1024x768 photo keeps its 1/2-scale decode: 1/4 would be under 260.
    assert decode(jpeg_bytes(1024, 768), draft_size=260).image.size == (512, 384)


def test_draft_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="draft_size"):
        decode(jpeg_bytes(), draft_size=0)


def test_draft_keeps_the_shorter_side_at_least_target_size() -> None:
    decoded = decode(jpeg_bytes(2000, 1000), target_size=300)

    assert min(decoded.image.size) >= 300
    assert max(decoded.image.size) <= 600


def test_longer_side_is_capped_at_twice_target_size() -> None:
    decoded = decode(png_bytes(2000, 500, mode="RGB"), target_size=320)

    assert decoded.image.size == (640, 160)
    assert (decoded.width, decoded.height) == (2000, 500)


def test_small_target_size_shrinks_a_drafted_jpeg_further() -> None:
    decoded = decode(jpeg_bytes(4000, 3000), target_size=100)

    assert decoded.image.size == (200, 150)


# --- colour modes -----------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb() -> None:
    decoded = decode(cmyk_jpeg_bytes(cmyk=(0, 230, 230, 0)))

    assert decoded.image.mode == "RGB"
    assert close(decoded.image.getpixel((10, 10)), (230, 30, 30), 30)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "RGB", "L"])
def test_transparency_is_composited_on_white(mode: str) -> None:
    decoded = decode(png_bytes(64, 48, mode=mode, transparent=True, color=RED))

    image = decoded.image
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((63, 47)) == WHITE
    center = image.getpixel((32, 24))
    expected = RED if mode in ("RGBA", "P", "RGB") else (81, 81, 81)  # luma of RED
    assert close(center, expected, 2)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "RGB", "L"])
def test_opaque_modes_keep_their_colour(mode: str) -> None:
    decoded = decode(png_bytes(64, 48, mode=mode, color=RED))

    expected = RED if mode in ("RGBA", "P", "RGB") else (81, 81, 81)
    assert close(decoded.image.getpixel((0, 0)), expected, 2)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    decoded = decode(png_bytes(32, 32, mode="I;16", color=RED))

    assert close(decoded.image.getpixel((5, 5)), (81, 81, 81), 2)


def test_one_bit_png_becomes_rgb() -> None:
    decoded = decode(png_bytes(32, 32, mode="1", color=WHITE))

    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((5, 5)) == WHITE


def test_semi_transparent_pixels_are_blended_with_white() -> None:
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 128))

    decoded = decode(encode(image, "PNG"))

    assert close(decoded.image.getpixel((0, 0)), (127, 127, 127), 2)


# --- other formats ----------------------------------------------------------------------


def test_animated_gif_gives_its_first_frame() -> None:
    decoded = decode(gif_bytes(frames=3))

    assert decoded.format == "GIF"
    assert close(decoded.image.getpixel((5, 5)), RED, 8)


def test_gif_transparency_is_white() -> None:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    image.paste(1, (4, 4, 12, 12))

    decoded = decode(encode(image, "GIF", transparency=0))

    assert decoded.image.getpixel((0, 0)) == WHITE
    assert decoded.image.getpixel((8, 8)) == RED


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"lossless": True}, {"alpha": True}, {"frames": 3}],
    ids=["lossy", "lossless", "alpha", "animated"],
)
def test_webp(kwargs: dict[str, bool | int]) -> None:
    decoded = decode(webp_bytes(64, 48, RED, **kwargs))  # type: ignore[arg-type]

    assert decoded.format == "WEBP"
    assert (decoded.width, decoded.height) == (64, 48)
    assert close(decoded.image.getpixel((48, 24)), RED, 10)
    if kwargs.get("alpha"):
        assert decoded.image.getpixel((5, 24)) == WHITE


def test_bmp() -> None:
    decoded = decode(encode(Image.new("RGB", (20, 10), RED), "BMP"))

    assert decoded.format == "BMP"
    assert decoded.image.getpixel((3, 3)) == RED


def test_multi_picture_jpeg_gives_its_first_picture_as_jpeg() -> None:
    first, second = Image.new("RGB", (40, 30), RED), Image.new("RGB", (40, 30), (30, 30, 200))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"

    decoded = decode(data)

    assert decoded.format == "JPEG"
    assert close(decoded.image.getpixel((20, 15)), RED)


@needs_avif
def test_avif() -> None:
    decoded = decode(encode(Image.new("RGB", (50, 40), RED), "AVIF"))

    assert decoded.format == "AVIF"
    assert (decoded.width, decoded.height) == (50, 40)
    assert close(decoded.image.getpixel((25, 20)), RED, 10)


# --- not_an_image / unsupported ---------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \n",
        b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>',
        b'{"error": "not found"}',
        b"%PDF-1.7\n",
        bytes(range(256)) * 4,
        b"\xff\xd8",  # a JPEG signature and nothing else
        b"BMW 320d, 2019, 45 000 km, diesel, automatic gearbox",  # "BM" like a bitmap
    ],
    ids=["empty", "blank", "html", "svg", "json", "pdf", "garbage", "jpeg-signature-only", "bm"],
)
def test_non_images(data: bytes) -> None:
    assert reason_of(data) == "not_an_image"


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PSD"])
def test_other_image_formats_are_unsupported(fmt: str) -> None:
    if fmt == "PSD":
        data = b"8BPS\x00\x01" + b"\x00" * 40  # Pillow cannot write PSD
    else:
        data = encode(Image.new("RGB", (32, 32), RED), fmt)

    assert reason_of(data) == "unsupported"


def test_heic_is_unsupported() -> None:
    ftyp = b"ftypheic\x00\x00\x00\x00mif1heic"
    data = struct.pack(">I", 8 + len(ftyp)) + ftyp + b"\x00\x00\x00\x08mdat"

    assert reason_of(data) == "unsupported"


def test_jpeg_without_frame_header_is_unsupported() -> None:
    assert reason_of(b"\xff\xd8\xff\xd9") == "unsupported"


def test_corrupted_files_only_ever_raise_decode_error() -> None:
    # Random byte flips in valid files: whatever the decoders make of them,
    # decode_image answers with an image or a DecodeError, never another
    # exception or a warning (warnings are errors in this suite).
    rng = random.Random(1)
    sources = [jpeg_bytes(), png_bytes(), gif_bytes(), webp_bytes(), noise_jpeg_bytes(64, 64)]
    for _ in range(300):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            decode(bytes(data))
        except DecodeError as exc:
            assert exc.reason in {"not_an_image", "truncated", "unsupported", "too_many_pixels"}


# --- truncated --------------------------------------------------------------------------


def test_truncated_jpeg() -> None:
    assert reason_of(truncated_jpeg_bytes()) == "truncated"


def test_jpeg_missing_only_its_end_marker_is_truncated() -> None:
    assert reason_of(noise_jpeg_bytes()[:-2]) == "truncated"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "AVIF"])
@pytest.mark.parametrize("keep", [0.02, 0.3, 0.9])
def test_truncated_files(fmt: str, keep: float) -> None:
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("Pillow built without AVIF")
    image = Image.frombytes("RGB", (96, 64), random.Random(0).randbytes(96 * 64 * 3))
    data = encode(image, fmt)

    assert reason_of(data[: max(16, int(len(data) * keep))]) == "truncated"


# --- JPEG scan cut short (libjpeg fills the rest with grey) ------------------------------


def _cut_keeping_end_marker(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)] + b"\xff\xd9"


def _photo_jpeg(shared_data: Path, index: int = 0, **params: object) -> bytes:
    with Image.open(real_photos(shared_data, index + 1)[index]) as photo:
        return encode(photo.convert("RGB"), "JPEG", quality=90, **params)


@pytest.mark.parametrize(
    "params",
    [{}, {"progressive": True}, {"restart_marker_rows": 1}, {"subsampling": 0}],
    ids=["baseline", "progressive", "restart-markers", "4:4:4"],
)
@pytest.mark.parametrize("keep", [0.1, 0.5])
def test_jpeg_cut_short_but_ending_with_end_marker_is_truncated(
    shared_data: Path, params: dict[str, object], keep: float
) -> None:
    data = _photo_jpeg(shared_data, **params)

    assert reason_of(_cut_keeping_end_marker(data, keep)) == "truncated"


def test_noise_jpeg_cut_short_but_ending_with_end_marker_is_truncated() -> None:
    data = noise_jpeg_bytes()

    assert reason_of(data[: len(data) // 10] + b"\xff\xd9") == "truncated"


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_declaring_more_rows_than_its_scan_holds_is_truncated(progressive: bool) -> None:
    data = encode(Image.new("RGB", (64, 48), RED), "JPEG", progressive=progressive)
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")

    assert reason_of(_patch(data, sof + 5, ">HH", 2000, 2000)) == "truncated"
    if not progressive:  # a progressive one that size is refused for its memory first
        assert reason_of(_patch(data, sof + 5, ">HH", 8000, 8000)) == "truncated"


def test_mid_grey_corner_is_not_mistaken_for_a_cut_scan() -> None:
    # libjpeg fills missing blocks with exactly this grey; a real one must still decode.
    image = Image.new("RGB", (96, 64), (128, 128, 128))
    image.paste(RED, (0, 0, 48, 32))
    decoded = decode(encode(image, "JPEG", quality=95))

    assert decoded.image.getpixel((95, 63)) == (128, 128, 128)
    assert close(decoded.image.getpixel((10, 10)), RED)


@pytest.mark.parametrize(
    "params", [{}, {"progressive": True}, {"progressive": True, "subsampling": 0}]
)
def test_complete_photos_are_not_mistaken_for_cut_ones(
    shared_data: Path, params: dict[str, object]
) -> None:
    for index in range(8):
        decoded = decode(_photo_jpeg(shared_data, index, **params))
        assert decoded.format == "JPEG"


# --- too_many_pixels --------------------------------------------------------------------


def test_bomb_png_is_rejected_from_its_header() -> None:
    data = bomb_png_bytes(20000, 20000)
    assert len(data) < 100_000

    assert reason_of(data) == "too_many_pixels"


@pytest.mark.parametrize(
    ("size", "max_pixels"),
    [
        ((20000, 20000), MAX_PIXELS),  # over Pillow's error limit
        ((10000, 10000), MAX_PIXELS),  # in Pillow's warning band
        ((10000, 10000), 10**12),  # over Pillow's own limit: capped there
    ],
)
def test_no_pillow_bomb_warning_escapes(size: tuple[int, int], max_pixels: int) -> None:
    data = bomb_png_bytes(*size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DecodeError) as raised:
            decode_image(data, max_pixels=max_pixels)

    assert raised.value.reason == "too_many_pixels"
    assert caught == []


def test_limit_is_inclusive() -> None:
    data = jpeg_bytes(64, 48)

    assert decode(data, max_pixels=64 * 48).width == 64
    assert reason_of(data, max_pixels=64 * 48 - 1) == "too_many_pixels"


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, *values)
    return bytes(patched)


def _jpeg_bomb() -> bytes:
    data = jpeg_bytes(16, 16)
    sof = data.index(b"\xff\xc0")
    return _patch(data, sof + 5, ">HH", 60000, 60000)


def _gif_bomb() -> bytes:
    # A small logical screen, but the first frame claims 30000x30000: Pillow
    # grows the canvas to the frame, so the probe must too.
    data = gif_bytes(frames=1, width=16, height=16)
    descriptor = data.index(b"\x2c\x00\x00\x00\x00")
    return _patch(data, descriptor + 5, "<HH", 30000, 30000)


def _webp_bomb() -> bytes:
    data = webp_bytes(16, 16, alpha=True)
    assert data[12:16] == b"VP8X"
    canvas = (16383).to_bytes(3, "little")
    return data[:24] + canvas + canvas + data[30:]


def _bmp_bomb() -> bytes:
    data = encode(Image.new("RGB", (16, 16)), "BMP")
    return _patch(data, 18, "<ii", 30000, -30000)


def _avif_bomb() -> bytes:
    data = encode(Image.new("RGB", (16, 16)), "AVIF")
    ispe = data.index(b"ispe")
    return _patch(data, ispe + 8, ">II", 30000, 30000)


@pytest.mark.parametrize(
    "make", [_jpeg_bomb, _gif_bomb, _webp_bomb, _bmp_bomb, _avif_bomb], ids=lambda f: f.__name__
)
def test_header_bombs_in_every_format(make: object) -> None:
    if make is _avif_bomb and not features.check("avif"):
        pytest.skip("Pillow built without AVIF")
    data = make()  # type: ignore[operator]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reason_of(data) == "too_many_pixels"
    assert caught == []


# --- decode memory ----------------------------------------------------------------------

MIB = 1024 * 1024


def _png_header_only(width: int, height: int, colour_type: int = 6, depth: int = 8) -> bytes:
    """A PNG that declares a size but holds no pixels: refused before decoding, or truncated."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_png_whose_decode_needs_more_memory_than_the_limit_is_refused() -> None:
    # 7000x7000 RGBA is under the pixel limit but would take ~500 MB to decode.
    with pytest.raises(DecodeError) as raised:
        decode(_png_header_only(7000, 7000))

    assert raised.value.reason == "too_many_pixels"
    assert "CARTAG_MAX_DECODE_MB" in raised.value.message


def test_one_bit_png_just_under_the_pixel_limit_fits_the_default_memory_limit() -> None:
    # ~8 kB on disk. Grey/1-bit PNGs stay one byte per pixel while they are shrunk
    # (~130 MB at the peak; before, ~330 MB: they were converted to RGB at full size).
    data = bomb_png_bytes(7999, 7999)

    assert decode(data).image.size == (640, 640)
    assert reason_of(data, max_decode_bytes=128 * MIB) == "too_many_pixels"


def test_setting_default_matches_the_decode_default() -> None:
    default = Settings.model_fields["max_decode_mb"].default
    assert default * MIB == limits.DEFAULT_MAX_DECODE_BYTES


def test_memory_limit_is_a_parameter() -> None:
    data = png_bytes(64, 48)

    assert decode(data, max_decode_bytes=MIB).width == 64
    assert reason_of(data, max_decode_bytes=1000) == "too_many_pixels"


def test_baseline_jpeg_is_decoded_at_reduced_size_but_progressive_needs_full_size() -> None:
    image = Image.new("RGB", (4000, 3000), RED)
    baseline, progressive = encode(image, "JPEG"), encode(image, "JPEG", progressive=True)

    # Draft mode: 1/8 scale, a few MB; progressive: 2 bytes per coefficient, ~36 MB.
    assert decode(baseline, max_decode_bytes=16 * MIB).width == 4000
    assert reason_of(progressive, max_decode_bytes=16 * MIB) == "too_many_pixels"
    assert decode(progressive, max_decode_bytes=64 * MIB).width == 4000


def test_concurrent_decodes_share_the_memory_limit() -> None:
    # Another decode holds the whole limit (reached through the process-wide budget:
    # a real one would finish before the test could look).
    started, finished = threading.Event(), threading.Event()

    def decode_later() -> None:
        started.set()
        decode(png_bytes(64, 48), max_decode_bytes=MIB)
        finished.set()

    with limits.IN_FLIGHT.hold(MIB, MIB):
        thread = threading.Thread(target=decode_later)
        thread.start()
        assert started.wait(5)
        assert not finished.wait(0.2)
    assert finished.wait(5)
    thread.join()


# --- threads ----------------------------------------------------------------------------


def test_concurrent_decoding_matches_sequential() -> None:
    inputs = [
        jpeg_bytes(300, 200, exif_orientation=6),
        jpeg_bytes(1600, 1200),
        png_bytes(200, 100, mode="P", transparent=True),
        gif_bytes(),
        webp_bytes(alpha=True),
        cmyk_jpeg_bytes(),
        noise_jpeg_bytes(128, 128),
    ] * 6
    expected = [decode(data).image.tobytes() for data in inputs]

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda data: decode(data).image.tobytes(), inputs))

    assert got == expected
