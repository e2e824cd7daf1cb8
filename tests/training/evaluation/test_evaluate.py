"""cartag evaluate: ground truth loading, metrics, the HTML report and the command."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from cartag.cli import app
from cartag.errors import InputError
from cartag.models.classifier import Classifier
from cartag.training.evaluation.evaluate import (
    GroundTruth,
    LabelledImage,
    evaluate,
    labels_from_csv,
    labels_from_folders,
    score,
)
from cartag.vocab import COLORS, IMAGE_TYPES
from cartag.web.report import render_report, write_report
from tests.support.images import jpeg_bytes, real_photos


def _scores(vocab: tuple[str, ...], **given: float) -> dict[str, float]:
    return {label: given.get(label, 0.0) for label in vocab}


def _record(path: str, image_type: str | None = "Dealer", **kw: Any) -> dict[str, Any]:
    if image_type is None:
        return {
            "path": path,
            "image_type": None,
            "color": None,
            "type_scores": {},
            "color_scores": {},
            "error": "not_an_image",
        }
    return {
        "path": path,
        "image_type": image_type,
        "color": None,
        "type_scores": kw.get("types", _scores(IMAGE_TYPES, **{image_type: 1.0})),
        "color_scores": kw.get("colors", _scores(COLORS, Black=1.0)),
        "confidence": 1.0,
    }


def _hand_made() -> tuple[list[LabelledImage], list[dict[str, Any]]]:
    """Six images: four color-labelled, one type-only, one unreadable."""
    images = [
        LabelledImage(Path("a.jpg"), "t", image_type="Dealer", color="Red"),
        LabelledImage(Path("b.jpg"), "t", color="Red"),
        LabelledImage(Path("c.jpg"), "t", color="Blue"),
        LabelledImage(Path("d.jpg"), "t", color="Grey"),
        LabelledImage(Path("e.jpg"), "t", color="Red"),
        LabelledImage(Path("f.jpg"), "t", image_type="Dealer"),
    ]
    records = [
        _record(
            "a.jpg",
            types=_scores(IMAGE_TYPES, Dealer=0.9, Stock=0.1),
            colors=_scores(COLORS, Red=0.6, Blue=0.3, Black=0.1),
        ),
        _record("b.jpg", colors=_scores(COLORS, Blue=0.7, Red=0.2, Black=0.1)),
        _record("c.jpg", colors=_scores(COLORS, Blue=0.8, Pink=0.2)),
        # Typed Placeholder: the service would answer no color, the color head says White.
        _record("d.jpg", "Placeholder", colors=_scores(COLORS, White=0.5, Black=0.4, Grey=0.1)),
        _record("e.jpg", None),
        _record(
            "f.jpg", "Stock", types=_scores(IMAGE_TYPES, Stock=0.9, Dealer=0.08, Placeholder=0.02)
        ),
    ]
    return images, records


def test_score_gives_exact_metrics_on_hand_made_predictions() -> None:
    images, records = _hand_made()
    result = score(images, records, model_version="m1")

    assert result.n_labelled == 6 and result.unreadable == [("e.jpg", "not_an_image")]
    color = result.tasks["color"]
    assert color.report["n"] == 4
    assert color.report["accuracy"] == 0.5
    assert color.report["top2_accuracy"] == 0.75
    assert color.report["macro_recall"] == 0.5  # mean of Red 0.5, Blue 1, Grey 0
    assert color.report["per_class"] == {
        "Blue": {"precision": 0.5, "recall": 1.0, "support": 1},
        "Grey": {"precision": None, "recall": 0.0, "support": 1},
        "Red": {"precision": 1.0, "recall": 0.5, "support": 2},
        "White": {"precision": 0.0, "recall": None, "support": 0},
    }
    assert color.report["confusion"] == {
        "labels": ["Blue", "Grey", "Red", "White"],
        "rows_true_cols_pred": [[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]],
    }
    assert [(m.path, m.true, m.predicted, m.confidence, m.true_score) for m in color.mistakes] == [
        ("b.jpg", "Red", "Blue", 0.7, 0.2),
        ("d.jpg", "Grey", "White", 0.5, 0.1),
    ]
    assert color.colorless == 1

    image_type = result.tasks["image_type"]
    assert (image_type.report["n"], image_type.report["accuracy"]) == (2, 0.5)
    assert image_type.report["top2_accuracy"] == 1.0
    assert image_type.report["macro_recall"] == 0.5
    assert image_type.report["per_class"]["Stock"] == {
        "precision": 0.0,
        "recall": None,
        "support": 0,
    }
    assert [m.path for m in image_type.mistakes] == ["f.jpg"]

    as_json = json.loads(json.dumps(result.to_json()))
    assert as_json["n_evaluated"] == 5 and as_json["tasks"]["color"]["colorless"] == 1
    assert as_json["tasks"]["color"]["mistakes"][0]["predicted"] == "Blue"


def test_a_task_without_labels_is_left_out() -> None:
    images = [LabelledImage(Path("a.jpg"), "t", color="Red")]
    result = score(images, [_record("a.jpg", colors=_scores(COLORS, Red=1.0))])
    assert set(result.tasks) == {"color"}
    assert result.tasks["color"].report["accuracy"] == 1.0


def _touch_images(root: Path, *relative: str) -> None:
    for rel in relative:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg_bytes())


def test_labels_from_csv_resolves_paths_and_reads_both_tasks(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _touch_images(photos, "a.jpg", "b.jpg", "sub/c.jpg")
    _touch_images(tmp_path / "meta", "d.jpg")
    csv_path = tmp_path / "meta" / "labels.csv"
    csv_path.write_text(
        "path,image_type,color,notes\n"
        "a.jpg,Dealer,silver,relative to PATH\n"
        "d.jpg,stock,,relative to the CSV's folder\n"
        f"{photos / 'b.jpg'},,RED,absolute\n"
        "gone.jpg,Dealer,Red,missing file\n"
        "sub/c.jpg,,N/A,no label at all\n"
        "a.jpg,Dealer,Grey,same labels twice\n",
        encoding="utf-8",
    )
    truth = labels_from_csv(csv_path, photos)
    got = [(i.file.name, i.origin, i.image_type, i.color) for i in truth.images]
    assert got == [
        ("a.jpg", "labels.csv:2", "Dealer", "Grey"),
        ("d.jpg", "labels.csv:3", "Stock", None),
        ("b.jpg", "labels.csv:4", None, "Red"),
    ]
    assert truth.missing == ["labels.csv:5: gone.jpg"] and truth.unlabelled == 1


def test_labels_from_csv_reads_the_vcr_train_layout(tmp_path: Path) -> None:
    data = tmp_path / "vcr-train"
    _touch_images(data, "Red/x.jpg", "Grey/y.jpg")
    (data / "labels.csv").write_text(
        "path,color,weak_type,white_border_fraction\n"
        "vcr-train/Red/x.jpg,Red,Dealer,0.0\n"
        "vcr-train/Grey/y.jpg,Grey,,0.1\n",
        encoding="utf-8",
    )
    truth = labels_from_csv(data / "labels.csv", data)
    assert [(i.file, i.color, i.image_type) for i in truth.images] == [
        (data / "Red/x.jpg", "Red", None),  # weak_type is a rule's guess, not ground truth
        (data / "Grey/y.jpg", "Grey", None),
    ]


def test_labels_from_csv_accepts_a_type_column(tmp_path: Path) -> None:
    _touch_images(tmp_path, "a.jpg")
    (tmp_path / "l.csv").write_text("\ufeffPath,Type\na.jpg,placeholder\n", encoding="utf-8")
    truth = labels_from_csv(tmp_path / "l.csv", tmp_path)
    assert [(i.image_type, i.color) for i in truth.images] == [("Placeholder", None)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,color\na.jpg,Red\n\na.jpg,Chartreuse\n", "l.csv:4: unknown color 'Chartreuse'"),
        ("path,type\na.jpg,Car\n", "l.csv:2: unknown image type 'Car'"),
        ("file,color\na.jpg,Red\n", "no 'path' column"),
        ("path,weak_type\na.jpg,Dealer\n", "no label column"),
        ("", "no 'path' column"),
        (",color\n,Red\n", "no 'path' column"),
        ("path,color\n,Red\n", "l.csv:2: empty path"),
        (
            "path,color\na.jpg,Red\na.jpg,Blue\n",
            "l.csv:3: a.jpg is labelled differently on l.csv:2",
        ),
    ],
)
def test_bad_csv_raises_input_error_naming_the_row(
    tmp_path: Path, content: str, message: str
) -> None:
    _touch_images(tmp_path, "a.jpg")
    (tmp_path / "l.csv").write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(message)):
        labels_from_csv(tmp_path / "l.csv", tmp_path)


def test_labels_from_folders_tells_types_from_colors(tmp_path: Path) -> None:
    _touch_images(tmp_path, "Dealer/a.jpg", "red/b.jpg", "nested/Silver/c.png", "STOCK/d.jpg")
    truth = labels_from_folders(tmp_path)
    got = {i.file.name: (i.image_type, i.color) for i in truth.images}
    assert got == {
        "a.jpg": ("Dealer", None),
        "b.jpg": (None, "Red"),
        "c.png": (None, "Grey"),
        "d.jpg": ("Stock", None),
    }


@pytest.mark.parametrize("folder", ["cars", "unknown"])
def test_a_folder_that_is_not_a_label_is_an_input_error(tmp_path: Path, folder: str) -> None:
    _touch_images(tmp_path, "Red/a.jpg", f"{folder}/b.jpg")
    with pytest.raises(InputError, match=rf"b\.jpg: folder name '{folder}' is neither"):
        labels_from_folders(tmp_path)


def test_limited_spreads_the_sample_over_the_list() -> None:
    images = [LabelledImage(Path(f"{i}.jpg"), "t", color="Red") for i in range(10)]
    picked = GroundTruth(images, ["x: y"]).limited(3)
    assert [i.file.name for i in picked.images] == ["0.jpg", "3.jpg", "6.jpg"]
    assert picked.missing == ["x: y"]
    assert GroundTruth(images).limited(None).images == images


def test_nothing_to_evaluate_is_an_input_error() -> None:
    with pytest.raises(InputError, match="1 rows point at missing files; e.g. l.csv:2: a.jpg"):
        GroundTruth([], ["l.csv:2: a.jpg"]).require_images()


def _png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_report_embeds_the_confusion_matrix_and_mistake_thumbnails(tmp_path: Path) -> None:
    _touch_images(tmp_path, "a.jpg", "b.jpg", "c.jpg", "d.jpg", "f.jpg")
    images, records = _hand_made()
    images = [LabelledImage(tmp_path / i.file, i.origin, i.image_type, i.color) for i in images]
    for record in records:
        record["path"] = str(tmp_path / record["path"])
    (tmp_path / "d.jpg").unlink()  # a thumbnail that can't be made must not break the report
    evaluation = score(images, records, model_version="m1")
    evaluation.missing = ["l.csv:9: gone.jpg"]

    out = write_report(evaluation, tmp_path / "out" / "report.html", source="test set")
    html = out.read_text(encoding="utf-8")

    matrices = re.findall(r'<img src="(data:image/png;base64,[^"]+)" alt="([^"]+) confusion', html)
    assert [title for _, title in matrices] == ["Image type", "Color"]
    assert _png(matrices[1][0]).size[0] > 200
    thumbnails = re.findall(r'<img src="data:image/jpeg;base64,[^"]+" alt="([^"]+)"', html)
    assert thumbnails == ["f.jpg", "b.jpg"]
    assert "no preview" in html  # d.jpg
    assert 'Red</span> → <span class="wrong">Blue</span>\n      (0.70)' in html
    assert "gone.jpg" in html and "not_an_image" in html and "m1" in html
    assert "http" not in html.replace("https://", "").split("<body>")[1]  # self-contained

    only_one = render_report(evaluation, max_mistakes=1)
    assert "(1 of 2)" in only_one
    assert len(re.findall(r'src="data:image/jpeg', only_one)) == 2  # one per task


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CARTAG_DATA_DIR": str(tmp_path / "data")}


def test_evaluate_command_rejects_bad_input_with_exit_2(
    env: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    _touch_images(tmp_path, "Red/a.jpg")
    (tmp_path / "bad.csv").write_text("path,color\nRed/a.jpg,Mauve\n", encoding="utf-8")
    cases = [
        ([str(tmp_path)], "exactly one of --labels CSV or --folders"),
        ([str(tmp_path), "--folders", "--labels", str(tmp_path / "bad.csv")], "exactly one"),
        ([str(tmp_path / "nope"), "--folders"], "does not exist"),
        ([str(tmp_path), "--labels", str(tmp_path / "nope.csv")], "nope.csv does not exist"),
        ([str(tmp_path), "--labels", str(tmp_path / "bad.csv")], "bad.csv:2: unknown color"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["evaluate", *args], env=env)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)


@pytest.mark.slow
def test_evaluate_counts_unreadable_and_missing_files(
    classifier: Classifier, shared_data: Path, tmp_path: Path
) -> None:
    lines = ["path,color"]
    for i, photo in enumerate(real_photos(shared_data, 3)):
        (tmp_path / f"{i}.jpg").write_bytes(photo.read_bytes())
        lines.append(f"{i}.jpg,{photo.parent.name}")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    lines += ["broken.jpg,Red", "gone.jpg,Red"]
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    truth = labels_from_csv(tmp_path / "l.csv", tmp_path)
    ticks: list[None] = []

    result = evaluate(
        classifier, truth, max_pixels=10_000_000, batch_size=2, on_record=lambda: ticks.append(None)
    )

    assert len(ticks) == 4 and result.n_labelled == 4
    assert result.unreadable == [(str(tmp_path / "broken.jpg"), "not_an_image")]
    assert result.missing == ["l.csv:6: gone.jpg"]
    assert result.tasks["color"].report["n"] == 3
    assert result.model_version == classifier.version


@pytest.mark.slow
def test_evaluate_command_on_real_photos(
    env: dict[str, str], tmp_path: Path, shared_data: Path
) -> None:
    report, metrics = tmp_path / "r" / "report.html", tmp_path / "metrics.json"
    args = ["evaluate", str(shared_data), "--folders", "--limit", "20"]
    args += ["--report", str(report), "--json", str(metrics)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    printed = re.search(r"color: accuracy (\d\.\d{3}), top-2 accuracy (\d\.\d{3})", result.stdout)
    assert printed is not None, result.stdout
    assert "confusion matrix" in result.stdout and "precision" in result.stdout
    data = json.loads(metrics.read_text(encoding="utf-8"))
    color = data["tasks"]["color"]
    assert color["n"] == 20 and "image_type" not in data["tasks"]
    assert float(printed.group(1)) == pytest.approx(color["accuracy"], abs=1e-3)
    # The bundled model was fitted on most of these photos: anything low means breakage.
    assert color["accuracy"] >= 0.7
    html = report.read_text(encoding="utf-8")
    assert 'alt="Color confusion matrix"' in html and "data:image/png;base64," in html
