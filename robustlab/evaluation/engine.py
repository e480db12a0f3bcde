"""The whole robustness evaluation of one detector on one data set, into one run folder.

One streaming pass over the data: each decoded batch is scored clean and under every *variant*
(an attack or a corruption) that applies to it, so memory stays bounded whatever the set size and
each image is decoded once.

A variant is any object with

* ``kind``: :class:`~robustlab.enums.SetKind` ``ADVERSARIAL`` (applied to the attacked subset,
  ``attack_fraction`` of the set, stratified and seeded) or ``CORRUPTED`` (applied to every image);
* ``variant`` (``"fgsm"``, ``"jpeg"``...) and ``param`` (``"eps=0.0314"``, ``"severity=3"``) strings;
* ``apply(detector, x, y, rng) -> uint8 (B, H, W, 3)``: the delivered images for a batch
  (``x`` uint8 (B, H, W, 3), ``y`` int64 (B,) positive-class labels, ``rng`` a seeded
  ``numpy.random.Generator`` for this variant and batch);
* optionally ``diagnostics(stats, rows) -> list[str]``: warnings about a broken evaluation;
* optionally ``delivered_scores(images) -> float64 (B,) | None``: the scores the variant already
  computed for exactly the images ``apply`` just returned (an attack's success check), so they are
  not computed twice; ``None`` means "score them".
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from robustlab.attacks.delivery import perturbation_norms
from robustlab.data import Dataset
from robustlab.detector.model import Detector
from robustlab.enums import SetKind
from robustlab.metrics import (
    MetricsRow,
    metrics_row,
    predict,
    row_from_correct,
)
from robustlab.progress import batch_progress
from robustlab.reporting.runfolder import write_run
from robustlab.runs import RunFolder, versions
from robustlab.sampling import stratified_subset


class Variant(Protocol):
    kind: SetKind
    variant: str
    param: str

    def apply(self, detector: Detector, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@dataclass
class VariantStats:
    """What one variant produced over the whole set (positive-class labels)."""

    variant: Any
    idx: list[np.ndarray] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)
    clean_scores: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    linf: list[np.ndarray] = field(default_factory=list)  # /255 units, per image
    l2: list[np.ndarray] = field(default_factory=list)  # /255 units, per image
    seconds: float = 0.0

    def arrays(self) -> dict[str, np.ndarray]:
        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros((0,), dtype)

        return {
            "idx": cat(self.idx, np.int64),
            "y": cat(self.y, np.int64),
            "clean_scores": cat(self.clean_scores, np.float64),
            "scores": cat(self.scores, np.float64),
            "linf": cat(self.linf, np.float64),
            "l2": cat(self.l2, np.float64),
        }


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns: the rows, the run folder and the per-image arrays."""

    rows: list[MetricsRow]
    run_dir: Path | None
    info: dict[str, Any]
    idx: np.ndarray
    y: np.ndarray
    scores: np.ndarray
    variant_stats: list[VariantStats]
    diagnostics: list[str]
    reference_rows: list[MetricsRow] = field(default_factory=list)  # at the default threshold, when a threshold was picked on validation data
    threshold_selection: Any = None  # robustlab.evaluation.selection.ThresholdSelection, when one was given

    def row(self, key: str) -> MetricsRow:
        for r in self.rows:
            if r.key == key or r.set == key:
                return r
        raise KeyError(key)


def build_rows(y: np.ndarray, scores: np.ndarray, idx: np.ndarray, stats: Sequence[VariantStats], threshold: float, *, worst_case: bool) -> list[MetricsRow]:
    """Clean / adversarial / mixed / corrupted (/ worst-case) rows at ``threshold``.

    ``y`` int64 (N,) positive-class labels, ``scores`` float64 (N,), ``idx`` int64 (N,) image
    indices of the clean pass; ``stats`` what each variant produced.
    """
    rows = [metrics_row(y, scores, threshold=threshold, set=SetKind.CLEAN.value)]
    correct_all = predict(scores, threshold) == y
    pos_of = {int(i): k for k, i in enumerate(idx)}
    for st in stats:
        a = st.arrays()
        v = st.variant
        if len(a["idx"]) == 0:
            continue
        linf_mean = float(a["linf"].mean())
        l2_mean = float(a["l2"].mean())
        if v.kind is SetKind.ADVERSARIAL:
            rows.append(metrics_row(a["y"], a["scores"], threshold=threshold, set=SetKind.ADVERSARIAL.value, variant=v.variant, param=v.param, linf=linf_mean, l2=l2_mean))
            rows.append(
                metrics_row(
                    np.concatenate([y, a["y"]]),
                    np.concatenate([scores, a["scores"]]),
                    threshold=threshold,
                    set=SetKind.MIXED.value,
                    variant=v.variant,
                    param=v.param,
                )
            )
        else:
            rows.append(metrics_row(a["y"], a["scores"], threshold=threshold, set=str(v.kind), variant=v.variant, param=v.param, linf=linf_mean, l2=l2_mean))
        pos = np.asarray([pos_of[int(i)] for i in a["idx"]], dtype=np.int64)
        correct_all[pos] &= predict(a["scores"], threshold) == a["y"]
    if worst_case:
        rows.append(
            row_from_correct(
                correct_all,
                set=SetKind.WORST_CASE.value,
                variant="none",
                param="",
                threshold=threshold,
                note="right only if right clean and under every attack and corruption run on the image",
            )
        )
    return rows


def evaluate(
    detector: Detector,
    data: Dataset,
    *,
    out: "str | Path | None" = None,
    variants: Sequence[Any] = (),
    attack_fraction: float = 1.0,
    threshold: float | None = None,
    seed: int = 0,
    batch_size: int = 32,
    force: bool = False,
    progress: bool = False,
    command: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
    on_delivered: Callable[[Any, np.ndarray, np.ndarray], None] | None = None,
    checks: Sequence[Callable[["EvaluationResult"], list[str]]] = (),
    run_folder: RunFolder | None = None,
    extra_info: dict[str, Any] | None = None,
    max_curve_sets: int = 8,
    threshold_selection: Any = None,
) -> EvaluationResult:
    """Score ``data`` clean and under each variant; write the run folder ``out`` (if given).

    ``on_delivered(variant, idx, images)`` is called with each variant's delivered uint8 images
    (e.g. to save adversarial PNGs). ``checks`` get the finished result and return diagnostics.
    Returns an :class:`EvaluationResult`; the rows are also in ``out/metrics.json``.

    ``threshold_selection`` (a :class:`robustlab.evaluation.selection.ThresholdSelection`, picked on a
    separate validation set): its threshold is applied to every set; the rows at the default
    threshold (0.5) are kept as ``reference_rows``; picking on the evaluated images themselves is
    refused unless the selection was made with ``allow_same_data``.
    """
    t0 = time.time()
    if threshold_selection is not None:
        if threshold is not None and float(threshold) != threshold_selection.threshold:
            raise ValueError("give either threshold or threshold_selection, not both")
        threshold = threshold_selection.threshold
        threshold_selection.against(data)
    threshold = detector.threshold if threshold is None else float(threshold)
    folder = run_folder
    if folder is None and out is not None:
        folder = RunFolder(out, force=force, inputs=(detector, data, threshold_selection))
    try:
        positive_is_fake = detector.positive == "fake"
        y_all = data.labels if positive_is_fake else 1 - data.labels
        subset = stratified_subset(y_all, attack_fraction, seed) if any(v.kind is SetKind.ADVERSARIAL for v in variants) else np.zeros((0,), np.int64)
        in_subset = np.zeros(len(data), dtype=bool)
        in_subset[subset] = True
        stats = [VariantStats(v) for v in variants]
        from robustlab.reporting.examples import (  # images for the report's strip
            ExampleCollector,
            pick_examples,
        )

        examples = ExampleCollector(pick_examples(y_all, in_subset if len(subset) else None))
        idx_parts, y_parts, s_parts = [], [], []
        t_clean = 0.0
        batches = data.batches(detector.input_size, method=detector.spec.resize, batch_size=batch_size)
        for bno, batch in enumerate(batch_progress(batches, len(data), f"evaluating {len(data)} images", progress)):
            if len(batch.idx) == 0:
                continue
            y = batch.y if positive_is_fake else 1 - batch.y
            t = time.time()
            s_clean = detector.scores(batch.x)
            t_clean += time.time() - t
            examples.add_clean(batch.idx, batch.x, y, s_clean)
            idx_parts.append(batch.idx)
            y_parts.append(y)
            s_parts.append(s_clean)
            for vi, (v, st) in enumerate(zip(variants, stats)):
                sel = in_subset[batch.idx] if v.kind is SetKind.ADVERSARIAL else np.ones(len(batch.idx), bool)
                if not sel.any():
                    continue
                t = time.time()
                rng = np.random.default_rng([seed, vi, bno])
                x_in = batch.x[sel]
                delivered = np.asarray(v.apply(detector, x_in, y[sel], rng))
                if delivered.dtype != np.uint8 or delivered.shape != x_in.shape:
                    raise TypeError(f"variant {v.variant} returned {delivered.dtype} {delivered.shape}, expected uint8 {x_in.shape}")
                known = getattr(v, "delivered_scores", None)  # an attack already scored them (success check)
                s_v = known(delivered) if known is not None else None
                s_v = detector.scores(delivered) if s_v is None else np.asarray(s_v, np.float64)
                st.seconds += time.time() - t
                examples.add_variant(v, batch.idx[sel], delivered, s_v)
                linf, l2 = perturbation_norms(x_in, delivered)
                st.idx.append(batch.idx[sel])
                st.y.append(y[sel])
                st.clean_scores.append(s_clean[sel])
                st.scores.append(s_v)
                st.linf.append(linf)
                st.l2.append(l2)
                if on_delivered is not None:
                    on_delivered(v, batch.idx[sel], delivered)
        idx = np.concatenate(idx_parts) if idx_parts else np.zeros((0,), np.int64)
        y = np.concatenate(y_parts) if y_parts else np.zeros((0,), np.int64)
        scores = np.concatenate(s_parts) if s_parts else np.zeros((0,), np.float64)
        if len(idx) == 0:
            from robustlab.errors import RobustlabError

            raise RobustlabError("no image could be read", thing=data.root, fix="check the files (see the skipped list above)")

        rows = build_rows(y, scores, idx, stats, threshold, worst_case=bool(variants))
        reference_rows: list[MetricsRow] = []
        if threshold_selection is not None:
            from robustlab.evaluation.thresholds import DEFAULT_THRESHOLD

            if threshold != DEFAULT_THRESHOLD:
                reference_rows = build_rows(y, scores, idx, stats, DEFAULT_THRESHOLD, worst_case=bool(variants))
        info: dict[str, Any] = {
            "command": list(command) if command is not None else None,
            "config": config or {},
            "seed": seed,
            "batch_size": batch_size,
            "threshold": threshold,
            "versions": versions(),
            "detector": detector.describe(),
            "data": data.describe(),
            "attack_fraction": attack_fraction if len(subset) else None,
            "attacked": int(len(subset)),
            "variants": [{"set": str(v.kind), "variant": v.variant, "param": v.param} for v in variants],
        }
        if any(r.set == SetKind.CORRUPTED.value for r in rows):
            from robustlab.reporting.tables import corruption_summary

            info["corruption_summary"] = corruption_summary(rows)
        if threshold_selection is not None:
            info["threshold_selection"] = threshold_selection.to_info()
        result = EvaluationResult(rows, None, info, idx, y, scores, stats, [], reference_rows, threshold_selection)
        diagnostics: list[str] = []
        for st in stats:
            fn = getattr(st.variant, "diagnostics", None)
            if fn is not None and st.idx:
                diagnostics.extend(fn(st, rows))
        for check in checks:
            diagnostics.extend(check(result))
        for d in diagnostics:
            print(f"robustlab: warning: {d}", file=sys.stderr)
        result.diagnostics = diagnostics
        info["diagnostics"] = diagnostics
        info["timings"] = {
            "total_seconds": round(time.time() - t0, 3),
            "clean_scoring_seconds": round(t_clean, 3),
            "variants_seconds": {f"{st.variant.variant}[{st.variant.param}]": round(st.seconds, 3) for st in stats},
            "images_per_second_clean": round(len(idx) / t_clean, 2) if t_clean > 0 else None,
        }
        if extra_info:
            info.update(extra_info)
        if folder is not None:
            write_run(folder, result, data, max_curve_sets=max_curve_sets)
            examples.write(folder, threshold=threshold, paths=data.paths, positive=detector.positive)
            from robustlab.reporting.publish import write_run_html

            write_run_html(folder.dir, info, final=folder.final)  # report.html, from the files just written
            result.run_dir = folder.commit(info)
        return result
    except BaseException:
        if folder is not None and run_folder is None:
            folder.abort()
        raise
