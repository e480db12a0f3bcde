"""Decision thresholds picked on a validation set's precision-recall / ROC curve.

A sample is predicted positive (fake, unless the detector says ``positive: real``) when
``score >= threshold``, everywhere in robustlab.

Strategies (:func:`parse_strategy` turns the user's string into a :class:`Strategy`):

* ``max-f1``: the threshold at the F1 maximum of the precision-recall curve;
* ``precision:P``: the highest recall whose precision is at least ``P`` (few real images called
  fake: for teams where a false accusation is the costly error);
* ``recall:R``: the highest precision whose recall is at least ``R`` (few fakes let through: for
  teams where a missed fake is the costly error);
* ``youden``: the maximum of Youden's J = TPR - FPR on the ROC curve;
* ``fixed:T``: ``T`` itself (its precision / recall / F1 on the validation set are reported).

Candidates, ties and plateaus (the documented rule):

1. The candidate thresholds are the distinct validation scores, exactly the ``thresholds`` of
   scikit-learn's ``precision_recall_curve`` (scores are in [0, 1], so a threshold always is).
   Every threshold in ``(next lower score, candidate]`` gives the same validation predictions
   (a *plateau*); robustlab picks the candidate itself, the top of its plateau, and reports the
   plateau as ``plateau_low`` (exclusive) .. ``threshold`` (inclusive).
2. Among candidates with the same value of the objective, the one with the better value of the
   other metric of the pair wins (``precision:P``: higher precision; ``recall:R``: higher recall);
   remaining ties go to the **higher threshold** (fewer images called fake).
3. Objectives are compared exactly: F1 as ``2TP / (2TP + FP + FN)``, J as the integer
   ``TP*N - FP*P`` over ``P*N``, precision and recall as ratios of counts (equal ratios of
   integers are equal floats).

Bad input (one class in the validation set, a target no threshold reaches, an unknown strategy)
raises :class:`~robustlab.errors.RobustlabError` (exit code 2 at the CLI);
:class:`ThresholdUnreachable` carries the best reachable point.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from robustlab.enums import StrEnum
from robustlab.errors import RobustlabError

if TYPE_CHECKING:  # pragma: no cover
    pass

DEFAULT_THRESHOLD = 0.5  # the uncalibrated reading of P(fake) that metrics.md compares against
STRATEGY_HELP = "max-f1 | precision:P | recall:R | youden | fixed:T (P, R, T in [0, 1], e.g. precision:0.95)"


class StrategyKind(StrEnum):
    MAX_F1 = "max-f1"
    PRECISION = "precision"
    RECALL = "recall"
    YOUDEN = "youden"
    FIXED = "fixed"


_NEEDS_VALUE = (StrategyKind.PRECISION, StrategyKind.RECALL, StrategyKind.FIXED)


@dataclass(frozen=True)
class Strategy:
    """A parsed strategy: ``kind`` and, for ``precision`` / ``recall`` / ``fixed``, ``value``."""

    kind: StrategyKind
    value: float | None = None

    def __str__(self) -> str:
        return str(self.kind) if self.value is None else f"{self.kind}:{self.value:g}"


def parse_strategy(text: "str | Strategy") -> Strategy:
    """``"max-f1"``, ``"precision:0.95"``, ``"recall:9/10"``, ``"youden"``, ``"fixed:0.4"`` -> Strategy.

    Raises a one-line :class:`RobustlabError` for anything else.
    """
    if isinstance(text, Strategy):
        return text
    raw = str(text).strip()
    name, sep, value_text = raw.partition(":")
    name = name.strip().lower().replace("_", "-")
    if name in ("maxf1", "f1"):
        name = "max-f1"
    kinds = {k.value: k for k in StrategyKind}
    if name not in kinds:
        raise RobustlabError(f"unknown threshold strategy {raw!r}", fix=f"use one of: {STRATEGY_HELP}")
    kind = kinds[name]
    if kind in _NEEDS_VALUE:
        if not sep or not value_text.strip():
            raise RobustlabError(f"threshold strategy {raw!r} needs a value", fix=f"write e.g. {kind}:0.95")
        from robustlab.metrics import parse_fraction

        try:
            value = parse_fraction(value_text.strip(), what=f"{kind} value")
        except ValueError:
            raise RobustlabError(f"threshold strategy {raw!r}: {value_text.strip()!r} is not a number", fix=f"write e.g. {kind}:0.95") from None
        low_ok = value >= 0.0 if kind is StrategyKind.FIXED else value > 0.0
        if not (low_ok and value <= 1.0) or math.isnan(value):
            rng = "[0, 1]" if kind is StrategyKind.FIXED else "(0, 1]"
            raise RobustlabError(f"threshold strategy {raw!r}: {value:g} is outside {rng}", fix=f"write e.g. {kind}:0.95")
        return Strategy(kind, float(value))
    if sep:
        raise RobustlabError(f"threshold strategy {raw!r} takes no value", fix=f"write just {kind}")
    return Strategy(kind)


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and what it gives on the validation set it was picked on.

    ``precision`` / ``f1`` are ``None`` only for ``fixed:T`` when nothing scores ``>= T``.
    ``plateau_low``: the next lower distinct validation score (exclusive; ``None`` when the
    threshold is the lowest score): any threshold in ``(plateau_low, threshold]`` gives the same
    validation predictions. ``candidates``: the number of distinct validation scores.
    """

    threshold: float
    strategy: str
    precision: float | None
    recall: float
    f1: float | None
    accuracy: float
    fpr: float
    youden: float
    tp: int
    fp: int
    tn: int
    fn: int
    n: int
    plateau_low: float | None
    candidates: int
    target: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ThresholdUnreachable(RobustlabError):
    """No candidate threshold reaches a ``precision:P`` / ``recall:R`` target; ``best`` is the
    candidate that comes closest (the highest precision, or the highest recall)."""

    def __init__(self, problem: str, *, best: ThresholdChoice, thing: "str | Path | None" = None, fix: str | None = None):
        self.best = best
        super().__init__(problem, thing=thing, fix=fix)


@dataclass(frozen=True)
class Curve:
    """Counts at every candidate threshold, highest threshold first (scikit-learn's
    ``_binary_clf_curve``): predicted positive = ``score >= thresholds[k]``.

    All arrays are (K,): ``thresholds`` float64 (descending), ``tp`` / ``fp`` int64 (cumulative).
    ``pos`` / ``neg``: positives / negatives in the set.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    pos: int
    neg: int


def _check_inputs(y_true: Any, y_score: Any, thing: "str | Path | None") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.shape[0]} labels, y_score {s.shape[0]} scores")
    if len(y) == 0:
        raise RobustlabError("the validation set is empty", thing=thing, fix="give a validation set with real and fake images")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be 0/1 labels")
    if not np.isfinite(s).all():
        raise RobustlabError(f"{int((~np.isfinite(s)).sum())} validation score(s) are NaN or infinite", thing=thing, fix="check the detector's output")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        have = "positive" if n_pos else "negative"
        raise RobustlabError(
            f"the validation set has one class only ({len(y)} {have} images)",
            thing=thing,
            fix="a threshold needs real and fake validation images",
        )
    return y, s


def curve(y_true: Any, y_score: Any, *, thing: "str | Path | None" = None) -> Curve:
    """Cumulative TP / FP at every distinct score, highest first (see :class:`Curve`).

    ``y_true``: (N,) 0/1 labels (1 = positive class); ``y_score``: (N,) float scores.
    """
    y, s = _check_inputs(y_true, y_score, thing)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last_of_run].astype(np.int64)
    fp = (last_of_run + 1 - tp).astype(np.int64)
    return Curve(s_sorted[last_of_run], tp, fp, int(tp[-1]), int(fp[-1]))


def _choice_at(c: Curve, k: int, strategy: str, target: float | None) -> ThresholdChoice:
    tp, fp = int(c.tp[k]), int(c.fp[k])
    fn, tn = c.pos - tp, c.neg - fp
    n = c.pos + c.neg
    recall = tp / c.pos
    fpr = fp / c.neg
    return ThresholdChoice(
        threshold=float(c.thresholds[k]),
        strategy=strategy,
        precision=tp / (tp + fp),
        recall=recall,
        f1=2 * tp / (2 * tp + fp + fn),
        accuracy=(tp + tn) / n,
        fpr=fpr,
        youden=recall - fpr,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        n=n,
        plateau_low=float(c.thresholds[k + 1]) if k + 1 < len(c.thresholds) else None,
        candidates=len(c.thresholds),
        target=target,
    )


def _choice_fixed(y: np.ndarray, s: np.ndarray, t: float, strategy: str, candidates: int) -> ThresholdChoice:
    pred = s >= t
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    pos = int(y.sum())
    neg = len(y) - pos
    fn, tn = pos - tp, neg - fp
    below = s[s < t]
    recall = tp / pos
    fpr = fp / neg
    return ThresholdChoice(
        threshold=float(t),
        strategy=strategy,
        precision=tp / (tp + fp) if tp + fp else None,
        recall=recall,
        f1=2 * tp / (2 * tp + fp + fn) if tp + fp else None,
        accuracy=(tp + tn) / len(y),
        fpr=fpr,
        youden=recall - fpr,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        n=len(y),
        plateau_low=float(below.max()) if len(below) else None,
        candidates=candidates,
        target=float(t),
    )


def _best(primary: np.ndarray, secondary: np.ndarray | None, thresholds: np.ndarray, mask: np.ndarray | None = None) -> int:
    """Index of the best candidate (within ``mask``): max primary, then max secondary, then the
    highest threshold (``thresholds`` are descending, so the first index left). O(K), no sort."""
    cand = np.ones(len(thresholds), bool) if mask is None else mask.copy()
    for key in (primary, secondary):
        if key is not None:
            cand &= key == key[cand].max()
    return int(np.argmax(cand))


def pick_threshold(y_true: Any, y_score: Any, strategy: "str | Strategy", *, thing: "str | Path | None" = None) -> ThresholdChoice:
    """Pick a threshold on validation labels and scores with ``strategy`` (see the module doc).

    ``y_true``: (N,) 0/1 int labels, 1 = the positive class (fake unless the detector says
    ``positive: real``); ``y_score``: (N,) float64 P(positive). ``thing`` names the validation
    set in error messages. Returns a :class:`ThresholdChoice`; ``score >= threshold`` is positive.
    """
    strat = parse_strategy(strategy)
    if strat.kind is StrategyKind.FIXED:
        y, s = _check_inputs(y_true, y_score, thing)
        return _choice_fixed(y, s, float(strat.value), str(strat), len(np.unique(s)))  # type: ignore[arg-type]
    c = curve(y_true, y_score, thing=thing)
    return _choice_at(c, _pick_index(c, strat, thing), str(strat), strat.value)


def _pick_index(c: Curve, strat: Strategy, thing: "str | Path | None") -> int:
    """Index into ``c`` of the candidate ``strat`` picks (not FIXED); ThresholdUnreachable if none."""
    th, tp, fp = c.thresholds, c.tp, c.fp
    fn = c.pos - tp
    precision = tp / (tp + fp)
    recall = tp / c.pos
    if strat.kind is StrategyKind.MAX_F1:
        return _best(2 * tp / (2 * tp + fp + fn), None, th)
    if strat.kind is StrategyKind.YOUDEN:
        return _best(tp * c.neg - fp * c.pos, None, th)
    if strat.kind is StrategyKind.PRECISION:
        ok = precision >= strat.value
        if not ok.any():
            best = _choice_at(c, _best(precision, recall, th), str(strat), strat.value)
            raise ThresholdUnreachable(
                f"no threshold reaches precision >= {strat.value:g} on the validation set; the best reachable is precision {best.precision:.4f} (recall {best.recall:.4f}) at threshold {best.threshold:.6g}",
                best=best,
                thing=thing,
                fix=f"ask for precision:{math.floor(best.precision * 1000) / 1000:g} or less, or use max-f1",  # type: ignore[operator]
            )
        return _best(recall, precision, th, ok)
    if strat.kind is StrategyKind.RECALL:
        ok = recall >= strat.value
        if not ok.any():  # the lowest candidate has recall 1, so only a target above 1 gets here
            best = _choice_at(c, _best(recall, precision, th), str(strat), strat.value)
            raise ThresholdUnreachable(
                f"no threshold reaches recall >= {strat.value:g} on the validation set; the best reachable is recall {best.recall:.4f} at threshold {best.threshold:.6g}",
                best=best,
                thing=thing,
                fix="ask for a lower recall",
            )
        return _best(precision, recall, th, ok)
    raise ValueError(f"no curve pick for {strat}")


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile interval of the threshold picked on bootstrap resamples of the validation set.

    Unpacks as ``low, high``. ``n``: resamples drawn; ``failed``: resamples on which the strategy
    could not pick (one class drawn, target unreachable); they are left out. ``low`` / ``high`` /
    ``std`` are ``None`` when every resample failed.
    """

    low: float | None
    high: float | None
    level: float
    n: int
    failed: int
    std: float | None
    seed: int

    def __iter__(self) -> Iterator[float | None]:
        yield self.low
        yield self.high

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bootstrap_threshold(
    y_true: Any,
    y_score: Any,
    strategy: "str | Strategy",
    *,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    thing: "str | Path | None" = None,
) -> BootstrapInterval:
    """How stable the threshold is: pick it on ``n`` resamples (with replacement, same size) of
    the validation set and return the central ``level`` percentile interval of the picks.

    ``y_true`` (N,) 0/1, ``y_score`` (N,) float. Same ``seed`` -> same interval.
    """
    strat = parse_strategy(strategy)
    y, s = _check_inputs(y_true, y_score, thing)
    if n < 1:
        raise ValueError("n must be >= 1")
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    if strat.kind is StrategyKind.FIXED:
        t = float(strat.value)  # type: ignore[arg-type]
        return BootstrapInterval(t, t, level, n, 0, 0.0, seed)
    rng = np.random.default_rng([seed, 0xB007])
    # A resample is a count per image: sort once, then each resample's curve is the cumulative
    # counts at the end of every run of equal scores that was drawn at least once (the same curve,
    # hence the same pick, as sorting the resample itself; O(N) per resample instead of O(N log N)).
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    run_start = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    run_end = np.r_[run_start[1:] - 1, len(s_sorted) - 1]
    th_all = s_sorted[run_end]
    picks = []
    failed = 0
    for _ in range(n):
        w = np.bincount(rng.integers(0, len(y), size=len(y)), minlength=len(y))[order]
        tp_cum = np.cumsum(w * y_sorted)
        all_cum = np.cumsum(w)
        drawn = np.add.reduceat(w, run_start) > 0
        tp = tp_cum[run_end][drawn]
        fp = (all_cum - tp_cum)[run_end][drawn]
        pos, neg = int(tp_cum[-1]), int(all_cum[-1] - tp_cum[-1])
        if pos == 0 or neg == 0:
            failed += 1
            continue
        c = Curve(th_all[drawn], tp, fp, pos, neg)
        try:
            picks.append(float(c.thresholds[_pick_index(c, strat, thing)]))
        except ThresholdUnreachable:
            failed += 1
    if not picks:
        return BootstrapInterval(None, None, level, n, failed, None, seed)
    arr = np.asarray(picks)
    a = (1.0 - level) / 2.0
    low, high = np.quantile(arr, [a, 1.0 - a])
    return BootstrapInterval(float(low), float(high), level, n, failed, float(arr.std()), seed)
