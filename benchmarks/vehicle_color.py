"""Color from the vehicle, not the frame: CAM-weighted color features vs the centred prior.

An experiment, measured with the cross-source color protocols of
``benchmarks/cross_source.py`` (same heads recipe: the shipped color head's l2 and
MLP epochs, linear on [embedding, color features] + color-feature MLPs, recolored
photos for target colors a training set lacks), with one change: the color
features. Variants:

- ``base``: ``vehicle-lab-v1`` (:mod:`cartag.models.color_features`, the fixed
  centred Gaussian prior), as shipped;
- ``cam-<net>`` / ``cam-<net>*prior``: ``vehicle-lab-cam-v1``
  (:mod:`cartag.models.cam_color_features`), pixels weighted by the vehicle CAM
  (:mod:`cartag.models.vehicle_mask`) alone or times the prior, where ``<net>`` is
  ``ft`` (the shipped fine-tuned backbone) or ``in`` (the plain ImageNet one);
  the ImageNet ``_fc`` is the same in both.

The embedding part is the shipped backbone's in every variant. Labels:
``read_sources(data, split_vcr=True)`` (the reviewed labels; vcr's held-out 20 %
is the bundled split). Recolored photos take the CAM of the photo they were made
from (recoloring repaints the body and moves nothing).

Stages (each cached under ``--cache-dir``)::

    .venv/bin/python -m benchmarks.vehicle_color extract   # per-class CAMs of both nets
    .venv/bin/python -m benchmarks.vehicle_color evaluate --json cartag-data/vehicle_color.json
    .venv/bin/python -m benchmarks.vehicle_color overlays --out cartag-data/cam_sheet.png
    .venv/bin/python -m benchmarks.vehicle_color cost
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.cross_source import _cv_order, _opener
from cartag.models.backbone import PREPROCESS_ID, Backbone
from cartag.models.cam_color_features import cam_color_features_batch
from cartag.models.classifier import BUNDLED_DIR, EmbeddingClassifier
from cartag.models.color_features import (
    FEATURE_ID,
    SIZE,
    features_from_rgb_batch,
    reduce_image,
)
from cartag.models.variants import backbone_id
from cartag.models.vehicle_mask import VEHICLE_INDEX, vehicle_cam_from_maps
from cartag.training.datasets.dataset import image_key
from cartag.training.datasets.embedding_cache import EmbeddingCache
from cartag.training.datasets.sources import VCOR, VCR, VCR_HELD_OUT, VCR_TRAIN_SPLIT, read_sources
from cartag.training.evaluation import cross_source as cs
from cartag.training.heads.color import fit_color_head
from cartag.training.heads.recolor import RECOLORED_PER_COLOR, missing_targets, synthesize
from cartag.vocab import COLORS

VARIANT = "efficientnet-lite0"
NETS = ("ft", "in")
FOCUS = ("White", "Grey", "Brown", "Black", "Red", "Burgundy", "Pink")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fc(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet classifier of an EfficientNet (untyped library): weight (1000, C), bias."""
    fc = model._fc
    return fc.weight.detach().numpy().copy(), fc.bias.detach().numpy().copy()


def _features(model: Any, x: Any) -> Any:
    """``model.extract_features(x)``: the (B, C, 7, 7) final map."""
    return model.extract_features(x)


@dataclass
class Colored:
    """The color-labelled rows (vcr, then vcor).

    Attributes:
        paths: N paths relative to the data root.
        files: N absolute files.
        keys: N sha256 of the files.
        sources: N ``vcr`` / ``vcor``.
        y: (N,) color index.
        holdout: bool (N,) vcr: the bundled split (``split_vcr``); vcor: the
            cross-source rule (:func:`cross_source.holdout_by_source`).
    """

    paths: list[str]
    files: list[Path]
    keys: list[str]
    sources: list[str]
    y: np.ndarray
    holdout: np.ndarray


def read_colored(data: Path) -> Colored:
    rows = [r for r in read_sources(data, split_vcr=True) if r.color]
    paths = [r.path for r in rows]
    files = [data / p for p in paths]
    keys = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    sources = [VCR if r.source in (VCR_HELD_OUT, VCR_TRAIN_SPLIT) else r.source for r in rows]
    y = np.asarray([COLORS.index(str(r.color)) for r in rows], dtype=np.int64)
    holdout = cs.holdout_by_source(paths, sources, y)
    vcr_held = np.asarray([r.source == VCR_HELD_OUT for r in rows])
    is_vcr = np.asarray(sources) == VCR
    holdout = np.where(is_vcr, vcr_held, holdout)
    return Colored(paths, files, keys, sources, y, holdout)


def _cam_cache_path(cache_dir: Path, net: str) -> Path:
    weights = BUNDLED_DIR / "backbone.npz" if net == "ft" else None
    ident = backbone_id(VARIANT, weights).replace("@", "_")
    return cache_dir / f"vehicle-cam-{ident}-{PREPROCESS_ID}.npz"


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = False
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _export(module: Any, path: Path, outputs: Sequence[str]) -> None:
    import torch

    torch.onnx.export(
        module.eval(), (torch.zeros(2, 3, 224, 224),), str(path), input_names=["images"],
        output_names=list(outputs),
        dynamic_axes={"images": {0: "b"}, **{o: {0: "b"} for o in outputs}},
        opset_version=17, dynamo=False,
    )  # fmt: skip


def _maps_module(model: Any, fc_w: np.ndarray, fc_b: np.ndarray) -> Any:
    """A module: images -> (vehicle maps (B, K, 7, 7), vehicle logits, top-1, pooled)."""
    import torch

    w_all, b_all = torch.from_numpy(fc_w), torch.from_numpy(fc_b)
    w_k = torch.from_numpy(fc_w[VEHICLE_INDEX].copy())
    index = torch.from_numpy(VEHICLE_INDEX)

    class Maps(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            fmap = _features(model, x)  # (B, C, 7, 7)
            pooled = fmap.mean(dim=(2, 3))
            logits = pooled @ w_all.T + b_all
            maps = torch.einsum("kc,bchw->bkhw", w_k, fmap)
            return maps, logits[:, index], logits.argmax(dim=1), pooled

    return Maps()


def extract(colored: Colored, cache_dir: Path, batch: int = 16, threads: int = 2) -> None:
    """Per-class vehicle maps (N, K, 7, 7), vehicle logits (N, K) and ImageNet top-1
    of every colored photo under both networks (ONNX Runtime), and the 64 px reductions."""
    import torch

    from cartag.models.networks import load_network

    torch.set_num_threads(threads)
    rgb_path = cache_dir / f"reduced-{SIZE}.npz"
    if not rgb_path.is_file():
        started = time.monotonic()
        rgb = np.stack([reduce_image(_opener(colored.files)(i)) for i in range(len(colored.files))])
        np.savez(rgb_path, keys=np.asarray(colored.keys), rgb=rgb)
        _progress(f"reduced {len(rgb)} images in {time.monotonic() - started:.0f} s")
    prep = Backbone(VARIANT, "prep", engine=None)  # type: ignore[arg-type]
    for net in NETS:
        out = _cam_cache_path(cache_dir, net)
        if out.is_file():
            continue
        weights = BUNDLED_DIR / "backbone.npz" if net == "ft" else None
        model = load_network(VARIANT, weights)
        fc_w, fc_b = _fc(model)
        maps_module = _maps_module(model, fc_w, fc_b)
        onnx_path = cache_dir / f"vehicle-cam-{net}.onnx"
        names = ("maps", "vehicle_logits", "top1", "pooled")
        _export(maps_module, onnx_path, names)
        session = _session(onnx_path, threads)
        parts: list[list[np.ndarray]] = [[] for _ in names]
        started = time.monotonic()
        load = _opener(colored.files)
        for start in range(0, len(colored.files), batch):
            idx = range(start, min(start + batch, len(colored.files)))
            results = session.run(list(names), {"images": prep.preprocess([load(i) for i in idx])})
            for part, result in zip(parts, results, strict=True):
                part.append(np.asarray(result))
            if (start // batch) % 40 == 0:
                _progress(f"{net}: {start + len(idx)} / {len(colored.files)}")
        arrays = {name: np.concatenate(part) for name, part in zip(names, parts, strict=True)}
        if net != "ft":
            arrays["pooled"] = np.zeros(0, np.float32)
        np.savez(out, keys=np.asarray(colored.keys), **arrays)  # type: ignore[arg-type]
        _progress(f"{net}: {len(colored.files)} images in {time.monotonic() - started:.0f} s")


@dataclass
class Cams:
    """Per-colored-row CAM material of one network."""

    cam: np.ndarray  # (N, 7, 7) in [0, 1]
    top1: np.ndarray  # (N,) ImageNet top-1 class
    vehicle_top1: np.ndarray  # (N,) bool: the top-1 class is a vehicle class
    pooled: np.ndarray  # (N, 1280) or empty


def load_cams(colored: Colored, cache_dir: Path, net: str) -> Cams:
    with np.load(_cam_cache_path(cache_dir, net)) as data:
        where = {k: i for i, k in enumerate(data["keys"].tolist())}
        rows = np.asarray([where[k] for k in colored.keys])
        cam = vehicle_cam_from_maps(data["maps"][rows], data["vehicle_logits"][rows])
        top1 = data["top1"][rows]
        pooled = data["pooled"][rows] if data["pooled"].size else np.zeros(0)
    return Cams(cam, top1, np.isin(top1, VEHICLE_INDEX), pooled)


def load_reduced(colored: Colored, cache_dir: Path) -> np.ndarray:
    with np.load(cache_dir / f"reduced-{SIZE}.npz") as data:
        where = {k: i for i, k in enumerate(data["keys"].tolist())}
        rgb: np.ndarray = data["rgb"][np.asarray([where[k] for k in colored.keys])]
    return rgb


# A feature variant: (rows' reduced images, their CAMs) -> (B, F) features.
FeatureFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def feature_variants() -> dict[str, tuple[str | None, FeatureFn]]:
    """name -> (network whose CAM it needs or None, features of (rgb, cam))."""

    def base(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
        return features_from_rgb_batch(rgb)

    def cam_only(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
        return cam_color_features_batch(rgb, cam, with_prior=False)

    def cam_prior(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
        return cam_color_features_batch(rgb, cam, with_prior=True)

    def both(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
        return np.concatenate([base(rgb, cam), cam_prior(rgb, cam)], axis=1)

    out: dict[str, tuple[str | None, FeatureFn]] = {"base": (None, base)}
    for net in NETS:
        out[f"cam-{net}"] = (net, cam_only)
        out[f"cam-{net}*prior"] = (net, cam_prior)
        out[f"base+cam-{net}*prior"] = (net, both)
    return out


def _batched(fn: FeatureFn, rgb: np.ndarray, cam: np.ndarray, size: int = 256) -> np.ndarray:
    return np.concatenate(
        [fn(rgb[s : s + size], cam[s : s + size]) for s in range(0, len(rgb), size)]
    )


def run_protocols(
    colored: Colored,
    emb: np.ndarray,
    rgb: np.ndarray,
    cams: dict[str, Cams],
    variants: Sequence[str],
    backbone: Backbone,
    emb_cache: EmbeddingCache,
    hp: dict[str, Any],
) -> dict[str, list[dict[str, Any]]]:
    """Every color protocol for every feature variant."""
    all_variants = feature_variants()
    splits = cs.color_splits(colored.sources, colored.y, colored.holdout)
    dim = emb.shape[1]
    results: dict[str, list[dict[str, Any]]] = {}
    recolored: dict[str, tuple[list[Any], np.ndarray, np.ndarray]] = {}
    for split in splits:  # the recolored photos and their embeddings, once per split
        colors = [COLORS[c] for c in colored.y[split.train]]
        files = [colored.files[i] for i in split.train]
        made = synthesize(colors, _opener(files), RECOLORED_PER_COLOR, 0, missing_targets(colors))
        images = [m.image for m in made]
        made_emb = (
            emb_cache.get_or_compute(
                [image_key(im) for im in images], images.__getitem__, backbone.embed_images
            )
            if images
            else np.zeros((0, dim), np.float32)
        )
        made_rgb = (
            np.stack([reduce_image(im) for im in images])
            if images
            else np.zeros((0, SIZE, SIZE, 3), np.uint8)
        )
        recolored[split.name] = (made, made_emb, made_rgb)
    for name in variants:
        net, fn = all_variants[name]
        cam = cams[net].cam if net else np.ones((len(rgb), 7, 7), np.float32)
        features = _batched(fn, rgb, cam)
        results[name] = []
        for split in splits:
            started = time.monotonic()
            made, made_emb, made_rgb = recolored[split.name]
            source_rows = split.train[[m.source for m in made]] if made else np.zeros(0, int)
            made_feat = (
                _batched(fn, made_rgb, cam[source_rows])
                if made
                else np.zeros((0, features.shape[1]), np.float32)
            )
            X = np.concatenate(
                [
                    np.concatenate([emb[split.train], features[split.train]], axis=1),
                    np.concatenate([made_emb, made_feat], axis=1),
                ]
            )
            y = np.concatenate([colored.y[split.train], [COLORS.index(m.color) for m in made]])
            keys = [colored.paths[i] for i in split.train]
            keys += [f"recolor:{m.color}:{keys[m.source]}" for m in made]
            order = _cv_order(keys)
            X, y = X[order], y[order].astype(np.int64)
            (head,) = fit_color_head(
                X, y, COLORS, mlp_start=dim, l2=hp["color_l2"], epochs=(hp["color_epochs"],)
            )
            test_x = np.concatenate([emb[split.test], features[split.test]], axis=1)
            proba = head.predict_proba(test_x)
            scored = cs.score(
                colored.y[split.test], proba, [colored.sources[i] for i in split.test], COLORS
            )
            results[name].append(
                {
                    "name": split.name,
                    "task": "color",
                    "variant": name,
                    "n_train": int(len(split.train)),
                    "recolored": dict(Counter(m.color for m in made)),
                    **scored,
                    "targets": cs.check_targets("color", scored["overall"]),
                    "test_rows": split.test.tolist(),
                    "truth": colored.y[split.test].tolist(),
                    "predicted": proba.argmax(axis=1).tolist(),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
            _progress(
                f"{name} · {split.name}: accuracy {scored['overall']['accuracy']:.4f} "
                f"({time.monotonic() - started:.0f} s)"
            )
    return results


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def report(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: accuracy / macro recall per protocol and variant, per-class recall."""
    names = list(results)
    protocols = [r["name"] for r in results[names[0]]]
    lines = [
        "| protocol | variant | n test | accuracy | macro recall | "
        + " | ".join(FOCUS)
        + " | targets |",
        "|---|---|---:|---:|---:|" + "---:|" * len(FOCUS) + "---|",
    ]
    for p, protocol in enumerate(protocols):
        for name in names:
            rep = results[name][p]["overall"]
            per = rep["per_class"]
            recalls = " | ".join(_f(per.get(c, {}).get("recall")) for c in FOCUS)
            met = "met" if results[name][p]["targets"]["met"] else "not met"
            lines.append(
                f"| {protocol} | {name} | {rep['n']} | {_f(rep['accuracy'])} | "
                f"{_f(rep['macro_recall'])} | {recalls} | {met} |"
            )
    lines += ["", "**Recall per class, all colors** (support in the first row per protocol)", ""]
    lines.append("| protocol | variant | " + " | ".join(COLORS) + " |")
    lines.append("|---|---|" + "---:|" * len(COLORS))
    for p, protocol in enumerate(protocols):
        per = results[names[0]][p]["overall"]["per_class"]
        lines.append(
            f"| {protocol} | support | "
            + " | ".join(str(per.get(c, {}).get("support", 0)) for c in COLORS)
            + " |"
        )
        for name in names:
            per = results[name][p]["overall"]["per_class"]
            lines.append(
                f"| {protocol} | {name} | "
                + " | ".join(_f(per.get(c, {}).get("recall")) for c in COLORS)
                + " |"
            )
    lines += ["", "**Confusion matrices** (rows true, columns predicted)"]
    for p, protocol in enumerate(protocols):
        for name in names:
            lines += cs.confusion_markdown(f"{protocol} · {name}", results[name][p]["overall"])
    return "\n".join(lines)


def evaluate(args: argparse.Namespace, colored: Colored) -> None:
    shipped = EmbeddingClassifier.from_dir(BUNDLED_DIR, threads=args.threads)
    backbone = shipped.backbone
    emb_cache = EmbeddingCache.in_folder(args.cache_dir, backbone.backbone_id, PREPROCESS_ID)
    emb = emb_cache.get_or_compute(colored.keys, _opener(colored.files), backbone.embed_images)
    rgb = load_reduced(colored, args.cache_dir)
    # The cached vehicle-lab-v1 features must be what features_from_rgb_batch gives.
    base_cache = EmbeddingCache.in_folder(args.cache_dir, FEATURE_ID, f"to-rgb-bilinear-{SIZE}")
    cached = base_cache.get_or_compute(colored.keys[:64], _opener(colored.files), _no_compute)
    drift = float(np.abs(cached - features_from_rgb_batch(rgb[:64])).max())
    variants = args.variants or list(feature_variants())
    needed = {feature_variants()[v][0] for v in variants}
    cams = {net: load_cams(colored, args.cache_dir, net) for net in NETS if net in needed}
    if "ft" in cams and cams["ft"].pooled.size:
        parity = float(np.abs(cams["ft"].pooled - emb).max())
        _progress(f"torch vs cached ONNX embeddings: max |diff| {parity:.2e}")
    _progress(f"vehicle-lab-v1 cache vs recomputed: max |diff| {drift:.2e}")
    fit = shipped.color_head.metadata["fit"]
    hp = {"color_l2": fit["l2"], "color_epochs": fit["mlp"]["epochs"]}
    results = run_protocols(colored, emb, rgb, cams, variants, backbone, emb_cache, hp)
    print(report(results))
    if args.json is not None:
        out = {
            "backbone_id": backbone.backbone_id,
            "hyper_parameters": hp,
            "data": dict(Counter(colored.sources)),
            "vehicle_top1_share": {
                net: {
                    s: round(float(c.vehicle_top1[np.asarray(colored.sources) == s].mean()), 4)
                    for s in (VCR, VCOR)
                }
                for net, c in cams.items()
            },
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        _progress(f"wrote {args.json}")


def _no_compute(images: list[Image.Image]) -> np.ndarray:
    raise RuntimeError("expected the vehicle-lab-v1 cache to be warm")


def overlays(args: argparse.Namespace, colored: Colored) -> None:
    """A sheet of photos with both CAMs: photo | ft CAM | ImageNet CAM, 4 per row."""
    cams = {net: load_cams(colored, args.cache_dir, net) for net in NETS}
    rng = np.random.default_rng(args.seed)
    picks: list[int] = []
    rgb = load_reduced(colored, args.cache_dir).astype(np.float32)
    border = np.concatenate(
        [rgb[:, :4].reshape(len(rgb), -1, 3), rgb[:, :, :4].reshape(len(rgb), -1, 3)], axis=1
    ).mean(axis=(1, 2))
    white = colored.y == COLORS.index("White")
    want = {"White": 2, "Grey": 4, "Brown": 3, "Black": 3, "Red": 2, "Burgundy": 2, "Pink": 2}
    # White (and silver) cars on a white backdrop: the case the border ring cannot help.
    on_white = np.flatnonzero(white & (border > 225))
    picks += rng.choice(on_white, size=min(6, len(on_white)), replace=False).tolist()
    for color, n in want.items():
        rows = np.flatnonzero(colored.y == COLORS.index(color))
        rows = np.setdiff1d(rows, picks)
        picks += rng.choice(rows, size=min(n, len(rows)), replace=False).tolist()
    tile, cols = 160, 4
    sheet = Image.new(
        "RGB", (cols * 3 * tile, (len(picks) + cols - 1) // cols * (tile + 14)), "white"
    )
    from PIL import ImageDraw

    draw = ImageDraw.Draw(sheet)
    for n, i in enumerate(picks):
        with Image.open(colored.files[i]) as im:
            photo = im.convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR)
        x0, y0 = (n % cols) * 3 * tile, (n // cols) * (tile + 14)
        sheet.paste(photo, (x0, y0 + 14))
        for j, net in enumerate(NETS):
            cam = cams[net].cam[i]
            heat = Image.fromarray((cam * 255).astype(np.uint8)).resize(
                (tile, tile), Image.Resampling.BILINEAR
            )
            h = np.asarray(heat, dtype=np.float32)[..., None] / 255.0
            tinted = np.asarray(photo, dtype=np.float32) * (0.25 + 0.75 * h)
            sheet.paste(Image.fromarray(tinted.astype(np.uint8)), (x0 + (j + 1) * tile, y0 + 14))
        label = f"{COLORS[colored.y[i]]} {colored.sources[i]} top1:{cams['in'].top1[i]}"
        draw.text((x0 + 2, y0 + 1), label, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    _progress(f"wrote {args.out} ({len(picks)} photos: photo | ft CAM | ImageNet CAM)")


def cost(args: argparse.Namespace, colored: Colored) -> None:
    """ONNX Runtime time per image: embedding only vs + the 7x7 map as a second output
    (or + the vehicle CAM computed in the graph), and the numpy CAM + weighted features."""
    import torch

    from cartag.models.networks import load_network

    torch.set_num_threads(1)
    model = load_network(VARIANT, BUNDLED_DIR / "backbone.npz")
    w_all, b_all = _fc(model)
    fc_w = torch.from_numpy(w_all[VEHICLE_INDEX].copy())
    fc_b = torch.from_numpy(b_all[VEHICLE_INDEX].copy())

    class Pooled(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled: torch.Tensor = _features(model, x).mean(dim=(2, 3))
            return pooled

    class WithMap(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = _features(model, x)
            return f.mean(dim=(2, 3)), f

    class WithCam(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = _features(model, x)
            pooled = f.mean(dim=(2, 3))
            share = torch.softmax(pooled @ fc_w.T + fc_b, dim=1)  # (B, K)
            cam = torch.einsum("bk,kc,bchw->bhw", share, fc_w, f)
            return pooled, cam

    sessions = {}
    for name, module in (("embedding", Pooled()), ("+map", WithMap()), ("+cam", WithCam())):
        path = args.cache_dir / f"cost-{name.strip('+')}.onnx"
        _export(module, path, ["embedding"] if name == "embedding" else ["embedding", "extra"])
        sessions[name] = _session(path, 1)
    rng = np.random.default_rng(0)
    figures: dict[str, Any] = {}
    for bsz in (1, 8):
        batch = rng.standard_normal((bsz, 3, 224, 224)).astype(np.float32)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.repeats):  # interleaved, so load from others hits all alike
            for name, sess in sessions.items():
                t = time.perf_counter()
                sess.run(None, {"images": batch})
                times[name].append((time.perf_counter() - t) * 1000 / bsz)
        figures[f"onnx_ms_per_image_batch{bsz}"] = {
            k: round(float(np.median(v)), 3) for k, v in times.items()
        }
    # numpy side: from the (B, 1280, 7, 7) map, and from the in-graph (B, 7, 7) CAM.
    from cartag.models.vehicle_mask import vehicle_cam

    rgb = load_reduced(colored, args.cache_dir)[:8]
    fmap = np.abs(rng.standard_normal((8, 1280, 7, 7))).astype(np.float32)
    cam = vehicle_cam(fmap, w_all, b_all)
    np_times: dict[str, list[float]] = {
        "base features": [],
        "cam from map": [],
        "cam features": [],
        "cam features from in-graph cam": [],
    }
    for _ in range(args.repeats):
        for bsz in (1,):
            t = time.perf_counter()
            features_from_rgb_batch(rgb[:bsz])
            np_times["base features"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            vehicle_cam(fmap[:bsz], w_all, b_all)
            np_times["cam from map"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            cam_color_features_batch(rgb[:bsz], vehicle_cam(fmap[:bsz], w_all, b_all))
            np_times["cam features"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            cam_color_features_batch(rgb[:bsz], cam[:bsz])
            np_times["cam features from in-graph cam"].append((time.perf_counter() - t) * 1000)
    figures["numpy_ms_per_image_batch1"] = {
        k: round(float(np.median(v)), 3) for k, v in np_times.items()
    }
    print(json.dumps(figures, indent=2))


def compare(paths: Sequence[Path], reference: str = "base") -> str:
    """Paired comparison of each variant with ``reference`` on the same test rows:
    photos only one of them gets right, and the exact two-sided sign-test p."""
    from math import comb

    results: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        results |= json.loads(path.read_text(encoding="utf-8"))["results"]
    lines = [
        f"| protocol | variant | only {reference} right | only variant right | p (sign test) |",
        "|---|---|---:|---:|---:|",
    ]
    for p, ref in enumerate(results[reference]):
        y = np.asarray(ref["truth"])
        a = np.asarray(ref["predicted"]) == y
        for name, runs in results.items():
            if name == reference or "predicted" not in runs[p]:
                continue
            if runs[p]["test_rows"] != ref["test_rows"]:
                raise ValueError(f"{name}: other test rows than {reference} in {ref['name']}")
            b = np.asarray(runs[p]["predicted"]) == y
            only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
            n, k = only_a + only_b, min(only_a, only_b)
            pval = min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
            lines.append(f"| {ref['name']} | {name} | {only_a} | {only_b} | {pval:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("stage", choices=("extract", "evaluate", "overlays", "cost", "compare"))
    parser.add_argument("--inputs", type=Path, nargs="*", default=[], help="compare: JSONs")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache-dir", type=Path, default=Path("cartag-data/cache"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("cartag-data/cam_sheet.png"))
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if args.stage == "compare":
        print(compare(args.inputs))
        return
    colored = read_colored(args.data)
    _progress(f"{len(colored.keys)} colored photos: {dict(Counter(colored.sources))}")
    if args.stage == "extract":
        extract(colored, args.cache_dir, threads=args.threads)
    elif args.stage == "evaluate":
        evaluate(args, colored)
    elif args.stage == "overlays":
        overlays(args, colored)
    else:
        cost(args, colored)


if __name__ == "__main__":
    main()
