"""One sweep trial: fit the two heads, score them, write a loadable model folder.

A candidate is a ``cartag-model/1`` folder (``config.json``, ``type_head``,
``color_head``, ``MODEL_CARD.md``) that
:meth:`cartag.models.classifier.EmbeddingClassifier.from_dir` loads, like the
bundled model. The image-type head is always linear (the classifier loads it as a
:class:`~cartag.models.heads.LinearHead`); ``head_type`` chooses the color head:
``linear`` (logistic regression on [embedding, color features]) or ``mlp`` (that
plus small MLPs on the color features, :func:`cartag.training.heads.color.fit_color_head`).

Heads are first fitted on the train split minus a validation fold (whole groups),
scored there (the sweep's objective, and the type head's temperature), then
refitted on the whole train split. The test sets are only scored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.classifier import (
    CONFIG_NAME,
    MODEL_FORMAT,
    backbone_config,
    copy_backbone_weights,
)
from cartag.models.color_features import FEATURE_DIM, FEATURE_ID
from cartag.models.heads import LinearHead
from cartag.models.quantization import QUANTIZATION_NAME
from cartag.models.reference import build_reference, save_reference
from cartag.training.fitting.calibration import fit_temperature
from cartag.training.fitting.fit import fit_linear_head
from cartag.training.fitting.metrics import classification_report
from cartag.training.fitting.quantization import INT8_HEADS
from cartag.training.heads.color import MLPConfig, fit_color_head
from cartag.training.sweep.sweep_data import PLACEHOLDER, DatasetView, Features
from cartag.vocab import COLORS, IMAGE_TYPES

TASKS: Final[tuple[str, ...]] = ("image_type", "color")
# Seeds of the color MLP averaged into one head (the bundled model uses 3; 2 halves the cost).
_MLP_SEEDS: Final[int] = 2


@dataclass(frozen=True)
class TrialParams:
    """The configuration of one trial (one point of the sweep's search space)."""

    head_type: str
    backbone: str
    lr: float
    weight_decay: float
    l2: float
    class_weights: str
    augmentation: str

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> TrialParams:
        return cls(
            head_type=str(params["head_type"]),
            backbone=str(params["backbone"]),
            lr=float(params["lr"]),
            weight_decay=float(params["weight_decay"]),
            l2=float(params["l2"]),
            class_weights=str(params["class_weights"]),
            augmentation=str(params["augmentation"]),
        )


@dataclass
class Heads:
    """A fitted pair of heads; the color head's input is [embedding, color features]."""

    image_type: LinearHead
    color: LinearHead


@dataclass(frozen=True)
class Int8Part:
    """What a candidate folder records of its int8 heads (:mod:`~.int8`).

    Attributes:
        block: The config's ``int8`` block, or None when the heads failed their gate
            (the folder is then served fp32).
        record: ``training.int8``: the gate's rows, whether the heads shipped and why not.
        digest: Digests of what was written (part of the model version), "" when nothing.
    """

    block: dict[str, Any] | None
    record: dict[str, Any]
    digest: str


def task_metrics(y_true: np.ndarray, proba: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    """The registry's per-task metrics (module :mod:`cartag.gates` format).

    Args:
        y_true: (N,) int labels, N > 0.
        proba: (N, K) scores.
        labels: K class names.

    Returns:
        ``n``, ``accuracy``, ``macro_recall``, ``labels`` (the classes present, also the
        confusion axes), ``per_class`` {label: precision/recall/support}, ``confusion``.
    """
    report = classification_report(y_true, proba, labels)
    return {
        "n": report["n"],
        "accuracy": report["accuracy"],
        "macro_recall": report["macro_recall"],
        "labels": report["confusion"]["labels"],
        "per_class": report["per_class"],
        "confusion": report["confusion"]["rows_true_cols_pred"],
    }


def stamped(metrics: dict[str, Any], heads: str, serving: str) -> dict[str, Any]:
    """``metrics`` with every report naming the heads it measured (``heads``: ``int8`` or
    ``fp32``) and the servers it was scored for (``serving``: ``int8`` when they answer
    with a folder's int8 heads where it has them, else ``fp32``). The promotion gates
    compare only reports scored for the same servers (:mod:`cartag.gates`)."""
    return {
        name: {
            task: {**report, "heads": heads, "serving": serving} for task, report in tasks.items()
        }
        for name, tasks in metrics.items()
    }


def color_input(features: Features, rows: np.ndarray, head: LinearHead) -> np.ndarray:
    """The color head's (B, D [+ F]) input: with color features when the head takes them."""
    emb: np.ndarray = features.emb[rows]
    if head.embedding_dim == emb.shape[1] + FEATURE_DIM:
        return np.concatenate([emb, features.color[rows]], axis=1)
    return emb


def evaluate_heads(
    heads: Heads, features: Features, view: DatasetView, rows: np.ndarray
) -> dict[str, Any]:
    """Metrics of both heads on ``rows`` (tasks without labelled rows are left out)."""
    out: dict[str, Any] = {}
    typed = rows[view.type_idx[rows] >= 0]
    if len(typed):
        proba = heads.image_type.predict_proba(features.emb[typed])
        out["image_type"] = task_metrics(view.type_idx[typed], proba, IMAGE_TYPES)
    colored = rows[(view.color_idx[rows] >= 0) & (view.type_idx[rows] != PLACEHOLDER)]
    if len(colored):
        proba = heads.color.predict_proba(color_input(features, colored, heads.color))
        out["color"] = task_metrics(view.color_idx[colored], proba, COLORS)
    return out


def _augment(
    x: np.ndarray,
    y: np.ndarray,
    mirrored: np.ndarray | None,
    params: TrialParams,
    noise_std: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    if params.augmentation == "flip" and mirrored is not None:
        return np.concatenate([x, mirrored]), np.concatenate([y, y])
    if params.augmentation == "noise":
        noisy = x + rng.normal(0.0, 1.0, x.shape) * (noise_std * x.std(axis=0))
        return np.concatenate([x, noisy.astype(np.float32)]), np.concatenate([y, y])
    return x, y


def fit_heads(
    features: Features,
    view: DatasetView,
    rows: np.ndarray,
    params: TrialParams,
    *,
    mlp_epochs: int,
    noise_std: float,
    seed: int,
) -> Heads:
    """Fit the type and color heads on ``rows`` of the view.

    Raises:
        ValueError: ``rows`` hold no type or no color labels.
    """
    rng = np.random.default_rng(seed)
    weight: Literal["balanced"] | None = "balanced" if params.class_weights == "balanced" else None
    typed = rows[view.type_idx[rows] >= 0]
    colored = rows[(view.color_idx[rows] >= 0) & (view.type_idx[rows] != PLACEHOLDER)]
    if not len(typed) or not len(colored):
        raise ValueError("the training rows need image-type and color labels")
    flipped = features.flipped
    x, y = _augment(
        features.emb[typed],
        view.type_idx[typed],
        None if flipped is None else flipped[typed],
        params,
        noise_std,
        rng,
    )
    type_head = fit_linear_head(x, y, IMAGE_TYPES, l2=params.l2, class_weight=weight, seed=seed)

    def with_color(emb: np.ndarray) -> np.ndarray:
        return np.concatenate([emb, features.color[colored]], axis=1)

    x, y = _augment(
        with_color(features.emb[colored]),
        view.color_idx[colored],
        None if flipped is None else with_color(flipped[colored]),
        params,
        noise_std,
        rng,
    )
    extra = features.recolored
    recolored: dict[str, int] = {}
    if extra is not None:
        # Only the copies of these rows: the validation fold's stay out of its fit.
        # Not augmented: they are an augmentation already.
        use = np.isin(extra.source, colored)
        x = np.concatenate([x, np.concatenate([extra.emb[use], extra.color[use]], axis=1)])
        y = np.concatenate([y, extra.color_idx[use]])
        recolored = {COLORS[i]: int(n) for i, n in Counter(extra.color_idx[use]).items()}
    dim = features.emb.shape[1]
    color_head: LinearHead
    if params.head_type == "mlp":
        config = MLPConfig(seeds=_MLP_SEEDS, lr=params.lr, weight_decay=params.weight_decay)
        (color_head,) = fit_color_head(
            x, y, COLORS, mlp_start=dim, l2=params.l2, epochs=(mlp_epochs,), config=config
        )
    else:
        color_head = fit_linear_head(x, y, COLORS, l2=params.l2, class_weight=weight, seed=seed)
    color_head.metadata["features"] = {
        "input": "[embedding, color features]",
        "embedding_dim": dim,
        "color_features": FEATURE_ID,
        "color_features_dim": FEATURE_DIM,
    }
    if recolored:
        color_head.metadata["recolored"] = {
            "generator": "cartag.training.heads.recolor",
            "train_counts": dict(sorted(recolored.items())),
        }
    return Heads(type_head, color_head)


def macro_recall(metrics: dict[str, Any]) -> float:
    """Mean of the tasks' macro recalls (the sweep's objective on the validation fold)."""
    values = [float(metrics[t]["macro_recall"]) for t in TASKS if t in metrics]
    return float(np.mean(values)) if values else 0.0


def train_candidate(
    features: Features,
    view: DatasetView,
    params: TrialParams,
    *,
    validation: np.ndarray,
    mlp_epochs: int,
    noise_std: float,
    seed: int,
) -> tuple[Heads, dict[str, Any]]:
    """Fit on train minus the validation fold, score it, refit on the whole train split.

    Args:
        features: Inputs of every row of ``view``.
        view: The dataset.
        params: The trial's configuration.
        validation: bool (N,) validation fold (train rows only).
        mlp_epochs: Epochs of the color MLP.
        noise_std: Strength of the ``noise`` augmentation.
        seed: Seed of the fits and the noise.

    Returns:
        The final heads (type head calibrated on the validation fold) and the
        validation metrics (``image_type`` / ``color`` in the registry format).
    """
    train = view.train
    inner = train[~validation[train]]
    held = train[validation[train]]
    kwargs: dict[str, Any] = {"mlp_epochs": mlp_epochs, "noise_std": noise_std, "seed": seed}
    first = fit_heads(features, view, inner, params, **kwargs)
    scores = evaluate_heads(first, features, view, held)
    typed = held[view.type_idx[held] >= 0]
    temperature = 1.0
    if len(typed):
        temperature = fit_temperature(
            first.image_type.logits(features.emb[typed]), view.type_idx[typed]
        )
    final = fit_heads(features, view, train, params, **kwargs)
    final.image_type.metadata["temperature"] = temperature
    final.image_type.metadata["calibration"] = {
        "method": "temperature scaling (NLL, golden-section search)",
        "fit_on": "validation fold of the train split (heads fitted without it)",
    }
    return final, scores


def render_candidate_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """MODEL_CARD.md of a sweep candidate: data, configuration, validation and test metrics."""
    training = config["training"]
    lines = [
        f"# cartag model card: {config['version']}",
        "",
        f"Created {config['created']} by `cartag train` (study `{training['study']}`, "
        f"trial {training['trial']}).",
        "",
        f"- Dataset: `{training['dataset_ref']}`, manifest SHA-256 "
        f"`{training['manifest_sha256']}`.",
        f"- Backbone: `{config['backbone']['backbone_id']}` (frozen), preprocessing "
        f"`{config['backbone']['preprocess']}`; color features `{config['color_features']}`.",
        "- Configuration: "
        + ", ".join(f"{k} = {v}" for k, v in sorted(training["params"].items()))
        + ".",
        f"- Validation fold ({training['validation_fraction']:.0%} of the train split's "
        f"groups): macro recall {training['validation_objective']:.4f} "
        "(mean of the two tasks; fp32 heads, the sweep's objective).",
        *_recolored_line(training.get("recolored")),
        "",
        "## Test sets" + (" (fp32 heads; the int8 heads' below)" if training.get("int8") else ""),
        "",
        "| set | task | n | accuracy | macro recall |",
        "|---|---|---|---|---|",
    ]
    for set_name, tasks in sorted(metrics.items()):
        for task, m in sorted(tasks.items()):
            lines.append(
                f"| {set_name} | {task} | {m['n']} | {m['accuracy']:.3f} | "
                f"{m['macro_recall']:.3f} |"
            )
    lines += _int8_lines(training.get("int8"))
    lines += [
        "",
        "Per-class precision/recall and confusion matrices: the registry's metrics "
        "(`cartag models list`) and the leaderboard report (`cartag train leaderboard`).",
        "",
    ]
    return "\n".join(lines)


def _int8_lines(record: dict[str, Any] | None) -> list[str]:
    """The card's int8 section: the gate's rows and what a server serves."""
    if not record:
        return []
    verdict = (
        f"**shipped**: served by default (`CARTAG_PRECISION=int8`), backbone "
        f"`{record['backbone_id']}`, ranges "
        + (
            "of the production model it was trained beside"
            if record["ranges"] == "production"
            else "measured on the dataset's train split"
        )
        if record["shipped"]
        else f"**not shipped**: {record.get('why', 'the gate failed')}"
    )
    lines = [
        "",
        "## Int8 heads",
        "",
        "Heads fitted on the int8 backbone's embeddings with the same configuration; they "
        f"ship only if they lose at most {record['tolerance']} on every row of a test set "
        f"large enough to measure it (200 images): {verdict}.",
    ]
    if not record["gate"]:
        return lines
    lines += ["", "| set | figure | n | fp32 | int8 | diff |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['test_set']} | {r['metric']} | {r['n']} | {r['fp32']:.4f} | {r['int8']:.4f} | "
        f"{r['diff']:+.4f}{'' if r.get('judged', True) else ' (not judged: too few images)'} |"
        for r in record["gate"]
    ]
    if not any(r.get("judged", True) for r in record["gate"]):
        lines += [
            "",
            "No test set was large enough to measure a loss of the tolerance (one image "
            "must weigh no more than it): the heads ship unjudged.",
        ]
    return lines


def _recolored_line(recolored: dict[str, Any] | None) -> list[str]:
    if not recolored:
        return []
    counts = ", ".join(f"{c} {n}" for c, n in recolored["train_counts"].items())
    return [
        f"- Colors with no photo in the train split, learnt from recolored train-split "
        f"photos (`{recolored['generator']}`, the car body repainted): {counts}. Their "
        "recall on real cars is unmeasured until the dataset has photos of them.",
    ]


def remove_int8_files(out_dir: Path) -> None:
    """Remove the int8 heads and ranges an earlier attempt left in a candidate folder
    (a folder written again must not keep files its config does not name)."""
    names = [f"{n}{ext}" for n in INT8_HEADS.values() for ext in (".npz", ".json")]
    for name in (*names, QUANTIZATION_NAME):
        (out_dir / name).unlink(missing_ok=True)


def head_metadata(backbone: Backbone, view: DatasetView, now: dt.datetime) -> dict[str, Any]:
    """What every head of a candidate records of its provenance."""
    return {
        "backbone_id": backbone.backbone_id,
        "input_size": backbone.input_size,
        "preprocess": PREPROCESS_ID,
        "dataset_ref": view.ref,
        "manifest_sha256": view.manifest_sha256,
        "created": now.isoformat(timespec="seconds"),
    }


def write_candidate(
    out_dir: Path,
    heads: Heads,
    backbone: Backbone,
    *,
    view: DatasetView,
    params: TrialParams,
    study: str,
    trial: int,
    validation_fraction: float,
    validation_metrics: dict[str, Any],
    test_metrics: dict[str, Any],
    now: dt.datetime,
    reference_rows: tuple[np.ndarray, np.ndarray] | None = None,
    int8: Int8Part | None = None,
) -> dict[str, Any]:
    """Write a loadable model folder; returns its config (``version`` is new).

    Args:
        test_metrics: The float heads' metrics on the test sets (the card's table).
        reference_rows: (train, held-out) (N, D) / (M, D) embeddings of the heads'
            backbone: the folder then ships its drift reference
            (:mod:`cartag.models.reference`; centroids of the first, quantiles of the
            second). None or an empty side: no reference.
        int8: The int8 heads already written into ``out_dir`` (:func:`~.int8.save_int8`),
            or None when the sweep made none.
    """
    common = head_metadata(backbone, view, now)
    for task, head in (("image_type", heads.image_type), ("color", heads.color)):
        head.metadata.update(
            {**common, "task": task, "metrics": {"validation": validation_metrics.get(task)}}
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if int8 is None or int8.block is None:
        remove_int8_files(out_dir)
    heads.image_type.save(out_dir / "type_head")
    heads.color.save(out_dir / "color_head")
    copy_backbone_weights(backbone, out_dir)
    digest = hashlib.sha256(
        (
            heads.image_type.digest()
            + heads.color.digest()
            + view.manifest_sha256
            + backbone.backbone_id
            + (int8.digest if int8 is not None else "")
        ).encode()
    ).hexdigest()
    config: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": f"sweep-{now:%Y.%m.%d}-{digest[:10]}",
        "backbone": backbone_config(backbone),
        "heads": {"image_type": "type_head", "color": "color_head"},
        "color_features": FEATURE_ID,
        **({} if int8 is None or int8.block is None else {"int8": int8.block}),
        "training": {
            "dataset_ref": view.ref,
            "manifest_sha256": view.manifest_sha256,
            "study": study,
            "trial": trial,
            "params": asdict(params),
            "validation_fraction": validation_fraction,
            "validation_objective": round(macro_recall(validation_metrics), 4),
            "command": f"cartag train --dataset {view.ref} --sweep <sweep.yaml>",
        },
        "created": now.isoformat(timespec="seconds"),
    }
    if "recolored" in heads.color.metadata:
        config["training"]["recolored"] = heads.color.metadata["recolored"]
    if int8 is not None:
        config["training"]["int8"] = int8.record
    if reference_rows is not None and all(len(side) for side in reference_rows):
        train, held_out = reference_rows
        reference = build_reference(train, held_out, embedding_id=backbone.backbone_id)
        config["reference"] = save_reference(
            reference,
            out_dir,
            built_from={
                "dataset_ref": view.ref,
                "manifest_sha256": view.manifest_sha256,
                "n_train": len(train),
                "n_held_out": len(held_out),
                "split": "the dataset's train split; quantiles on its test sets",
            },
        )
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(
        render_candidate_card(config, test_metrics), encoding="utf-8"
    )
    return config
