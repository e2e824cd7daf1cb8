"""decode_image: time per photo, refusals on real photos, and peak memory per format.

Three measurements:

- ``--timing``: milliseconds per 1024x768 JPEG (real photos from
  ../shared/data/vcr-train resized and re-encoded at quality 85, baseline and
  progressive), best of the repeats.
- ``--photos N``: decodes all of type-train and N seeded picks from each of
  vcr-train and vcor-train; prints every refusal with its reason, and how many
  photos needed the second decode of the truncation check. Real photos should
  all decode.
- ``--memory``: peak RSS growth of decoding 4000x4000 files of each format and
  mode (each in a fresh process), against the estimate decode_image checks
  against ``max_decode_bytes``; the estimate should be the larger.

Usage::

    .venv/bin/python -m benchmarks.decode [--timing] [--photos 300] [--memory]
"""

from __future__ import annotations

import argparse
import io
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from PIL import Image

from cartag.errors import DecodeError
from cartag.imaging import decode, jpeg, limits, probe

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
_SIDE = 4000


def timing(repeats: int = 15) -> None:
    photos = sorted((SHARED / "vcr-train" / "Red").glob("*.jpg"))[:20]
    for progressive in (False, True):
        files = []
        for path in photos:
            buffer = io.BytesIO()
            with Image.open(path) as image:
                resized = image.convert("RGB").resize((1024, 768), Image.Resampling.BICUBIC)
            resized.save(buffer, "JPEG", quality=85, progressive=progressive)
            files.append(buffer.getvalue())
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for data in files:
                decode.decode_image(data, max_pixels=64_000_000)
            best = min(best, (time.perf_counter() - started) / len(files))
        kind = "progressive" if progressive else "baseline"
        print(f"1024x768 {kind} JPEG: {best * 1000:.2f} ms per image (best of {repeats})")


def photos(per_folder: int) -> None:
    files = sorted((SHARED / "type-train").rglob("*.jpg"))
    for name in ("vcr-train", "vcor-train"):
        pool = sorted((SHARED / name).rglob("*.jpg"))
        files += random.Random(0).sample(pool, min(per_folder, len(pool)))
    refused = 0
    second = 0
    for path in files:
        data = path.read_bytes()
        layout = jpeg.jpeg_layout(data)
        try:
            decoded = decode.decode_image(data, max_pixels=64_000_000)
        except DecodeError as exc:
            refused += 1
            print(f"refused {path}: {exc.reason}: {exc}")
            continue
        del decoded
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (320, 320))
            image.load()
            corner = image.getpixel((image.width - 1, image.height - 1))
        if corner in jpeg.JPEG_EMPTY_BLOCK or not jpeg.scans_complete(layout):
            second += 1
    print(f"{len(files)} photos: {refused} refused, {second} needed the second decode")


def _png(colour: int, depth: int, trns: bool = False) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    width = (_SIDE * channels * depth + 7) // 8
    row = b"\x00" + (bytes(range(256)) * (width // 256 + 1))[:width]
    compressor = zlib.compressobj(6)
    idat = b"".join(compressor.compress(row) for _ in range(_SIDE)) + compressor.flush()
    extra = chunk(b"PLTE", bytes(range(256)) * 3) if colour == 3 else b""
    if trns:
        extra += chunk(b"tRNS", b"\x00" if colour == 3 else b"\x00\x00" * channels)
    ihdr = struct.pack(">IIBBBBB", _SIDE, _SIDE, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + extra
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def _samples() -> dict[str, bytes]:
    samples = {
        f"png colour={c} depth={d}{' tRNS' if t else ''}": _png(c, d, t)
        for c, d, t in [
            (0, 1, False), (0, 8, False), (0, 16, False), (0, 8, True), (2, 8, False),
            (2, 8, True), (3, 8, False), (3, 8, True), (4, 8, False), (6, 8, False),
        ]
    }  # fmt: skip
    noise = Image.frombytes("RGB", (_SIDE, _SIDE), random.Random(0).randbytes(_SIDE * _SIDE * 3))
    for label, fmt, mode, params in [
        ("webp", "WEBP", "RGB", {}),
        ("gif", "GIF", "P", {}),
        ("bmp", "BMP", "RGB", {}),
        ("avif", "AVIF", "RGB", {"quality": 50}),
        ("jpeg baseline", "JPEG", "RGB", {}),
        ("jpeg progressive 4:2:0", "JPEG", "RGB", {"progressive": True}),
        ("jpeg progressive 4:4:4", "JPEG", "RGB", {"progressive": True, "subsampling": 0}),
    ]:
        buffer = io.BytesIO()
        try:
            noise.convert(mode).save(buffer, fmt, **params)
        except (KeyError, OSError):  # Pillow built without this encoder
            continue
        samples[label] = buffer.getvalue()
    return samples


def _measure_one(path: str) -> None:
    """Child process: decode one file, print peak RSS growth and the estimate (bytes)."""
    data = Path(path).read_bytes()
    estimate = limits.decode_bytes(probe.probe(data), 320)
    before = _peak_rss()
    decode.decode_image(data, max_pixels=64_000_000, max_decode_bytes=1 << 40)
    print(_peak_rss() - before, estimate)


def _peak_rss() -> int:
    # VmHWM, not getrusage's ru_maxrss: that one survives exec, so a child would
    # start at the parent's peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def memory() -> None:
    pixels = _SIDE * _SIDE
    print(f"{'file (4000x4000)':34} {'measured B/px':>14} {'estimate B/px':>14}")
    with tempfile.TemporaryDirectory() as folder:
        for label, data in _samples().items():
            path = Path(folder) / "sample"
            path.write_bytes(data)
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.decode", "--measure-one", str(path)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            grown, estimate = int(out[0]), int(out[1])
            print(f"{label:34} {grown / pixels:14.2f} {estimate / pixels:14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--photos", type=int, default=0, metavar="N")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--measure-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_one:
        _measure_one(args.measure_one)
        return
    if args.timing:
        timing()
    if args.photos:
        photos(args.photos)
    if args.memory:
        memory()


if __name__ == "__main__":
    main()
