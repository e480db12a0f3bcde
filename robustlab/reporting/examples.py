"""A few example images per variant, saved into ``RUN/examples/`` for the report's image strip.

:func:`robustlab.evaluation.engine.evaluate` picks ``per_class`` images of each class before the pass (from
the attacked subset when there are attacks, so every variant has them), and while it streams it
keeps those images: clean, each variant's delivered image and, for attacks, the perturbation
magnified. Memory: ``2 * per_class * (1 + variants)`` images. ``examples/index.json``::

    {"threshold": 0.5, "positive": "fake",
     "images": [{"id": 3, "path": "fake/x.png", "label": 1, "label_name": "fake",
                 "clean": {"file": "3_clean.png", "score": 0.93, "correct": true},
                 "variants": [{"set": "adversarial", "variant": "fgsm", "param": "eps=0.0314",
                               "file": "3_fgsm_eps=0.0314.png", "score": 0.12, "correct": false,
                               "linf": 8.0, "perturbation": "3_fgsm_eps=0.0314_diff.png",
                               "magnify": 15.9}]}]}

Scores are P(positive); ``correct`` applies the run's threshold; ``linf`` is in /255 units.

The collector also keeps small thumbnails (:data:`THUMB_SIDE` px) for the report's lists of
misclassified and flipped images, under ``examples/thumbs/`` and listed in ``index.json`` as
``"thumbs": [{"id", "path", "set", "variant", "param", "file"}]``. The threshold is not known while
the pass streams, so it keeps candidates: the :data:`LISTED` lowest-scored images of label 1 and
highest-scored of label 0 on the clean pass (exactly the most confident mistakes at any threshold),
and the :data:`FLIP_POOL` largest score moves towards the wrong class under any variant per class
(the flips with the largest change, unless more than that many images moved further without
flipping). :meth:`ExampleCollector.write` keeps those that are wrong / flipped at the run's threshold.
Memory: ``2 * (LISTED + FLIP_POOL)`` thumbnails.
"""
from __future__ import annotations

import heapq
import io
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from robustlab.results import BatchRecord

INDEX = "examples/index.json"
THUMB_SIDE = 64  # px, longest side of a list thumbnail
LISTED = 20  # the report lists up to this many misclassified / flipped images
FLIP_POOL = 64  # flip candidates kept per class


def pick_examples(labels: np.ndarray, eligible: np.ndarray | None, per_class: int = 1) -> np.ndarray:
    """Sorted image indices: the first ``per_class`` eligible images of each class (real, then fake).

    ``labels`` int (N,) positive-class labels; ``eligible`` bool (N,) or None (all eligible).
    """
    labels = np.asarray(labels)
    ok = np.ones(len(labels), bool) if eligible is None else np.asarray(eligible, bool)
    chosen = [np.flatnonzero(ok & (labels == c))[:per_class] for c in (0, 1)]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros((0,), np.int64)


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3) with ``max(h, w) <= side`` (area-averaged; small images kept)."""
    if max(image.shape[:2]) <= side:
        return np.array(image)
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image))
    im.thumbnail((side, side), Image.Resampling.BOX)
    return np.asarray(im)


def magnified_perturbation(clean: np.ndarray, delivered: np.ndarray) -> tuple[np.ndarray, float]:
    """``(uint8 (H, W, 3), factor)``: 128 + factor * (delivered - clean), factor so the largest change
    reaches the edge of the range (mid grey = no change)."""
    d = delivered.astype(np.int16) - clean.astype(np.int16)
    peak = int(np.abs(d).max()) if d.size else 0
    factor = 127.0 / peak if peak else 1.0
    return np.clip(np.round(128.0 + factor * d), 0, 255).astype(np.uint8), factor


@dataclass
class ExampleCollector:
    """Keeps the chosen images as the evaluation streams; :meth:`write` saves them."""

    ids: np.ndarray
    clean: dict[int, tuple[np.ndarray, float, int]] = field(default_factory=dict)  # id -> (image, score, label)
    variants: dict[int, list[tuple[Any, np.ndarray, float]]] = field(default_factory=dict)  # id -> [(variant, delivered, score)]
    # per class: min-heaps of (key, tiebreak, id, label, variant or None, score, clean score, thumbnail uint8 (h, w, 3))
    wrong: tuple[list, list] = field(default_factory=lambda: ([], []))
    moved: tuple[list, list] = field(default_factory=lambda: ([], []))
    clean_scores: dict[int, float] = field(default_factory=dict)
    _seq: int = 0

    def _mask(self, idx: np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(idx), self.ids)

    def _offer(self, heap: list, size: int, keys: np.ndarray, record: BatchRecord, clean_scores: np.ndarray) -> None:
        """Push the batch images whose ``keys`` (float (B,)) beat the heap's smallest, with a thumbnail."""
        floor = heap[0][0] if len(heap) >= size else -np.inf
        for k in np.flatnonzero(keys > floor):
            item = (float(keys[k]), self._seq, int(record.idx[k]), int(record.y[k]), record.variant, float(record.scores[k]), float(clean_scores[k]), thumbnail(record.images[k]))
            self._seq += 1
            if len(heap) < size:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)

    def _track(self, record: BatchRecord) -> None:
        y = np.asarray(record.y)
        s = np.asarray(record.scores, dtype=np.float64)
        toward_wrong = np.where(y == 1, -s, s)  # a fake scored low / a real scored high
        if record.variant is None:
            self.clean_scores.update(zip(record.idx.tolist(), s.tolist()))
            for c in (0, 1):
                m = y == c
                if m.any():
                    self._offer(self.wrong[c], LISTED, np.where(m, toward_wrong, -np.inf), record, s)
            return
        clean = np.array([self.clean_scores.get(int(i), np.nan) for i in record.idx])
        move = np.where(y == 1, clean - s, s - clean)
        for c in (0, 1):
            m = (y == c) & np.isfinite(move) & (move > 0)
            if m.any():
                self._offer(self.moved[c], FLIP_POOL, np.where(m, move, -np.inf), record, clean)

    def __call__(self, record: BatchRecord) -> None:
        """An evaluation hook: keep the chosen images of a clean or delivered batch, and list candidates."""
        self._track(record)
        mask = self._mask(record.idx)
        for k in np.flatnonzero(mask):
            i = int(record.idx[k])
            if record.variant is None:
                self.clean[i] = (np.array(record.images[k]), float(record.scores[k]), int(record.y[k]))
            else:
                self.variants.setdefault(i, []).append((record.variant, np.array(record.images[k]), float(record.scores[k])))

    def write(self, folder: Any, *, threshold: float, paths: Sequence[str], positive: str = "fake") -> None:
        """PNGs and ``examples/index.json`` into a :class:`robustlab.runs.RunFolder` (nothing when empty)."""
        from robustlab.reporting.tables import slug
        from robustlab.runs import atomic_write_bytes

        if not self.clean:
            return
        negative = "real" if positive == "fake" else "fake"
        images = []
        for i in sorted(self.clean):
            img, score, label = self.clean[i]
            entry: dict[str, Any] = {
                "id": i,
                "path": str(paths[i]),
                "label": label,
                "label_name": positive if label == 1 else negative,
                "clean": {"file": f"{i}_clean.png", "score": score, "correct": bool((score >= threshold) == bool(label))},
                "variants": [],
            }
            atomic_write_bytes(folder.path(f"examples/{i}_clean.png"), png_bytes(img))
            for v, delivered, s in self.variants.get(i, []):
                name = slug(f"{i}_{v.variant}_{v.param}")
                ve: dict[str, Any] = {
                    "set": str(v.kind),
                    "variant": v.variant,
                    "param": v.param,
                    "file": f"{name}.png",
                    "score": s,
                    "correct": bool((s >= threshold) == bool(label)),
                    "linf": float(np.abs(delivered.astype(np.int16) - img.astype(np.int16)).max()),
                }
                atomic_write_bytes(folder.path(f"examples/{name}.png"), png_bytes(delivered))
                if str(v.kind) == "adversarial":
                    diff, factor = magnified_perturbation(img, delivered)
                    ve["perturbation"] = f"{name}_diff.png"
                    ve["magnify"] = round(factor, 3)
                    atomic_write_bytes(folder.path(f"examples/{name}_diff.png"), png_bytes(diff))
                entry["variants"].append(ve)
            images.append(entry)
        folder.write_json(INDEX, {"threshold": threshold, "positive": positive, "images": images, "thumbs": self._write_thumbs(folder, threshold, paths)})

    def _write_thumbs(self, folder: Any, threshold: float, paths: Sequence[str]) -> list[dict[str, Any]]:
        """The list thumbnails that are wrong (clean) / flipped (variants) at ``threshold``."""
        from robustlab.reporting.tables import slug
        from robustlab.runs import atomic_write_bytes

        out = []
        for heap in (*self.wrong, *self.moved):
            for _, _, i, y, v, score, clean, thumb in sorted(heap, reverse=True):
                wrong = (score >= threshold) != bool(y)
                right_clean = (clean >= threshold) == bool(y)
                if not wrong or (v is not None and not right_clean):
                    continue
                name = f"{i}_clean" if v is None else slug(f"{i}_{v.variant}_{v.param}")
                atomic_write_bytes(folder.path(f"examples/thumbs/{name}.png"), png_bytes(thumb))
                out.append({"id": i, "path": str(paths[i]), "set": "clean" if v is None else str(v.kind), "variant": "none" if v is None else v.variant, "param": "" if v is None else v.param, "file": f"thumbs/{name}.png"})
        return out
