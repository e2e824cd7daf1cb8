"""The evaluation report's drawings: the row-normalised confusion heatmap."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cartag.web.report import confusion_png


def test_confusion_png_is_a_row_normalised_heatmap() -> None:
    dark = (8, 48, 107)

    def dark_pixels(matrix: list[list[int]]) -> int:
        image = Image.open(io.BytesIO(confusion_png(["Red", "Blue"], matrix))).convert("RGB")
        return int((np.asarray(image) == dark).all(axis=-1).sum())

    balanced = dark_pixels([[1000, 0], [0, 1000]])
    # Row-normalised: a one-image row that is all right is as dark as a 1000-image one.
    assert balanced > 0
    assert abs(dark_pixels([[1, 0], [0, 1000]]) - balanced) < 0.1 * balanced
    assert dark_pixels([[1, 1], [1, 1]]) == 0
