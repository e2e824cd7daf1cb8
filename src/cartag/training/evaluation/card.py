"""Render MODEL_CARD.md from a model directory's JSON files (the JSON is the source of truth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cartag.settings import Settings
from cartag.training.evaluation import card_sources
from cartag.training.evaluation.card_int8 import int8_section
from cartag.training.evaluation.card_sources import fmt


def _read(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def _per_class_table(report: dict[str, Any]) -> list[str]:
    lines = ["| class | precision | recall | support |", "|---|---|---|---|"]
    for label, row in report["per_class"].items():
        lines.append(
            f"| {label} | {fmt(row['precision'])} | {fmt(row['recall'])} | {row['support']} |"
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


def _type_headline(tm: dict[str, Any]) -> list[str]:
    """Headline type lines; heads trained before label cleaning have the old metric keys."""
    report = tm["held_out"]
    if "placeholder" not in tm:
        return [
            f"- Image type macro recall: {report['macro_recall']:.3f}",
            f"- Placeholder precision (all {tm['n_held_out_scored']} held-out images): "
            f"{tm['placeholder_precision_all_held_out']:.3f}",
        ]
    ph, cal = tm["placeholder"], tm["calibration"]
    recalls = ", ".join(f"{k} {v['recall']:.3f}" for k, v in report["per_class"].items())
    families = ", ".join(f"{k} {v:.2f}" for k, v in ph["recall_eval_designs_by_family"].items())
    called = len(ph["real_held_out_called_placeholder"])
    return [
        f"- Image type macro recall (against the cleaned labels): {report['macro_recall']:.3f} "
        f"({recalls})",
        f"- Placeholder precision: {called} of {ph['n_real_held_out']} held-out real photos "
        f"called Placeholder; precision {ph['precision_held_out']:.3f} on the held-out split "
        f"(real photos + synthetic placeholders), {ph['precision_eval_designs_vs_real']:.3f} "
        "with the independent designs as positives",
        f"- Placeholder recall on {ph['n_eval_designs']} independent designs "
        f"(`{ph['eval_generator']}`, never trained on): {ph['recall_eval_designs']:.3f} "
        f"({families})",
        f"- Type confidence: temperature {cal['temperature']} (fitted on out-of-fold logits of "
        f"the training split); held-out ECE {cal['ece_held_out_before']:.3f} before, "
        f"{cal['ece_held_out_after']:.3f} after",
    ]


def _label_section(tm: dict[str, Any]) -> list[str]:
    if "label_cleaning" not in tm:
        return []
    lc, dup = tm["label_cleaning"], tm["near_duplicates"]
    kinds = ", ".join(f"{k} {v}" for k, v in lc["corrections"].items())
    lines = [
        "## Image-type labels",
        "",
        f"- {lc['n']} real photos: {lc['kept']} weak labels kept, {lc['corrected']} corrected "
        f"({kinds}), {lc['filled_reviewed'] + lc['filled_model']} filled where the rule "
        f"abstained ({lc['filled_reviewed']} by review, {lc['filled_model']} by a confident "
        f"out-of-fold prediction); {lc['reviewed']} images reviewed by eye in all.",
        f"- Near-duplicates (pHash within {dup['max_distance']} bits): {dup['groups']} groups, "
        f"{dup['rows_in_groups']} images, kept in one cross-validation fold; "
        f"{dup['train_rows_dropped_for_held_out_twin']} training images with a held-out twin "
        "left out of training.",
        "",
        "| label | train | held-out |",
        "|---|---|---|",
    ]
    for label, row in tm["class_balance"].items():
        lines.append(f"| {label} | {row.get('train', '-')} | {row.get('held_out', '-')} |")
    lines += [
        "",
        "Low-confidence cut-off (out-of-fold, training split): share of predictions below it "
        "and accuracy above / below.",
        "",
        "| threshold | share low | accuracy confident | accuracy low |",
        "|---|---|---|---|",
    ]
    for row in tm["low_confidence_out_of_fold"]:
        lines.append(
            f"| {row['threshold']} | {fmt(row['share_low'])} | "
            f"{fmt(row['accuracy_confident'])} | {fmt(row['accuracy_low'])} |"
        )
    return [*lines, ""]


def _heads_line(config: dict[str, Any], color_meta: dict[str, Any]) -> str:
    if not config.get("color_features"):
        return (
            "- Heads: linear (multinomial logistic regression on standardised embeddings), "
            "one for image type, one for color. Color is reported as null when the type is "
            "Placeholder."
        )
    features = color_meta.get("features", {})
    return (
        "- Heads: image type: linear (multinomial logistic regression on standardised "
        f"embeddings); color: {color_meta['fit']['method']}. The color input is the embedding "
        f"followed by {features.get('color_features_dim', '?')} color features "
        f"`{config['color_features']}` (centre-weighted Lab histograms and moments of the "
        "vehicle region plus a border-ring histogram, `cartag.models.color_features`). Color "
        "is reported as null when the type is Placeholder."
    )


def _backbone_line(backbone: dict[str, Any], finetune: dict[str, Any] | None) -> str:
    if finetune is None:
        return (
            f"- Backbone: `{backbone['backbone_id']}` (ImageNet-pretrained EfficientNet-Lite, "
            f"frozen), embedding = {backbone['embedding']}."
        )
    recipe = finetune.get("recipe", {})
    held_out = finetune.get("log", {}).get("held_out", {})
    return (
        f"- Backbone: `{backbone['backbone_id']}`, weights `{backbone.get('weights')}` in this "
        f"folder: EfficientNet-Lite `{finetune.get('base_backbone_id')}` (ImageNet) with every "
        f"layer fine-tuned on the {finetune.get('n_train')} training-split images for image "
        "type and color together (`cartag.training.bundled.finetune`: "
        f"{recipe.get('epochs')} epochs, "
        f"AdamW, random crops and flips, label smoothing {recipe.get('label_smoothing')}, "
        "ImageNet batch-norm statistics kept; stored as its int8 change to the package weights, "
        "`cartag.models.weights_delta`), then frozen; the heads below "
        f"are fitted on its embeddings = {backbone['embedding']}. The fine-tuning's own linear "
        f"heads scored type macro recall {fmt(held_out.get('type_macro_recall'))} and color "
        f"accuracy {fmt(held_out.get('color_accuracy'))} on the held-out split (reported "
        "only; nothing was chosen on it)."
    )


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
        _backbone_line(backbone, training.get("backbone_finetune")),
        f"- Preprocessing `{backbone['preprocess']}`: whole image resized to "
        f"{backbone['input_size']}x{backbone['input_size']} (bilinear, aspect not kept, "
        "transparency on white), RGB scaled to [0, 1], normalised with mean "
        f"{backbone['mean']} and std {backbone['std']}.",
        _heads_line(config, heads["color"]),
        "",
        "## Training data",
        "",
        f"- {training['source']}",
        f"- Placeholders: {training['placeholders']['n']} synthetic images from "
        f"`{training['placeholders']['generator']}` (seed {training['placeholders']['seed']}; "
        f"families: {', '.join(training['placeholders']['families'])}).",
        f"- {training['type_label_note']}",
        *_recolored_data(heads["color"]["metrics"].get("recolored")),
        f"- Training data SHA-256: `{training['data_sha256']}`.",
        f"- Held-out split (never used for fitting or choosing l2): {training['split_rule']}.",
        "",
        "## Headline held-out metrics",
        "",
        *_type_headline(tm),
        *card_sources.offset_line(tm),
        f"- Color top-1 accuracy: {heads['color']['metrics']['held_out']['accuracy']:.3f} "
        f"(top-2 {heads['color']['metrics']['held_out']['top2_accuracy']:.3f})",
        *_recolored_recall(heads["color"]["metrics"].get("recolored")),
        "",
        *_by_source_section(tm, heads["color"]["metrics"]),
        *card_sources.cross_source_section(card_sources.read_cross_source(model_dir)),
        *int8_section(model_dir, config, str(Settings.model_fields["precision"].default)),
        *_reference_section(config.get("reference")),
        *card_sources.label_section(training),
        *_label_section(tm),
        *_head_section("Image type head", type_meta),
        *_head_section("Color head", heads["color"]),
        "## Limitations",
        "",
        *_limitations(model_dir, training, heads["color"]["metrics"]),
        *_finetune_limitation(training.get("backbone_finetune")),
        "",
    ]
    return "\n".join(lines)


def _reference_section(reference: dict[str, Any] | None) -> list[str]:
    """The drift reference the folder ships (``cartag.models.reference``), if any."""
    if not reference:
        return []
    quantiles = reference.get("quantiles", {})
    built = reference.get("built_from", {})
    spread = ", ".join(f"{name} {value:.4f}" for name, value in quantiles.items())
    return [
        "## Drift reference",
        "",
        f"- `{reference['file']}`: {reference['k']} k-means centroids (cosine) of "
        f"{built.get('n_train', '?')} training-split embeddings of `{reference['embedding_id']}` "
        f"(sources: {', '.join(built.get('sources', [])) or '?'}). An image's novelty is the "
        "cosine distance of its embedding to the nearest centroid; drift on `/monitor` and "
        "`/metrics` compares today's novelty, answer mix and confidence with the version's first "
        "week.",
        f"- Novelty of the {built.get('n_held_out', '?')} held-out images: {spread}. An image is "
        f"*far* above {reference['far_threshold']:.4f} (held-out p95: about 5 % of "
        "in-distribution images). Far shares on shifted photos are in `benchmarks/RESULTS.md`, "
        '"Drift reference of the bundled model".',
        "",
    ]


def _limitations(
    model_dir: Path, training: dict[str, Any], color_metrics: dict[str, Any]
) -> list[str]:
    if "sources" in training:
        real = color_metrics.get("recolor_rule", {}).get("real_training_photos", {})
        return card_sources.limitations(card_sources.read_cross_source(model_dir), real)
    return [
        "- Type labels of real photos were cleaned by one reviewer; borderline cases (press "
        "photos on a plain backdrop vs studio shots, die-cast scale models on white vs "
        "studio renders of the real car) are judgement calls and make up most held-out "
        "Dealer/Stock confusions, see the note column of type_labels.csv.",
        "- Placeholder examples are synthetic (training and evaluation generators are written "
        "independently); real placeholder designs may still differ.",
        _color_limitation(color_metrics.get("recolored"), color_metrics.get("recolor_rule")),
    ]


def _by_source_section(type_metrics: dict[str, Any], color_metrics: dict[str, Any]) -> list[str]:
    """Held-out figures per source (builds on several sources only)."""
    types = type_metrics.get("held_out_by_source")
    if not types:
        return []
    colors = color_metrics.get("held_out_by_source", {})
    lines = [
        "## Held-out metrics per source",
        "",
        "Placeholder precision counts every held-out real image called Placeholder that is "
        "not a labelled Placeholder as a false positive.",
        "",
        "| source | n type | type macro recall | Dealer / Stock / Placeholder recall | "
        "Placeholder precision (TP / FP) | n color | color top-1 | lowest color recall |",
        "|---|---:|---:|---|---|---:|---:|---|",
    ]
    for source, entry in types.items():
        report, ph = entry.get("image_type"), entry.get("placeholder")
        color = colors.get(source)
        recalls = (
            " / ".join(
                fmt(report["per_class"].get(c, {}).get("recall"))
                for c in ("Dealer", "Stock", "Placeholder")
            )
            if report
            else ""
        )
        low = ""
        if color:
            pairs = [(r["recall"], c) for c, r in color["per_class"].items() if r["recall"]]
            if pairs:
                value, name = min(pairs)
                low = f"{name} {value:.3f}"
        lines.append(
            f"| {source} | {report['n'] if report else ''} | "
            f"{fmt(report['macro_recall']) if report else ''} | {recalls} | "
            + (f"{fmt(ph['precision'])} ({ph['tp']} / {ph['false_positives']})" if ph else "")
            + f" | {color['n'] if color else ''} | "
            f"{fmt(color['accuracy']) if color else ''} | {low} |"
        )
    return [*lines, ""]


def _recolored_data(recolored: dict[str, Any] | None) -> list[str]:
    if not recolored:
        return []
    made = ", ".join(
        f"{color} {n} (from {', '.join(recolored['sources'][color])})"
        for color, n in recolored["train_counts"].items()
    )
    return [
        f"- Colors without photos in the set: recolored training-split photos from "
        f"`{recolored['generator']}` (the car body repainted): {made}.",
    ]


def _recolored_recall(recolored: dict[str, Any] | None) -> list[str]:
    if not recolored or not recolored["held_out_recall"]:
        return []
    recall = ", ".join(f"{c} {r:.2f}" for c, r in recolored["held_out_recall"].items())
    return [
        f"- Recall on recolored held-out photos (the same generator, so optimistic): {recall}",
    ]


def _color_limitation(recolored: dict[str, Any] | None, rule: dict[str, Any] | None = None) -> str:
    if not recolored and rule and not rule.get("recolored_colors"):
        real = rule.get("real_training_photos", {})
        return (
            "- The color sets are web-scraped; every color has real training photos, but "
            + ", ".join(f"{c} only {n}" for c, n in real.items() if n < 100)
            + ", so the held-out recall of the rarest colors rests on a handful of photos."
        )
    if not recolored:
        return "- The color set is web-scraped and has no Burgundy, Orange or Purple examples."
    return (
        f"- The color set is web-scraped and has no photos of "
        f"{', '.join(recolored['train_counts'])}: the head learnt them from recolored photos "
        "only, and its recall on real cars of those colors is unmeasured. Real dark-red, "
        "copper or orange-yellow cars labelled Red, Brown or Yellow in the set may be called "
        "Burgundy or Orange, which the held-out accuracy counts as errors."
    )


def _finetune_limitation(finetune: dict[str, Any] | None) -> list[str]:
    if finetune is None:
        return []
    return [
        "- The fine-tuned backbone has seen only the training generator's placeholder "
        "families: on the independent designs its placeholder recall is a little lower than "
        "frozen ImageNet features gave (the misses are called Dealer, most of them with low "
        "confidence), while real Dealer photos are recognised better; see "
        '`benchmarks/RESULTS.md`, "Type head: frozen features vs fine-tuning".',
    ]
