"""Render MODEL_CARD.md from a model directory's JSON files (the JSON is the source of truth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _read(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _per_class_table(report: dict[str, Any]) -> list[str]:
    lines = ["| class | precision | recall | support |", "|---|---|---|---|"]
    for label, row in report["per_class"].items():
        lines.append(
            f"| {label} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {row['support']} |"
        )
    return lines


def _confusion_table(report: dict[str, Any]) -> list[str]:
    labels = report["confusion"]["labels"]
    lines = ["| true \\ predicted | " + " | ".join(labels) + " |"]
    lines.append("|---" * (len(labels) + 1) + "|")
    for label, row in zip(labels, report["confusion"]["rows_true_cols_pred"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _head_section(title: str, meta: dict[str, Any]) -> list[str]:
    report = meta["metrics"]["held_out"]
    fit = meta["fit"]
    lines = [
        f"## {title}",
        "",
        f"Labels (score order): {', '.join(meta['labels'])}.",
        "Training examples per label: "
        + ", ".join(f"{k} {v}" for k, v in meta["train_counts"].items())
        + ".",
    ]
    if meta.get("absent_labels"):
        lines.append(
            f"No training examples for {', '.join(meta['absent_labels'])}: they are kept in the "
            "score vector with near-zero probability."
        )
    lines += [
        f"Fit: {fit['method']}, l2 = {fit['l2']}, class weight {fit['class_weight']}.",
        "",
        f"Held-out ({report['n']} images): accuracy {report['accuracy']:.3f}, "
        f"macro recall {report['macro_recall']:.3f}, top-2 accuracy {report['top2_accuracy']:.3f}.",
        "",
        *_per_class_table(report),
        "",
        *_confusion_table(report),
        "",
    ]
    return lines


def render_card(model_dir: Path) -> str:
    """Build the Markdown model card of ``model_dir``.

    Args:
        model_dir: Folder with ``config.json`` and the head ``.json`` files.

    Returns:
        The card text.
    """
    config = _read(model_dir / "config.json")
    heads = {task: _read(model_dir / f"{name}.json") for task, name in config["heads"].items()}
    backbone = config["backbone"]
    training = config["training"]
    type_meta = heads["image_type"]
    tm = type_meta["metrics"]
    lines = [
        f"# cartag model card: {config['version']}",
        "",
        f"Created {config['created']}. Rebuild: `{training['command']}`.",
        "",
        "## Model",
        "",
        f"- Backbone: `{backbone['backbone_id']}` (ImageNet-pretrained EfficientNet-Lite, frozen), "
        f"embedding = {backbone['embedding']}.",
        f"- Preprocessing `{backbone['preprocess']}`: whole image resized to "
        f"{backbone['input_size']}x{backbone['input_size']} (bilinear, aspect not kept, "
        "transparency on white), RGB scaled to [0, 1], normalised with mean "
        f"{backbone['mean']} and std {backbone['std']}.",
        "- Heads: linear (multinomial logistic regression on standardised embeddings), "
        "one for image type, one for color. Color is reported as null when the type is "
        "Placeholder.",
        "",
        "## Training data",
        "",
        f"- {training['source']}",
        f"- Placeholders: {training['placeholders']['n']} synthetic images from "
        f"`{training['placeholders']['generator']}` (seed {training['placeholders']['seed']}; "
        f"families: {', '.join(training['placeholders']['families'])}).",
        f"- {training['type_label_note']}",
        f"- Training data SHA-256: `{training['data_sha256']}`.",
        f"- Held-out split (never used for fitting or choosing l2): {training['split_rule']}.",
        "",
        "## Headline held-out metrics",
        "",
        f"- Image type macro recall: {tm['held_out']['macro_recall']:.3f}",
        f"- Placeholder precision (all {tm['n_held_out_scored']} held-out images, including "
        f"real photos without a weak type): {tm['placeholder_precision_all_held_out']:.3f}",
        "- Placeholder recall on a design family left out of training: "
        + ", ".join(
            f"{k} {v:.2f}" for k, v in tm["placeholder_recall_leave_one_family_out"].items()
        ),
        f"- Color top-1 accuracy: {heads['color']['metrics']['held_out']['accuracy']:.3f} "
        f"(top-2 {heads['color']['metrics']['held_out']['top2_accuracy']:.3f})",
        "",
        *_head_section("Image type head", type_meta),
        *_head_section("Color head", heads["color"]),
        "## Limitations",
        "",
        "- Type labels of real photos are a weak rule, so Stock/Dealer numbers measure agreement "
        "with that rule, not with human judgement.",
        "- Placeholder examples are synthetic; real placeholder designs may differ.",
        "- The color set is web-scraped and has no Burgundy, Orange or Purple examples.",
        "",
    ]
    return "\n".join(lines)
