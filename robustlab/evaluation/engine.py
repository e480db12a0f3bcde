"""The evaluation engine: one streaming pass over the data that computes, and writes nothing.

Each decoded batch is scored clean and under every :class:`~robustlab.results.Variant` (an attack
or a corruption) that applies to it, so memory stays bounded whatever the set size and each image
is decoded once. Adversarial variants run on the attacked subset (``attack_fraction`` of the set,
stratified and seeded), corruptions on every image. Each variant gets a seeded generator per batch
(``[seed, variant index, batch number]``), so the same seed gives the same bytes.

Hooks (:data:`~robustlab.results.Hook`) receive a :class:`~robustlab.results.BatchRecord` for the
clean pass and for each variant's delivered batch (the adversarial PNG writer, the report's example
strip). The engine returns an :class:`~robustlab.results.EvaluationResult`; writing the run folder
is the reporting step's job (:func:`robustlab.reporting.runfolder.write_run_folder`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from robustlab.attacks.delivery import perturbation_norms
from robustlab.data import Dataset
from robustlab.detector.model import Detector
from robustlab.enums import SetKind
from robustlab.errors import RobustlabError
from robustlab.metrics import DEFAULT_BOOTSTRAP, MetricsRow, metrics_row, predict, row_from_correct
from robustlab.progress import batch_progress, set_variant_stage
from robustlab.results import BatchRecord, Delivery, EvaluationResult, Hook, RunInfo, SelectiveVariant, Variant, VariantOutcome
from robustlab.runs import versions
from robustlab.sampling import stratified_subset

Check = Callable[[EvaluationResult], list[str]]


def build_rows(
    y: np.ndarray,
    scores: np.ndarray,
    idx: np.ndarray,
    outcomes: Sequence[VariantOutcome],
    threshold: float,
    *,
    worst_case: bool,
    positive: str = "fake",
    bootstrap: int = 0,
    seed: int = 0,
) -> list[MetricsRow]:
    """Clean / adversarial / mixed / corrupted (/ worst-case) rows at ``threshold``.

    ``y`` int64 (N,) positive-class labels, ``scores`` float64 (N,), ``idx`` int64 (N,) image
    indices of the clean pass; ``outcomes`` what each variant produced; ``positive`` the
    detector's positive class (names real / fake accuracy); ``bootstrap`` resamples for every
    row's intervals (0: none), seeded with ``seed``.
    """
    opts = {"threshold": threshold, "positive": positive, "bootstrap": bootstrap, "seed": seed}
    rows = [metrics_row(y, scores, set=SetKind.CLEAN.value, **opts)]
    correct_all = predict(scores, threshold) == y
    pos_of = {int(i): k for k, i in enumerate(idx)}
    for o in outcomes:
        v = o.variant
        if o.n == 0:
            continue
        norms = {"linf": float(o.linf.mean()), "l2": float(o.l2.mean())}
        if v.kind is SetKind.ADVERSARIAL:
            rows.append(metrics_row(o.y, o.scores, set=SetKind.ADVERSARIAL.value, variant=v.variant, param=v.param, **norms, **opts))
            rows.append(metrics_row(np.concatenate([y, o.y]), np.concatenate([scores, o.scores]), set=SetKind.MIXED.value, variant=v.variant, param=v.param, **opts))
        else:
            rows.append(metrics_row(o.y, o.scores, set=str(v.kind), variant=v.variant, param=v.param, **norms, **opts))
        pos = np.asarray([pos_of[int(i)] for i in o.idx], dtype=np.int64)
        correct_all[pos] &= predict(o.scores, threshold) == o.y
    if worst_case:
        note = "right only if right clean and under every attack and corruption run on the image"
        rows.append(row_from_correct(correct_all, set=SetKind.WORST_CASE.value, variant="none", param="", note=note, y_true=y, **opts))
    return rows


@dataclass
class _Accumulator:
    """Per-image arrays of one variant as batches arrive (the engine's private state)."""

    variant: Variant
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, **arrays: np.ndarray) -> None:
        for name, a in arrays.items():
            self.parts.setdefault(name, []).append(np.asarray(a))

    def time(self, stages: "dict[str, float] | Any") -> None:
        for stage, t in dict(stages).items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + float(t)

    def outcome(self) -> VariantOutcome:
        def cat(name: str, dtype: Any) -> np.ndarray:
            parts = self.parts.get(name)
            return np.concatenate(parts).astype(dtype) if parts else np.zeros((0,), dtype)

        core = {"idx": np.int64, "y": np.int64, "clean_scores": np.float64, "scores": np.float64, "linf": np.float64, "l2": np.float64}
        extras = {name: np.concatenate(parts) for name, parts in self.parts.items() if name not in core}
        return VariantOutcome(self.variant, **{name: cat(name, dt) for name, dt in core.items()}, extras=extras, seconds=dict(self.seconds))


def _deliver(detector: Detector, v: Variant, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[Delivery, np.ndarray]:
    """Run one variant on one batch; checks what it returned; -> (delivery, scores of its images)."""
    d = v.apply(detector, x, y, rng)
    if not isinstance(d, Delivery):
        raise TypeError(f"variant {v.variant} returned {type(d).__name__}, expected robustlab.results.Delivery")
    images = np.asarray(d.images)
    if images.dtype != np.uint8 or images.shape != x.shape:
        raise TypeError(f"variant {v.variant} returned {images.dtype} {images.shape}, expected uint8 {x.shape}")
    scores = detector.scores(images) if d.scores is None else np.asarray(d.scores, np.float64)
    return d, scores


def _check_variants(variants: Sequence[Any]) -> tuple[Variant, ...]:
    out = tuple(variants)
    for v in out:
        if not isinstance(v, Variant):
            raise TypeError(f"{v!r} is not a robustlab.results.Variant (kind, variant, param, apply, diagnostics, summary)")
    return out


def attacked_subset(detector: Detector, data: Dataset, variants: Sequence[Variant], fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the images the adversarial variants run on (empty without attacks)."""
    if not any(v.kind is SetKind.ADVERSARIAL for v in variants):
        return np.zeros((0,), np.int64)
    return stratified_subset(data.labels_for(detector.positive), fraction, seed)


def _stream(detector: Detector, data: Dataset, variants: Sequence[Variant], subset: np.ndarray, *, seed: int, batch_size: int, progress: bool, hooks: Sequence[Hook]) -> tuple[_Accumulator, list[_Accumulator]]:
    """The one pass over the data: each batch scored clean, then through each variant that applies."""
    in_subset = np.zeros(len(data), dtype=bool)
    in_subset[subset] = True
    accs = [_Accumulator(v) for v in variants]
    clean = _Accumulator(None)  # type: ignore[arg-type]
    batches = data.batches(detector.input_size, method=detector.spec.preprocessing, batch_size=batch_size, positive=detector.positive)
    for bno, batch in enumerate(batch_progress(batches, len(data), f"evaluating {len(data)} images", progress)):
        if len(batch.idx) == 0:
            continue
        t = time.time()
        s_clean = detector.scores(batch.x)
        clean.time({"total": time.time() - t})
        clean.add(idx=batch.idx, y=batch.y, scores=s_clean)
        zeros = np.zeros(len(batch.idx))
        record = BatchRecord(None, batch.idx, batch.y, batch.x, batch.x, s_clean, zeros, zeros)
        for hook in hooks:
            hook(record)
        for vi, acc in enumerate(accs):
            v = acc.variant
            sel = in_subset[batch.idx] if v.kind is SetKind.ADVERSARIAL else np.ones(len(batch.idx), bool)
            if isinstance(v, SelectiveVariant):  # direction=evade / frame: fakes / real images only
                sel &= v.selects(data.labels[batch.idx])
            if not sel.any():
                continue
            set_variant_stage(v)
            t = time.time()
            x_in, y_in, idx_in = batch.x[sel], batch.y[sel], batch.idx[sel]
            d, s_v = _deliver(detector, v, x_in, y_in, np.random.default_rng([seed, vi, bno]))
            linf, l2 = perturbation_norms(x_in, d.images)
            acc.time({**d.seconds, "total": time.time() - t})
            acc.add(idx=idx_in, y=y_in, clean_scores=s_clean[sel], scores=s_v, linf=linf, l2=l2, **d.extras)
            record = BatchRecord(v, idx_in, y_in, x_in, d.images, s_v, linf, l2, dict(d.extras))
            for hook in hooks:
                hook(record)
    return clean, accs


def _run_info(
    detector: Detector,
    data: Dataset,
    variants: Sequence[Variant],
    outcomes: Sequence[VariantOutcome],
    attack_fraction: float | None,
    attacked: int,
    threshold: float,
    threshold_selection: Any,
    *,
    seed: int,
    batch_size: int,
    command: Sequence[str] | None,
    config: dict[str, Any] | None,
    detector_info: dict[str, Any] | None,
) -> RunInfo:
    return RunInfo(
        command=list(command) if command is not None else None,
        config=dict(config or {}),
        seed=seed,
        batch_size=batch_size,
        threshold=threshold,
        versions=versions(),
        detector=dict(detector_info) if detector_info is not None else detector.describe(),
        data=data.describe(),
        attack_fraction=attack_fraction,
        attacked=int(attacked),
        variants=[{"set": str(v.kind), "variant": v.variant, "param": v.param} for v in variants],
        attacks=[s for o in outcomes if o.variant.kind is SetKind.ADVERSARIAL and (s := o.variant.summary(o)) is not None] or None,
        threshold_selection=threshold_selection.to_info() if threshold_selection is not None else None,
    )


def evaluate_variants(
    detector: Detector,
    data: Dataset,
    *,
    variants: Sequence[Variant] = (),
    attack_fraction: float = 1.0,
    threshold: float | None = None,
    threshold_selection: Any = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    hooks: Sequence[Hook] = (),
    checks: Sequence[Check] = (),
    command: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
    detector_info: dict[str, Any] | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> EvaluationResult:
    """Score ``data`` clean and under each variant, in one streaming pass; nothing is written.

    ``threshold`` (default the detector's) decides every row; or ``threshold_selection`` (a
    :class:`robustlab.evaluation.selection.ThresholdSelection` picked on a separate validation
    set): its threshold is applied, the rows at the default threshold 0.5 are kept as
    ``reference_rows``, and picking on the evaluated images themselves is refused unless the
    selection was made with ``allow_same_data``. ``hooks`` get every batch record; ``checks`` get
    the finished result and return diagnostics (printed on stderr and kept in the result).
    ``command``, ``config`` and ``detector_info`` (default ``detector.describe()``) go to run.json.
    ``bootstrap``: resamples for every row's 95% intervals (seeded with ``seed``; 0: none).
    """
    t0 = time.time()
    variants = _check_variants(variants)
    if threshold_selection is not None:
        if threshold is not None and float(threshold) != threshold_selection.threshold:
            raise ValueError("give either threshold or threshold_selection, not both")
        threshold = threshold_selection.threshold
        threshold_selection.against(data)
    threshold = detector.threshold if threshold is None else float(threshold)
    subset = attacked_subset(detector, data, variants, attack_fraction, seed)
    clean, accs = _stream(detector, data, variants, subset, seed=seed, batch_size=batch_size, progress=progress, hooks=hooks)
    base = clean.outcome()
    if base.n == 0:
        raise RobustlabError("no image could be read", thing=data.root, fix="check the files (see the skipped list above)")
    outcomes = tuple(a.outcome() for a in accs)
    row_opts = {"worst_case": bool(variants), "positive": detector.positive, "bootstrap": int(bootstrap), "seed": seed}
    rows = build_rows(base.y, base.scores, base.idx, outcomes, threshold, **row_opts)
    reference_rows: list[MetricsRow] = []
    if threshold_selection is not None:
        from robustlab.evaluation.thresholds import DEFAULT_THRESHOLD

        if threshold != DEFAULT_THRESHOLD:
            reference_rows = build_rows(base.y, base.scores, base.idx, outcomes, DEFAULT_THRESHOLD, **row_opts)
    info = _run_info(detector, data, variants, outcomes, attack_fraction if len(subset) else None, len(subset), threshold, threshold_selection, seed=seed, batch_size=batch_size, command=command, config=config, detector_info=detector_info)
    result = EvaluationResult(rows, info, base.idx, base.y, base.scores, outcomes, [], reference_rows, threshold_selection)
    diagnostics = [d for o in outcomes if o.n for d in o.variant.diagnostics(o, threshold)]
    for check in checks:
        diagnostics.extend(check(result))
    for d in diagnostics:
        print(f"robustlab: warning: {d}", file=sys.stderr)
    timings = {
        "total_seconds": round(time.time() - t0, 3),
        "clean_scoring_seconds": round(clean.seconds.get("total", 0.0), 3),
        "variants_seconds": {o.key: round(o.seconds.get("total", 0.0), 3) for o in outcomes},
        "images_per_second_clean": round(base.n / clean.seconds["total"], 2) if clean.seconds.get("total") else None,
    }
    return replace(result, diagnostics=list(diagnostics), info=replace(info, diagnostics=list(diagnostics), timings=timings))
