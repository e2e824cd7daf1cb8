"""Build dataset versions: import a folder, or extend a version with recent fixes.

:class:`DatasetBuilder` runs the steps, each a plain function elsewhere:

1. take the items to start from (the parent's included and flagged items, with
   ``provenance.from_version``; nothing for an import);
2. collect candidates: the images fixed since the cutoff, downloaded through the
   SSRF-guarded :class:`~cartag.net.fetch.Fetcher` (labels and provenance
   from the fix), or the files of a folder (labels from folder names and CSVs);
   optionally images to review, proposed with the model's answer
   (:mod:`cartag.training.datasets.candidates`), filtered after all the others and
   added ``flagged``;
3. filter them (:mod:`cartag.training.datasets.filters`), each filter counted;
4. crop (:mod:`cartag.training.datasets.crop`): a cropped image is a new blob, its
   provenance keeps the original;
5. split (:mod:`cartag.training.datasets.splits`);
6. rank label issues (:mod:`cartag.training.datasets.ranking`) on cached embeddings and
   report the class balance.

The new draft version and all its items are written in one transaction at the
end, so a failed build leaves no half-made version (blobs and cached embeddings
already stored are content-addressed and simply reused by the next run).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from cartag.clock import Clock, SystemClock
from cartag.errors import ConflictError, DecodeError, InputError
from cartag.imaging.decode import decode_image
from cartag.imaging.files import find_images
from cartag.imaging.keys import content_sha256, hamming, phash
from cartag.models.classifier import draft_size_for
from cartag.net.fetch import Fetcher
from cartag.net.outcomes import Failed, Fetched, FetchOutcome, FetchRequest
from cartag.settings import Settings
from cartag.store import datasets as repo
from cartag.store.blobs import BlobStore
from cartag.store.db import Database
from cartag.training.datasets.candidates import (
    CandidateRequest,
    Selection,
    checked_candidates,
    filter_candidates,
    is_candidate,
    known_from,
    select_candidates,
)
from cartag.training.datasets.copies import recolored_copies
from cartag.training.datasets.crop import Cropper, make_cropper
from cartag.training.datasets.dataset_inputs import (
    LAST_RETRAIN,
    BuildOptions,
    BuildProgress,
    BuildReport,
    folder_labels,
    placeholder_candidates,
    read_label_csv,
    relative_path,
)
from cartag.training.datasets.dataset_items import new_items as make_new_items
from cartag.training.datasets.dataset_items import split_items
from cartag.training.datasets.filters import Candidate, Existing, apply_filters
from cartag.training.datasets.ranking import Embedder, balance_report, ensure_embeddings, rank_items
from cartag.training.datasets.splits import advertiser_split

TOP_SUSPICIOUS = 25


def _decode_rgb(max_pixels: int, draft: int) -> Callable[[bytes], Image.Image]:
    def load(data: bytes) -> Image.Image:
        return decode_image(data, max_pixels=max_pixels, draft_size=draft).image

    return load


class DatasetBuilder:
    """Builds draft dataset versions (module docstring).

    Args:
        settings: ``dataset_*`` knobs, download limits, ``max_image_pixels``.
        db: The store.
        blobs: Where images are kept.
        embedder: Backbone for the ranking; None builds without ranking.
        clock: Timestamps.
        fetcher: Makes the Fetcher that downloads fixed images (tests pass one
            with a fake transport or resolver); default ``Fetcher(settings)``.
        progress: Progress reporting.
        cropper: Overrides the crop step (pluggable); default by name.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        *,
        embedder: Embedder | None = None,
        clock: Clock | None = None,
        fetcher: Callable[[], Fetcher] | None = None,
        progress: BuildProgress | None = None,
        cropper: Cropper | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.embedder = embedder
        self.clock = clock or SystemClock()
        self._fetcher = fetcher or (lambda: Fetcher(settings))
        self.progress = progress or BuildProgress()
        self._cropper = cropper

    # --- entry points ---------------------------------------------------------------

    def create(
        self,
        options: BuildOptions,
        *,
        parent_ref: str,
        fixes_since: dt.datetime | Literal["last-retrain"] | None,
        candidates: CandidateRequest | None = None,
    ) -> BuildReport:
        """Extend ``parent_ref`` with the fixes made since the cutoff.

        Args:
            options: Name, user, test sets, crop, ranking.
            parent_ref: A frozen version (``NAME@N`` or ``NAME`` = latest).
            fixes_since: ``last-retrain`` (the production model's dataset's creation,
                else the parent's), a datetime, or None (add no fixes).
            candidates: Images to propose for review as well (None: none).

        Raises:
            NotFoundError: No such parent.
            ConflictError: The parent is still a draft.
            InputError: far-from-training candidates without a far threshold.
        """
        repo.check_name(options.name)
        # created_at is when the fixes were read, so the next "last-retrain" cutoff
        # also catches fixes made while this build was downloading and ranking.
        started = self.clock.now()
        with self.db.read() as session:
            parent = repo.get_version(session, parent_ref)
            if parent.status != repo.FROZEN:
                raise ConflictError(
                    f"{parent.ref} is a draft; freeze it first (cartag dataset freeze "
                    f"{parent.ref}) so the new version extends something that cannot change"
                )
            cutoff: dt.datetime | None = None
            if fixes_since == LAST_RETRAIN:
                cutoff = repo.last_retrain(session) or parent.created_at
            elif isinstance(fixes_since, dt.datetime):
                cutoff = fixes_since
            fixes = repo.fixed_images_since(session, cutoff) if fixes_since is not None else []
            parent_items = repo.list_items(session, parent.ref)
            inherited = [t.get("advertiser_id") for t in parent.test_sets]
            selection = (
                select_candidates(
                    session,
                    candidates,
                    now=started,
                    known=known_from(
                        parent_items, fixes, self.settings.dataset_near_duplicate_distance
                    ),
                )
                if candidates is not None and candidates.kinds
                else None
            )
        copied = [
            self._copy(item, parent.ref)
            for item in parent_items
            if item.status in (repo.INCLUDED, repo.FLAGGED)
        ]
        fixed, downloads = self._download_fixes(fixes)
        review = self._download_candidates(selection) if selection else []
        stats: dict[str, Any] = {
            "fixes": {
                "since": cutoff.isoformat() if cutoff else None,
                "mode": fixes_since if isinstance(fixes_since, str) else "date",
                "fixes": len(fixes),
            },
            "downloads": downloads,
        }
        if selection is not None:
            stats["candidates"] = selection.stats
        advertisers = [str(a) for a in inherited if a] + [
            a for a in options.test_advertisers if a not in inherited
        ]
        return self._build(
            options,
            parent_ref=parent.ref,
            fixes_since=cutoff,
            copied=copied,
            candidates=fixed,
            advertisers=advertisers,
            stats=stats,
            started=started,
            review=review,
            review_limit=candidates.limit if candidates else 0,
        )

    def import_folder(
        self, options: BuildOptions, folder: Path, label_files: Sequence[Path] = ()
    ) -> BuildReport:
        """Create a first version from a folder of images.

        Labels: an image's folder name when it is a type or a color; then each CSV
        (``path`` + ``image_type``/``type`` and/or ``color``, optional ``listing_id``)
        sets the fields it has. Unlabelled images are imported unlabelled.

        Raises:
            InputError: The folder holds no images, or a CSV is unusable.
        """
        repo.check_name(options.name)
        started = self.clock.now()
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder", field="folder")
        files = find_images([folder])
        if not files:
            raise InputError(f"{folder} holds no images", field="folder")
        # Keyed by the path as listed: two links to one photo in two folders are two
        # imports whose labels may disagree (a conflict to flag, not the last one's label).
        labels: dict[Path, list[str | None]] = {f: folder_labels(f) for f in files}
        listings: dict[Path, str] = {}
        unmatched = 0
        for csv_path in label_files:
            rows, missing = read_label_csv(csv_path, folder, files)
            unmatched += missing
            for file, (image_type, color, listing) in rows.items():
                entry = labels[file]
                entry[0] = image_type or entry[0]
                entry[1] = color or entry[1]
                if listing:
                    listings[file] = listing
        candidates = []
        self.progress.begin("read", len(files))
        for file in files:
            image_type, color = labels[file]
            if image_type == "Placeholder":
                color = None
            provenance: dict[str, Any] = {"source": "import", "path": relative_path(file, folder)}
            if file in listings:
                provenance["listing_id"] = listings[file]
            candidates.append(Candidate(file.read_bytes(), image_type, color, provenance))
            self.progress.advance()
        stats: dict[str, Any] = {
            "import": {
                "folder": str(folder),
                "files": len(files),
                "labels": [str(p) for p in label_files],
                "label_rows_without_file": unmatched,
            }
        }
        return self._build(
            options,
            parent_ref=None,
            fixes_since=None,
            copied=[],
            candidates=candidates,
            advertisers=list(options.test_advertisers),
            stats=stats,
            started=started,
        )

    # --- steps ----------------------------------------------------------------------

    @staticmethod
    def _copy(item: Any, parent_ref: str) -> repo.NewItem:
        provenance = dict(item.provenance)
        provenance.setdefault("first_version", parent_ref)
        provenance["from_version"] = parent_ref
        return repo.NewItem(
            content_sha256=item.content_sha256,
            blob_path=item.blob_path,
            image_type=item.image_type,
            color=item.color,
            status=item.status,
            reason=item.reason,
            provenance=provenance,
            split=item.split,
            group_key=item.group_key,
            phash=item.phash,
            width=item.width,
            height=item.height,
        )

    def _download_fixes(
        self, fixes: Sequence[repo.FixedImage]
    ) -> tuple[list[Candidate], dict[str, Any]]:
        """Fetch each fixed image once; a candidate per fix whose bytes still match.

        Bytes that changed but show the same picture (pHash) keep the fix's type; its
        color only as :func:`~cartag.training.datasets.copies.recolored_copies` allows.
        """
        by_key: dict[str, list[str]] = {}
        for fix in fixes:
            by_key.setdefault(fix.image_key, fix.urls)
        self.progress.begin("download", len(by_key))
        outcomes = asyncio.run(self._fetch_all(by_key)) if by_key else {}
        failures: list[dict[str, str]] = []
        changed = 0
        kept: list[tuple[repo.FixedImage, Fetched]] = []
        copies: dict[str, str] = {}  # fixed image key -> SHA-256 of its copy
        for fix in fixes:
            outcome = outcomes.get(fix.image_key)
            if not isinstance(outcome, Fetched):
                reason = outcome.reason if isinstance(outcome, Failed) else "no_url"
                failures.append({"image_key": fix.image_key, "reason": reason})
                continue
            sha = content_sha256(outcome.content)
            if fix.content_sha256 and sha != fix.content_sha256:
                # The URL now serves other bytes: the fix only carries over to a copy
                # of the image that was fixed (re-encoded/resized), never to a new photo.
                if not self._same_picture(outcome.content, fix.phash):
                    changed += 1
                    continue
                if fix.color is not None:
                    copies[fix.image_key] = sha
            kept.append((fix, outcome))
        recolored = self._recolored(copies)
        candidates = []
        for fix, outcome in kept:
            color = None if fix.image_key in recolored else fix.color
            if fix.image_type is None and color is None:
                continue  # a color fix whose color does not carry: nothing left to add
            provenance: dict[str, Any] = {
                "source": "fix",
                "scope": fix.scope,
                "fix_audit_id": fix.fix_audit_id,
                "advertiser_id": fix.advertiser_id,
                "user": fix.user,
                "url": outcome.url,
                "image_key": fix.image_key,
                "fixed_at": fix.fixed_at.isoformat(),
            }
            if fix.image_key in recolored:
                provenance["color_dropped"] = {"fixed": fix.color, "reason": "recolored_copy"}
            candidates.append(Candidate(outcome.content, fix.image_type, color, provenance))
        report = {
            "images": len(by_key),
            "failed": len({f["image_key"] for f in failures}),
            "changed_since_fix": changed,
            "color_not_carried": len(recolored),
            "failures": failures[:50],
        }
        return candidates, report

    def _download_candidates(self, selection: Selection) -> list[Candidate]:
        """Fetch each picked image like a fixed one; keep those still showing it."""
        by_key = {pick.image.image_key: pick.image.urls for pick in selection.picks}
        self.progress.begin("candidates", len(by_key))
        fetched = asyncio.run(self._fetch_all(by_key)) if by_key else {}
        return checked_candidates(selection, fetched, self._same_picture, self._recolored)

    def _recolored(self, copies: dict[str, str]) -> set[str]:
        if not copies:
            return set()  # no pHash copy with a color: no read
        with self.db.read() as session:
            return recolored_copies(session, copies)

    def _same_picture(self, data: bytes, fixed_phash: str | None) -> bool:
        if not fixed_phash:
            return False
        try:
            image = decode_image(data, max_pixels=self.settings.max_image_pixels).image
        except DecodeError:
            return False
        return hamming(phash(image), fixed_phash) <= self.settings.dataset_near_duplicate_distance

    async def _fetch_all(self, by_key: dict[str, list[str]]) -> dict[str, FetchOutcome | None]:
        async with self._fetcher() as fetcher:

            async def one(key: str, urls: list[str]) -> tuple[str, FetchOutcome | None]:
                outcome: FetchOutcome | None = None
                for url in urls:
                    outcome = await fetcher.fetch(FetchRequest(url))
                    if isinstance(outcome, Fetched):
                        break
                self.progress.advance()
                return key, outcome

            pairs = await asyncio.gather(*(one(k, u) for k, u in by_key.items()))
        return dict(pairs)

    def _build(
        self,
        options: BuildOptions,
        *,
        parent_ref: str | None,
        fixes_since: dt.datetime | None,
        copied: list[repo.NewItem],
        candidates: list[Candidate],
        advertisers: list[str],
        stats: dict[str, Any],
        started: dt.datetime,
        review: Sequence[Candidate] = (),
        review_limit: int = 0,
    ) -> BuildReport:
        settings = self.settings
        distance = settings.dataset_near_duplicate_distance
        if options.placeholders:
            generated = placeholder_candidates(options.placeholders, options.placeholder_seed)
            candidates = candidates + generated
            stats["placeholders"] = {
                "generated": len(generated),
                "seed": options.placeholder_seed,
            }
        existing = existing_items(copied)
        self.progress.begin("filter", len(candidates))
        outcome = apply_filters(
            candidates,
            existing,
            min_side=settings.dataset_min_side,
            max_pixels=settings.max_image_pixels,
            max_distance=distance,
        )
        self.progress.advance(len(candidates))
        for index, change in outcome.existing_changes.items():
            item = copied[index]
            extra: dict[str, Any] = {
                k: change.pop(k) for k in ("conflict", "relabelled") if k in change
            }
            copied[index] = replace(item, **change, provenance={**item.provenance, **extra})
        checked_all = list(outcome.checked)
        if review:
            # Judged against everything else, once that is settled (filter_candidates).
            held = existing_items(copied) + [
                Existing(
                    len(copied) + j, c.candidate.sha256, c.phash, *c.candidate.labels, c.status
                )
                for j, c in enumerate(outcome.checked)
            ]
            checked_all += filter_candidates(
                review,
                [e for e in held if e.status != repo.EXCLUDED],
                min_side=settings.dataset_min_side,
                max_pixels=settings.max_image_pixels,
                max_distance=distance,
                stats=stats["candidates"],
            )

        cropper = self._cropper or make_cropper(options.crop or settings.dataset_crop)
        taken = {item.content_sha256 for item in copied}
        new_items, cropped = make_new_items(
            checked_all, self.blobs, cropper, taken, outcome.counts, review_limit
        )
        if "candidates" in stats:
            added = Counter(
                str(i.provenance["why"])
                for i in new_items
                if is_candidate(i.provenance) and i.status == repo.FLAGGED
            )
            for kind, record in stats["candidates"].items():
                if kind != "window":
                    record["added"] = added.get(kind, 0)
        items = copied + new_items
        stats["filters"] = outcome.counts
        stats["crop"] = {"method": cropper.name, "cropped": cropped}
        stats["copied"] = len(copied)
        stats["added"] = sum(1 for i in new_items if i.status == repo.INCLUDED)

        live, stats["split"] = split_items(
            items,
            len(copied),
            max_distance=distance,
            test_fraction=settings.dataset_test_fraction,
            test_advertisers=advertisers,
        )
        included = [item for item in items if item.status == repo.INCLUDED]
        stats["class_balance"] = balance_report(
            [(item.image_type, item.color) for item in included], [item.split for item in included]
        )
        stats["items"] = dict(Counter(item.status for item in items))

        if options.rank and self.embedder is not None and live:
            items = self._rank(items, live, stats)
        elif not options.rank or self.embedder is None:
            stats["ranking"] = {"skipped": "ranking was not requested"}

        test_sets = [
            {"name": advertiser_split(a).removeprefix("test:"), "advertiser_id": a}
            for a in advertisers
        ]
        with self.db.write() as session:
            version = repo.create_version(
                session,
                options.name,
                created_by=options.user,
                now=started,
                parent_ref=parent_ref,
                fixes_since=fixes_since,
                test_sets=test_sets,
                notes=options.notes,
            )
            repo.add_items(session, version.ref, items)
            repo.set_stats(session, version.ref, stats)
            ref = version.ref
        return BuildReport(ref=ref, stats=stats)

    def _rank(
        self, items: list[repo.NewItem], live: list[int], stats: dict[str, Any]
    ) -> list[repo.NewItem]:
        assert self.embedder is not None
        self.progress.begin("embed", len(live))
        emb = ensure_embeddings(
            self.db,
            self.blobs,
            self.embedder,
            [(items[i].content_sha256, items[i].blob_path) for i in live],
            # The service's decode: these vectors share its cache rows (backbone id).
            load=_decode_rgb(
                self.settings.max_image_pixels, draft_size_for(self.embedder.input_size)
            ),
            now=self.clock.now(),
            advance=self.progress.advance,
        )
        self.progress.begin("rank", 1)
        ranking = rank_items(
            emb,
            [(items[i].image_type, items[i].color) for i in live],
            [items[i].group_key or items[i].content_sha256 for i in live],
            np.asarray([items[i].status == repo.INCLUDED for i in live], dtype=bool),
            folds=self.settings.dataset_cv_folds,
        )
        self.progress.advance()
        tasks: dict[str, str] = {}
        for i, score in zip(live, ranking.scores, strict=True):
            if score is not None:
                tasks[items[i].content_sha256] = score.task
                # A candidate keeps its own place in the queue (candidates.py).
                items[i] = replace(
                    items[i],
                    suspicion=items[i].suspicion
                    if is_candidate(items[i].provenance)
                    else score.suspicion,
                    model_label=score.model_label,
                    model_confidence=score.model_confidence,
                )
        stats["ranking"] = {"backbone_id": self.embedder.backbone_id, **ranking.summary}
        scored = sorted(
            (items[i] for i in live if items[i].suspicion is not None),
            key=lambda item: -(item.suspicion or 0.0),
        )
        stats["top_suspicious"] = [
            {
                "content_sha256": item.content_sha256,
                "image_type": item.image_type,
                "color": item.color,
                "task": tasks.get(item.content_sha256),
                "model_label": item.model_label,
                "model_confidence": item.model_confidence,
                "suspicion": item.suspicion,
                "origin": item.provenance.get("path") or item.provenance.get("url"),
            }
            for item in scored[:TOP_SUSPICIOUS]
        ]
        return items


def existing_items(copied: Sequence[repo.NewItem]) -> list[Existing]:
    """The filters' view of items a version already holds (by their uncropped bytes)."""
    return [
        Existing(
            i,
            str(item.provenance.get("original_sha256") or item.content_sha256),
            item.phash,
            item.image_type,
            item.color,
            item.status,
        )
        for i, item in enumerate(copied)
    ]
