"""Classification heads on backbone embeddings, run with numpy.

A head is two files side by side: ``<name>.npz`` with the arrays and
``<name>.json`` with human-readable metadata (labels, the backbone it was
trained on, preprocessing, training-data hash, metrics, date), in the spirit
of timm's ``pretrained_cfg``. The JSON ``format`` names the head type
(:class:`LinearHead` or :class:`MLPHead`); :func:`load_head` reads either.
Training lives in :mod:`cartag.training.fitting.fit` and :mod:`cartag.training.heads.color`.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from cartag.errors import ModelError

HEAD_FORMAT = "cartag-linear-head/1"
MLP_HEAD_FORMAT = "cartag-mlp-head/1"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits.

    Args:
        logits: (B, K).

    Returns:
        (B, K) rows summing to 1.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


class LinearHead:
    """Multinomial logistic regression on standardised embeddings.

    ``p = softmax(((emb - feature_mean) / feature_std) @ W + b)``

    Attributes:
        labels: K class names, in score order.
        weight: float32 (D, K).
        bias: float32 (K,).
        feature_mean: float32 (D,) training-set embedding mean.
        feature_std: float32 (D,) training-set embedding std (no zeros).
        metadata: JSON-serialisable dict written to ``<name>.json``.
    """

    FORMAT: ClassVar[str] = HEAD_FORMAT

    def __init__(
        self,
        labels: Sequence[str],
        weight: np.ndarray,
        bias: np.ndarray,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.labels = tuple(labels)
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32)
        self.feature_std = np.asarray(feature_std, dtype=np.float32)
        self.metadata: dict[str, Any] = dict(metadata or {})
        k = len(self.labels)
        d = self.weight.shape[0] if self.weight.ndim == 2 else -1
        if (
            self.weight.shape != (d, k)
            or self.bias.shape != (k,)
            or self.feature_mean.shape != (d,)
            or self.feature_std.shape != (d,)
        ):
            raise ValueError(
                f"inconsistent head shapes: W {self.weight.shape}, b {self.bias.shape}, "
                f"mean {self.feature_mean.shape}, std {self.feature_std.shape}, {k} labels"
            )
        if not np.all(np.isfinite(self.weight)) or not np.all(self.feature_std > 0):
            raise ValueError("head weights are not finite or feature_std has non-positive values")
        # Read once here so a bad stored value fails at load time, not per request.
        _ = self.temperature

    @property
    def embedding_dim(self) -> int:
        """Length D of the embeddings this head expects."""
        return int(self.weight.shape[0])

    @property
    def temperature(self) -> float:
        """Softmax temperature from ``metadata["temperature"]``; 1.0 when absent.

        Fitted on out-of-fold logits (:mod:`cartag.training.fitting.calibration`) so that
        ``max(predict_proba)`` is a calibrated confidence. Heads saved before
        calibration existed have no key and keep their original probabilities.

        Raises:
            ValueError: The stored value is not a finite positive number.
        """
        value = self.metadata.get("temperature", 1.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"temperature must be a number, got {value!r}")
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"temperature must be finite and positive, got {value!r}")
        return float(value)

    @property
    def backbone_id(self) -> str | None:
        """The ``Backbone.backbone_id`` the head was trained on, if recorded."""
        value = self.metadata.get("backbone_id")
        return str(value) if value is not None else None

    def logits(self, emb: np.ndarray) -> np.ndarray:
        """Unnormalised class scores.

        Args:
            emb: (B, D) embeddings.

        Returns:
            float32 (B, K).
        """
        return self._standardise(emb) @ self.weight + self.bias

    def _standardise(self, emb: np.ndarray) -> np.ndarray:
        """Check the shape of (B, D) inputs and standardise them with the stored statistics."""
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
            raise ValueError(f"expected (B, {self.embedding_dim}) embeddings, got {emb.shape}")
        z: np.ndarray = (emb.astype(np.float32, copy=False) - self.feature_mean) / self.feature_std
        return z

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        """Class probabilities, ``softmax(logits / temperature)``.

        Args:
            emb: (B, D) embeddings.

        Returns:
            float32 (B, K), rows summing to 1, columns in ``labels`` order.
        """
        scaled = self.logits(emb).astype(np.float64) / self.temperature
        return softmax(scaled).astype(np.float32)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "weight": self.weight,
            "bias": self.bias,
            "feature_mean": self.feature_mean,
            "feature_std": self.feature_std,
            "labels": np.asarray(self.labels, dtype=np.str_),
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the labels, arrays and temperature: equal heads, equal digest."""
        digest = hashlib.sha256()
        for key, array in self._arrays().items():
            digest.update(key.encode())
            digest.update(str(array.dtype).encode() + str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        if self.temperature != 1.0:
            # Only when set, so digests of uncalibrated heads stay what they were.
            digest.update(f"temperature:{self.temperature!r}".encode())
        return digest.hexdigest()

    def save(self, path: Path) -> tuple[Path, Path]:
        """Write ``<path>.npz`` and ``<path>.json`` (any suffix on ``path`` is replaced).

        Returns:
            The two paths written (npz, json).
        """
        npz_path = path.with_suffix(".npz")
        json_path = path.with_suffix(".json")
        npz_path.parent.mkdir(parents=True, exist_ok=True)
        # Written by hand rather than np.savez_compressed so that equal weights
        # give byte-identical files (numpy stamps each member with the time).
        with zipfile.ZipFile(npz_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key, array in self._arrays().items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        extra = {k: v for k, v in self.metadata.items() if k not in ("format", "labels")}
        meta = {"format": self.FORMAT, "labels": list(self.labels), **extra}
        json_path.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return npz_path, json_path

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a head written by :meth:`save`.

        Args:
            path: ``<name>.npz``, ``<name>.json`` or ``<name>`` without suffix.

        Raises:
            ModelError: If a file is missing, unreadable, or the two disagree.
        """
        npz_path = path.with_suffix(".npz")
        try:
            labels, arrays, meta = _read_head_files(path, cls.FORMAT)
            return cls._from_arrays(labels, arrays, meta)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            if "allow_pickle" in str(exc):
                if not _is_numpy_file(npz_path):
                    # numpy takes any file that is no zip or .npy for a pickle.
                    raise ModelError(
                        f"head {npz_path} is not a NumPy .npz file (a zip archive of arrays); "
                        "rebuild the head from its training run"
                    ) from exc
                # numpy's own text advises allow_pickle=True: loading pickles from a
                # model folder would run whatever code they hold, so say what to do instead.
                raise ModelError(
                    f"head {npz_path} holds Python objects, which cartag never loads (a "
                    "head's arrays are numbers); rebuild the head from its training run"
                ) from exc
            raise ModelError(f"head {npz_path} is corrupt: {exc}") from exc

    @classmethod
    def _from_arrays(
        cls, labels: list[str], arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> Self:
        return cls(
            labels,
            arrays["weight"],
            arrays["bias"],
            arrays["feature_mean"],
            arrays["feature_std"],
            metadata=meta,
        )


def _read_head_files(
    path: Path, expected_format: str
) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    """Read ``<path>.npz`` and ``<path>.json``: labels, arrays, and metadata without format/labels.

    Raises:
        ModelError: If a file is missing.
        ValueError: If the files disagree or the format is not ``expected_format``.
    """
    npz_path = path.with_suffix(".npz")
    json_path = path.with_suffix(".json")
    for required in (npz_path, json_path):
        if not required.is_file():
            raise ModelError(f"head file {required} is missing")
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a JSON object")
    # Open the file ourselves: np.load leaks its handle when the zip is truncated.
    with npz_path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    labels = [str(label) for label in arrays["labels"].tolist()]
    if meta.get("labels") != labels:
        raise ValueError(f"labels in {json_path.name} differ from {npz_path.name}")
    if meta.pop("format", None) != expected_format:
        raise ValueError(f"{json_path.name} is not a {expected_format} file")
    meta.pop("labels")
    return labels, arrays, meta


class MLPHead(LinearHead):
    """A linear head plus a one-hidden-layer MLP on the trailing input columns.

    ``logits = z @ W + b + relu(z[:, s:] @ W1 + b1) @ W2``, ``z = (x - mean) / std``,
    then softmax(logits / temperature) as for :class:`LinearHead`. The color head
    uses it with x = [embedding, color features] and s = the embedding length, so
    the MLP sees only the hand-made color features (adding the two parts' logits
    is a product of experts of the linear and the MLP model).

    Attributes:
        hidden_weight: float32 (D - s, H).
        hidden_bias: float32 (H,).
        out_weight: float32 (H, K).
        mlp_start: s, the first input column the MLP reads.
    """

    FORMAT: ClassVar[str] = MLP_HEAD_FORMAT

    def __init__(
        self,
        labels: Sequence[str],
        weight: np.ndarray,
        bias: np.ndarray,
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        hidden_weight: np.ndarray,
        hidden_bias: np.ndarray,
        out_weight: np.ndarray,
        *,
        mlp_start: int,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(labels, weight, bias, feature_mean, feature_std, metadata)
        self.hidden_weight = np.asarray(hidden_weight, dtype=np.float32)
        self.hidden_bias = np.asarray(hidden_bias, dtype=np.float32)
        self.out_weight = np.asarray(out_weight, dtype=np.float32)
        self.mlp_start = int(mlp_start)
        d, k = self.weight.shape
        h = self.hidden_bias.shape[0] if self.hidden_bias.ndim == 1 else -1
        if (
            not 0 <= self.mlp_start < d
            or self.hidden_weight.shape != (d - self.mlp_start, h)
            or self.out_weight.shape != (h, k)
        ):
            raise ValueError(
                f"inconsistent MLP shapes: W1 {self.hidden_weight.shape}, b1 "
                f"{self.hidden_bias.shape}, W2 {self.out_weight.shape}, start {self.mlp_start}, "
                f"{d} inputs, {k} labels"
            )
        if not all(np.all(np.isfinite(a)) for a in (self.hidden_weight, self.out_weight)):
            raise ValueError("MLP weights are not finite")

    def logits(self, emb: np.ndarray) -> np.ndarray:
        """Unnormalised class scores.

        Args:
            emb: (B, D) inputs.

        Returns:
            float32 (B, K).
        """
        z = self._standardise(emb)
        hidden = np.maximum(z[:, self.mlp_start :] @ self.hidden_weight + self.hidden_bias, 0.0)
        out: np.ndarray = z @ self.weight + self.bias + hidden @ self.out_weight
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            **super()._arrays(),
            "hidden_weight": self.hidden_weight,
            "hidden_bias": self.hidden_bias,
            "out_weight": self.out_weight,
            "mlp_start": np.asarray(self.mlp_start, dtype=np.int64),
        }

    @classmethod
    def _from_arrays(
        cls, labels: list[str], arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> Self:
        return cls(
            labels,
            arrays["weight"],
            arrays["bias"],
            arrays["feature_mean"],
            arrays["feature_std"],
            arrays["hidden_weight"],
            arrays["hidden_bias"],
            arrays["out_weight"],
            mlp_start=int(arrays["mlp_start"]),
            metadata=meta,
        )


_HEAD_TYPES: dict[str, type[LinearHead]] = {HEAD_FORMAT: LinearHead, MLP_HEAD_FORMAT: MLPHead}


def load_head(path: Path) -> LinearHead:
    """Read a head of any type, chosen by the ``format`` in ``<path>.json``.

    Args:
        path: ``<name>.npz``, ``<name>.json`` or ``<name>`` without suffix.

    Raises:
        ModelError: If a file is missing or corrupt, or the format is unknown.
    """
    json_path = path.with_suffix(".json")
    if not json_path.is_file():
        raise ModelError(f"head file {json_path} is missing")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"head {json_path} is corrupt: {exc}") from exc
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt not in _HEAD_TYPES:
        raise ModelError(
            f"head {json_path} has format {fmt!r}; expected one of {', '.join(_HEAD_TYPES)}"
        )
    return _HEAD_TYPES[fmt].load(path)


def _is_numpy_file(path: Path) -> bool:
    """Whether ``path`` starts as an .npz (zip) or .npy file does."""
    try:
        with path.open("rb") as fh:
            head = fh.read(6)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head == b"\x93NUMPY"
