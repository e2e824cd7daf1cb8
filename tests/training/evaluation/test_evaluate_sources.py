"""cartag evaluate with a source column: per-source figures in the terminal, JSON and HTML."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from cartag.cli import app
from cartag.models import classifier as classifier_module
from cartag.models.classifier import Classifier, Prediction, make_prediction
from cartag.training.evaluation.by_source import (
    NO_SOURCE,
    by_source,
    reports_by_source,
    source_tables,
)
from cartag.training.evaluation.evaluate import (
    GroundTruth,
    LabelledImage,
    evaluate,
    labels_from_csv,
)
from cartag.vocab import COLORS, IMAGE_TYPES
from cartag.web.report import render_report
from tests.support.images import jpeg_bytes

RED, BLUE = (200, 30, 30), (30, 30, 200)


class RedOrBlueClassifier(Classifier):
    """Color Red when the image is redder than blue, else Blue; type Dealer when wide."""

    version = "red-or-blue"

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        out = []
        for image in images:
            r, _, b = (float(v) for v in np.asarray(image.convert("RGB")).mean(axis=(0, 1)))
            colors = np.full(len(COLORS), 0.01)
            colors[COLORS.index("Red" if r > b else "Blue")] = 0.9
            types = [0.8, 0.15, 0.05] if image.width > image.height else [0.15, 0.8, 0.05]
            out.append(make_prediction(np.asarray(types), colors / colors.sum()))
        return out


def make_labelled_set(root: Path) -> Path:
    """Six photos from two sources; ``web`` gets two colors wrong, ``site`` none.

    Returns:
        The labels CSV (``path,image_type,color,source``).
    """
    rows = [
        # path, size, fill, type, color, source
        ("a.jpg", (64, 48), RED, "Dealer", "Red", "site"),
        ("b.jpg", (64, 48), BLUE, "", "Blue", "site"),
        ("c.jpg", (48, 64), BLUE, "Stock", "", "site"),
        ("d.jpg", (64, 48), RED, "Dealer", "Blue", "web"),  # color wrong
        ("e.jpg", (64, 48), BLUE, "Stock", "Red", "web"),  # both wrong
        ("f.jpg", (64, 48), RED, "", "Red", "web"),
    ]
    lines = ["path,image_type,color,source"]
    for name, (w, h), fill, image_type, color, source in rows:
        (root / name).write_bytes(jpeg_bytes(w, h, fill))
        lines.append(f"{name},{image_type},{color},{source}")
    csv_path = root / "labels.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


def test_reports_by_source_split_the_rows_and_name_empty_sources() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])

    reports = reports_by_source(y, proba, ["b", "a", "b", ""], ["x", "y"])

    assert list(reports) == [NO_SOURCE, "a", "b"]
    assert (reports["a"]["n"], reports["a"]["accuracy"]) == (1, 1.0)
    assert reports["b"]["confusion"]["rows_true_cols_pred"] == [[1, 0], [1, 0]]
    assert reports["b"]["per_class"]["y"]["recall"] == 0.0
    assert by_source({"color": reports, "image_type": {"a": reports["a"]}})["a"].keys() == {
        "color",
        "image_type",
    }


def test_twelve_colors_by_source_fit_an_80_column_terminal() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(COLORS)), 200)
    proba = rng.random((len(y), len(COLORS))) + 3 * np.eye(len(COLORS))[y]
    reports = reports_by_source(y, proba, ["vcr held-out", "vcor"] * (len(y) // 2), COLORS)
    console = Console(width=80, record=True, file=io.StringIO())

    console.print(source_tables(by_source({"color": reports})))

    text = console.export_text()
    assert "…" not in text  # nothing truncated
    assert re.search(r"Yellow(\s+(\.|\d+)){12}\s*$", text, re.MULTILINE)  # a whole matrix row
    assert "vcr held-out" in text and "Burgundy" in text


def test_labels_from_csv_keeps_the_source_column(tmp_path: Path) -> None:
    truth = labels_from_csv(make_labelled_set(tmp_path), tmp_path)
    assert [i.source for i in truth.images] == ["site"] * 3 + ["web"] * 3

    (tmp_path / "plain.csv").write_text("path,color\na.jpg,Red\n", encoding="utf-8")
    assert labels_from_csv(tmp_path / "plain.csv", tmp_path).images[0].source is None


def test_evaluate_reports_every_task_per_source(tmp_path: Path) -> None:
    truth = labels_from_csv(make_labelled_set(tmp_path), tmp_path)

    result = evaluate(RedOrBlueClassifier(), truth, max_pixels=10_000_000)

    sources = result.by_source
    assert sources["site"]["color"]["accuracy"] == 1.0 and sources["site"]["color"]["n"] == 2
    web = sources["web"]["color"]
    assert (web["n"], web["accuracy"], web["macro_recall"]) == (3, 0.3333, 0.25)
    assert web["confusion"] == {"labels": ["Blue", "Red"], "rows_true_cols_pred": [[0, 1], [1, 1]]}
    assert sources["web"]["image_type"]["per_class"]["Stock"]["recall"] == 0.0
    assert result.to_json()["by_source"]["site"]["image_type"]["n"] == 2


def test_without_sources_there_is_no_per_source_output(tmp_path: Path) -> None:
    truth = labels_from_csv(make_labelled_set(tmp_path), tmp_path)
    plain = [LabelledImage(i.file, i.origin, i.image_type, i.color) for i in truth.images]

    result = evaluate(RedOrBlueClassifier(), GroundTruth(plain), max_pixels=10_000_000)

    assert result.by_source == {} and "by_source" not in result.to_json()
    assert 'id="by-source"' not in render_report(result)


def test_report_has_a_section_per_source(tmp_path: Path) -> None:
    truth = labels_from_csv(make_labelled_set(tmp_path), tmp_path)

    html = render_report(evaluate(RedOrBlueClassifier(), truth, max_pixels=10_000_000))

    section = html.split('id="by-source"')[1]
    assert section.rstrip().endswith("</html>")
    assert 'alt="Color confusion matrix, web"' in section
    assert 'alt="Image type confusion matrix, site"' in section
    assert section.count("data:image/png;base64,") == 4  # 2 tasks x 2 sources
    assert "<td>web</td><td>3</td>" in section.replace("\n", "").replace(" ", "")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CARTAG_DATA_DIR": str(tmp_path / "data")}


def test_evaluate_command_prints_and_writes_per_source_figures(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(classifier_module, "load_classifier", lambda _: RedOrBlueClassifier())
    labels = make_labelled_set(tmp_path)
    report, metrics = tmp_path / "report.html", tmp_path / "m.json"
    args = ["evaluate", str(tmp_path), "--labels", str(labels)]
    args += ["--report", str(report), "--json", str(metrics)]

    result = CliRunner().invoke(app, args, env=env)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "color by source" in out and "image_type recall by source" in out
    web_row = re.search(r"web\s*│\s*3\s*│\s*0\.333\s*│\s*0\.250", out)
    assert web_row is not None, out
    assert "color · web confusion" in out and "image_type · site confusion" in out
    data = json.loads(metrics.read_text(encoding="utf-8"))
    assert set(data["by_source"]) == {"site", "web"}
    assert data["by_source"]["web"]["color"]["accuracy"] == pytest.approx(0.3333)
    assert IMAGE_TYPES[0] in data["by_source"]["site"]["image_type"]["per_class"]
    assert 'id="by-source"' in report.read_text(encoding="utf-8")
