"""Classifying local files (``cartag classify-files``, evaluations) as the API classifies."""

from __future__ import annotations

from pathlib import Path

from cartag.models.files import predict_files
from tests.support.fakes import SizeRecorder
from tests.support.images import jpeg_bytes


def test_files_are_decoded_at_the_models_draft_size_as_downloads_are(tmp_path: Path) -> None:
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    big.write_bytes(jpeg_bytes(1600, 1200))
    small.write_bytes(jpeg_bytes(640, 480))
    classifier = SizeRecorder(draft=150)

    records = list(predict_files(classifier, [big, small], max_pixels=10**8))

    assert [r["path"] for r in records] == [str(big), str(small)]
    assert all(r["image_type"] == "Dealer" for r in records)
    # libjpeg's 1/8 leaves 150 rows of 1200; of 480 it would leave 60, so 1/2 (240 rows).
    assert classifier.sizes == [(200, 150), (320, 240)]
