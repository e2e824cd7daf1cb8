"""The leaderboard of a sweep: production and every candidate on the same test sets.

Rows come from the study in the project's database (each completed trial keeps its
model version, validation score and test metrics) and from the production model's
metrics recorded by the same run. Columns per test set: image-type macro recall,
color accuracy, the worst per-class recall change against production, and the
promotion gates' verdict (:mod:`cartag.deploy.gates`). Shown as a Rich table
(``cartag train``, ``cartag train leaderboard``) and as a self-contained HTML report
(inline SVG bar charts of per-class recall, confusion matrices as PNG data URIs)
written to ``<data_dir>/reports/<study>.html``.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Final

from markupsafe import Markup
from rich.table import Table

from cartag.deploy.gates import gate_status
from cartag.errors import NotFoundError
from cartag.settings import Settings
from cartag.store import datasets
from cartag.store.db import Database
from cartag.store.model_versions import CANDIDATE, alias_version
from cartag.training.report import TASK_TITLES, confusion_png
from cartag.training.sweep import close_storage, folder_name, optuna_storage, study_name
from cartag.training.sweep_config import SweepConfig, describe
from cartag.web import environment as web_environment

TEMPLATE_NAME: Final[str] = "leaderboard.html"
# Bar colours: production first (grey), then candidates.
_PALETTE: Final[tuple[str, ...]] = (
    "#868e96",
    "#1c7ed6",
    "#f76707",
    "#37b24d",
    "#ae3ec9",
    "#f59f00",
    "#0ca678",
    "#e03131",
    "#5c7cfa",
)


@dataclass
class Entry:
    """One model on the leaderboard.

    Attributes:
        label: ``production`` or ``trial N``.
        version: Model version.
        metrics: ``{set: {task: metrics}}`` on the test sets.
        trial: Trial number (None for production).
        params: The trial's configuration.
        objective: Validation macro recall (the sweep's objective).
        seconds: Training time of the trial.
        passes: Gate verdict against production (None for production itself).
        failures: Gate failure messages.
        is_candidate: Whether the ``candidate`` alias points at it.
    """

    label: str
    version: str
    metrics: dict[str, Any]
    trial: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    seconds: float | None = None
    passes: bool | None = None
    failures: list[str] = field(default_factory=list)
    is_candidate: bool = False


@dataclass
class Leaderboard:
    """Production and the candidates, best validation score first."""

    study: str
    dataset_ref: str
    sets: list[str]
    production: Entry | None
    candidates: list[Entry]

    @property
    def entries(self) -> list[Entry]:
        return ([self.production] if self.production else []) + self.candidates


def _find_study(storage: Any, ref: str) -> str:
    """The most recently started study of a dataset version."""
    import optuna

    found = [
        s
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if s.user_attrs.get("dataset_ref") == ref
    ]
    if not found:
        raise NotFoundError(
            f"no sweep has run on {ref}; run `cartag train --dataset {ref} --sweep sweep.yaml`"
        )
    epoch = dt.datetime.min
    return max(found, key=lambda s: (s.datetime_start or epoch, s.study_name)).study_name


def load_leaderboard(
    db: Database, settings: Settings, ref: str, config: SweepConfig | None = None
) -> Leaderboard:
    """Build the leaderboard of the sweep ``config`` on ``ref`` (default: its latest sweep).

    Raises:
        NotFoundError: No such dataset version, or no sweep on it.
    """
    import optuna
    from optuna.trial import TrialState

    with db.read() as session:
        resolved = datasets.get_version(session, ref).ref
        candidate_version = alias_version(session, CANDIDATE)
    storage = optuna_storage(db)
    try:
        name = study_name(resolved, config) if config else _find_study(storage, resolved)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError as exc:
            raise NotFoundError(
                f"the sweep {name} has not run yet; run `cartag train --dataset {resolved} "
                "--sweep <that file>`"
            ) from exc
        prod = study.user_attrs.get("production")
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    finally:
        close_storage(storage)
    production = None
    if isinstance(prod, dict):
        production = Entry("production", str(prod["version"]), dict(prod["metrics"]))
    candidates = []
    for trial in trials:
        attrs = trial.user_attrs
        metrics = dict(attrs.get("metrics") or {})
        passes, failures = gate_status(
            metrics, production.metrics if production else None, settings
        )
        candidates.append(
            Entry(
                label=f"trial {trial.number}",
                version=str(attrs.get("version", "?")),
                metrics=metrics,
                trial=trial.number,
                params=dict(trial.params),
                objective=trial.value,
                seconds=attrs.get("seconds"),
                passes=passes if production else None,
                failures=failures,
                is_candidate=attrs.get("version") == candidate_version,
            )
        )
    candidates.sort(key=lambda e: (-(e.objective or 0.0), e.trial or 0))
    sets = sorted({s for e in ([production] if production else []) + candidates for s in e.metrics})
    return Leaderboard(name, resolved, sets, production, candidates)


def _metric(entry: Entry, set_name: str, task: str, key: str) -> float | None:
    value = entry.metrics.get(set_name, {}).get(task, {}).get(key)
    return None if value is None else float(value)


def recall_deltas(
    entry: Entry, production: Entry | None, set_name: str, task: str
) -> dict[str, float]:
    """Per-class recall of ``entry`` minus production's on one set (classes in both)."""
    if production is None or entry is production:
        return {}
    mine = entry.metrics.get(set_name, {}).get(task, {}).get("per_class", {})
    theirs = production.metrics.get(set_name, {}).get(task, {}).get("per_class", {})
    deltas = {}
    for label in mine.keys() & theirs.keys():
        a, b = mine[label].get("recall"), theirs[label].get("recall")
        if a is not None and b is not None:
            deltas[label] = round(float(a) - float(b), 4)
    return deltas


def worst_delta(entry: Entry, production: Entry | None, set_name: str) -> tuple[str, float] | None:
    """The largest per-class recall drop (most negative change) over both tasks, if any."""
    worst: tuple[str, float] | None = None
    for task in ("image_type", "color"):
        for label, delta in recall_deltas(entry, production, set_name, task).items():
            if worst is None or delta < worst[1]:
                worst = (f"{label}", delta)
    return worst


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _short_set(lb: Leaderboard, set_name: str) -> str:
    prefix = f"{lb.dataset_ref}:"
    return set_name[len(prefix) :] if set_name.startswith(prefix) else set_name


def rich_table(lb: Leaderboard) -> Table:
    """The leaderboard as a Rich table: one row per model, one column per test set."""
    table = Table(title=f"{lb.study}: production vs candidates", show_lines=False)
    table.add_column("model")
    table.add_column("version", overflow="fold")
    table.add_column("configuration", overflow="fold")
    table.add_column("val MR", justify="right")
    for set_name in lb.sets:
        table.add_column(f"{_short_set(lb, set_name)}\ntype MR / color acc / worst Δ")
    table.add_column("gates")
    for entry in lb.entries:
        cells = []
        for set_name in lb.sets:
            worst = worst_delta(entry, lb.production, set_name)
            delta = "" if worst is None else f" / {worst[1]:+.3f} {worst[0]}"
            cells.append(
                f"{_fmt(_metric(entry, set_name, 'image_type', 'macro_recall'))} / "
                f"{_fmt(_metric(entry, set_name, 'color', 'accuracy'))}{delta}"
            )
        gate = (
            "-"
            if entry.passes is None
            else ("pass" if entry.passes else f"FAIL ({len(entry.failures)})")
        )
        label = entry.label + (" *" if entry.is_candidate else "")
        table.add_row(
            label,
            entry.version,
            describe(entry.params) if entry.params else "",
            _fmt(entry.objective),
            *cells,
            gate,
        )
    return table


def recall_chart_svg(lb: Leaderboard, set_name: str, task: str) -> str:
    """Grouped bars of per-class recall: production then each candidate, per class.

    Returns:
        An ``<svg>`` element (empty string when no model has this task on this set).
    """
    entries = [e for e in lb.entries if task in e.metrics.get(set_name, {})]
    if not entries:
        return ""
    labels = sorted({c for e in entries for c in e.metrics[set_name][task]["per_class"]})
    bar, gap, height, left, top, bottom = 9, 14, 160, 40, 10, 60
    group = bar * len(entries)
    width = left + len(labels) * (group + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + top + bottom}"'
        f' role="img" aria-label="per-class recall, {escape(task)}">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + height * (1 - tick)
        parts.append(
            f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dee2e6"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{tick:.2f}</text>"
        )
    for i, label in enumerate(labels):
        x0 = left + gap + i * (group + gap)
        for j, entry in enumerate(entries):
            row = entry.metrics[set_name][task]["per_class"].get(label)
            recall = None if row is None else row.get("recall")
            if recall is None:
                continue
            h = height * float(recall)
            colour = _PALETTE[j % len(_PALETTE)]
            parts.append(
                f'<rect x="{x0 + j * bar}" y="{top + height - h:.1f}" width="{bar - 1}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(entry.label)} · '
                f"{escape(label)}: recall {float(recall):.3f} (n={row.get('support')})"
                "</title></rect>"
            )
        cx = x0 + group / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{top + height + 12}" font-size="10" text-anchor="end" '
            f'transform="rotate(-40 {cx:.1f} {top + height + 12})">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _confusion_uri(task_metrics: dict[str, Any]) -> str:
    png = confusion_png(task_metrics["labels"], task_metrics["confusion"])
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(lb: Leaderboard, *, now: dt.datetime) -> str:
    """The leaderboard as one self-contained HTML page."""
    env = web_environment()
    legend = [
        {"label": e.label, "colour": _PALETTE[i % len(_PALETTE)]} for i, e in enumerate(lb.entries)
    ]
    sets = []
    for set_name in lb.sets:
        tasks = []
        for task in ("image_type", "color"):
            chart = recall_chart_svg(lb, set_name, task)
            if not chart:
                continue
            rows = []
            for entry in lb.entries:
                m = entry.metrics.get(set_name, {}).get(task)
                if m is None:
                    continue
                rows.append(
                    {
                        "entry": entry,
                        "m": m,
                        "deltas": recall_deltas(entry, lb.production, set_name, task),
                        "confusion_uri": _confusion_uri(m) if m.get("labels") else None,
                    }
                )
            tasks.append(
                {"title": TASK_TITLES.get(task, task), "chart": Markup(chart), "rows": rows}
            )
        sets.append({"name": set_name, "tasks": tasks})
    summary = []
    for entry in lb.entries:
        cells = []
        for set_name in lb.sets:
            worst = worst_delta(entry, lb.production, set_name)
            cells.append(
                {
                    "type_mr": _fmt(_metric(entry, set_name, "image_type", "macro_recall")),
                    "color_acc": _fmt(_metric(entry, set_name, "color", "accuracy")),
                    "worst": "" if worst is None else f"{worst[1]:+.3f} {worst[0]}",
                }
            )
        summary.append(
            {
                "entry": entry,
                "config": describe(entry.params) if entry.params else "",
                "objective": _fmt(entry.objective),
                "cells": cells,
            }
        )
    return env.get_template(TEMPLATE_NAME).render(
        lb=lb,
        created=now.isoformat(timespec="seconds"),
        legend=legend,
        summary=summary,
        sets=sets,
        short=lambda s: _short_set(lb, s),
    )


def report_path(settings: Settings, study: str) -> Path:
    """``<data_dir>/reports/<study>.html``."""
    return settings.data_dir / "reports" / f"{folder_name(study)}.html"


def write_leaderboard(lb: Leaderboard, settings: Settings, *, now: dt.datetime) -> Path:
    """Write the HTML report; returns its path."""
    out = report_path(settings, lb.study)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(lb, now=now), encoding="utf-8")
    return out
