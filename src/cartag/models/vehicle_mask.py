"""Where the vehicle is: a class-activation map (CAM) of ImageNet's vehicle classes (numpy only).

EfficientNet-Lite ends in global average pooling and one linear layer (``_fc``,
1000 ImageNet classes), so a class's logit is the mean over the final feature map
(C x h x w, 1280 x 7 x 7 at 224 px) of ``W_c . F[:, y, x] + b_c``. The map of
that dot product, before the mean, says where the evidence for class ``c`` lies
(Zhou et al. 2016, "Learning deep features for discriminative localization").

:func:`vehicle_cam` sums the maps of the vehicle classes (:data:`VEHICLE_CLASSES`),
each weighted by its share of the image's vehicle probability (so a photo the
network calls "sports car" is located by the sports-car map), and rescales the
sum to [0, 1] per image (min-max). :func:`upsample` brings it to the color
features' grid and :func:`pixel_weights` turns it into per-pixel weights that sum
to 1, alone or times the fixed centred prior of
:mod:`cartag.models.color_features`.

The ``_fc`` weights are the pip package's ImageNet classifier; the shipped
fine-tuning (``backbone.npz``) does not change them, so on the fine-tuned
backbone they read features they were not trained on (both are measured in
``benchmarks/vehicle_color.py``).

Nothing here imports torch: the feature map and ``_fc`` come in as arrays.
"""

from __future__ import annotations

from typing import Final

import numpy as np

# ImageNet-1k indices of road vehicles and car parts (the Keras / torchvision order).
VEHICLE_CLASSES: Final[dict[int, str]] = {
    407: "ambulance",
    436: "beach wagon",
    468: "cab",
    479: "car wheel",
    511: "convertible",
    555: "fire engine",
    569: "garbage truck",
    573: "go-kart",
    575: "golfcart",
    581: "grille",
    609: "jeep",
    627: "limousine",
    654: "minibus",
    656: "minivan",
    661: "Model T",
    675: "moving van",
    717: "pickup",
    734: "police van",
    751: "racer",
    757: "recreational vehicle",
    779: "school bus",
    817: "sports car",
    864: "tow truck",
    867: "trailer truck",
}
VEHICLE_INDEX: Final[np.ndarray] = np.asarray(sorted(VEHICLE_CLASSES), dtype=np.int64)


def class_weights(logits: np.ndarray, classes: np.ndarray = VEHICLE_INDEX) -> np.ndarray:
    """Each vehicle class's share of the image's vehicle probability.

    Args:
        logits: float (B, 1000) ImageNet logits (the pooled map through ``_fc``).
        classes: (K,) the vehicle class indices.

    Returns:
        float64 (B, K), rows summing to 1 (softmax over the K vehicle logits, which
        is the full softmax restricted to them and renormalised).
    """
    z = np.asarray(logits, dtype=np.float64)[:, classes]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def vehicle_cam(
    feature_map: np.ndarray,
    fc_weight: np.ndarray,
    fc_bias: np.ndarray,
    classes: np.ndarray = VEHICLE_INDEX,
) -> np.ndarray:
    """The vehicle CAM of a batch of final feature maps.

    Args:
        feature_map: float (B, C, h, w) final conv map (``extract_features``).
        fc_weight: float (1000, C) the ImageNet classifier's weight.
        fc_bias: float (1000,) its bias.
        classes: (K,) the vehicle class indices.

    Returns:
        float32 (B, h, w) in [0, 1]: 1 where the weighted vehicle evidence is
        strongest, 0 where it is weakest; a flat map (no contrast) is all ones.
    """
    fmap = np.asarray(feature_map, dtype=np.float32)
    if fmap.ndim != 4:
        raise ValueError(f"expected a (B, C, h, w) feature map, got shape {fmap.shape}")
    b, c, h, w = fmap.shape
    weight = np.asarray(fc_weight, dtype=np.float32)
    if weight.ndim != 2 or weight.shape[1] != c:
        raise ValueError(f"fc weight {weight.shape} does not match {c} channels")
    w_k = weight[classes]  # (K, C)
    # Only the vehicle logits: their softmax is the full one restricted and renormalised.
    logits = fmap.mean(axis=(2, 3)) @ w_k.T + np.asarray(fc_bias, dtype=np.float32)[classes]
    share = class_weights(logits, np.arange(len(classes))).astype(np.float32)  # (B, K)
    # sum_k share_k (W_k . F) = (sum_k share_k W_k) . F: one (C,) vector per image.
    direction = share @ w_k  # (B, C)
    cam = np.matmul(direction[:, None, :], fmap.reshape(b, c, h * w))  # (B, 1, hw)
    return normalise(cam.reshape(b, h, w))


def vehicle_cam_from_maps(class_maps: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """:func:`vehicle_cam` from precomputed per-class maps (what a cache stores).

    Args:
        class_maps: float (B, K, h, w) ``W_c . F`` of the K vehicle classes.
        logits: float (B, K) or (B, 1000) their pooled logits.

    Returns:
        float32 (B, h, w) in [0, 1].
    """
    maps = np.asarray(class_maps, dtype=np.float32)
    k = maps.shape[1]
    z = np.asarray(logits, dtype=np.float64)
    classes = VEHICLE_INDEX if z.shape[1] != k else np.arange(k)
    share = class_weights(z, classes).astype(np.float32)
    return normalise(np.einsum("bk,bkhw->bhw", share, maps))


def normalise(cam: np.ndarray) -> np.ndarray:
    """Min-max rescale each (h, w) map of a (B, h, w) batch to [0, 1] (flat maps -> ones)."""
    cam = np.asarray(cam, dtype=np.float32)
    lo = cam.min(axis=(1, 2), keepdims=True)
    span = cam.max(axis=(1, 2), keepdims=True) - lo
    flat = span <= 1e-6
    out: np.ndarray = np.where(flat, 1.0, (cam - lo) / np.where(flat, 1.0, span))
    return out.astype(np.float32)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights, half-pixel centres, edges clamped (as PIL/torch)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    m[np.arange(n_out), lo] += 1.0 - frac
    m[np.arange(n_out), hi] += frac
    return m.astype(np.float32)


def upsample(cam: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of (B, h, w) maps to (B, size, size) (two small matmuls).

    The network sees the whole image squeezed to a square, as does the color
    features' reduction, so grid cell (y, x) of both covers the same part of the photo.
    """
    cam = np.asarray(cam, dtype=np.float32)
    rows = _interp_matrix(cam.shape[1], size)
    cols = _interp_matrix(cam.shape[2], size)
    out: np.ndarray = np.einsum("yh,bhw,xw->byx", rows, cam, cols)
    return out.astype(np.float32)


def pixel_weights(cam: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel weights of the vehicle region, summing to 1 per image.

    Args:
        cam: float (B, S, S) upsampled CAM in [0, 1].
        prior: float (S, S) or (S*S,) fixed weights to multiply with (e.g. the
            centred Gaussian of :mod:`cartag.models.color_features`); None = CAM alone.

    Returns:
        float32 (B, S*S).
    """
    b = cam.shape[0]
    w = np.asarray(cam, dtype=np.float64).reshape(b, -1)
    if prior is not None:
        w = w * np.asarray(prior, dtype=np.float64).reshape(1, -1)
    total = w.sum(axis=1, keepdims=True)
    # A CAM that is zero everywhere the prior is non-zero cannot happen after
    # min-max (its maximum is 1), but fall back to uniform rather than divide by 0.
    w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / w.shape[1])
    return w.astype(np.float32)
