"""Rows of numbers from labels and scores.

Conventions (as scikit-learn): ``(y_true, y_score, *, threshold=...)``; labels are 1 for the
positive class (fake, unless the detector says ``positive: real``); a sample is predicted positive
when ``y_score >= threshold``. A metric that is undefined for the data (AUC with one class present,
precision with no positive prediction) is ``None`` and the row's ``note`` says why; never a crash.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

ROW_FIELDS = (
    "set",
    "variant",
    "param",
    "n",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "auc",
    "ap",
    "misclassified",
    "threshold",
    "note",
    "linf",
    "l2",
    "balanced_accuracy",
    "real_accuracy",
    "fake_accuracy",
    "tpr_at_fpr_0.01",
    "tpr_at_fpr_0.001",
    "fpr_at_tpr_0.95",
    "eer",
    "brier",
    "ece",
    "accuracy_ci",
    "auc_ci",
    "tpr_at_fpr_0.01_ci",
)

# Python attribute -> the name in metrics.json / metrics.csv (the contract's names hold dots).
JSON_NAMES = {
    "tpr_at_fpr_1pct": "tpr_at_fpr_0.01",
    "tpr_at_fpr_01pct": "tpr_at_fpr_0.001",
    "fpr_at_tpr_95pct": "fpr_at_tpr_0.95",
    "tpr_at_fpr_1pct_ci": "tpr_at_fpr_0.01_ci",
}
ATTRIBUTE_NAMES = {v: k for k, v in JSON_NAMES.items()}
CI_FIELDS = ("accuracy_ci", "auc_ci", "tpr_at_fpr_0.01_ci")  # JSON names; each [lo, hi] or null
ECE_BINS = 15
DEFAULT_BOOTSTRAP = 1000


@dataclass(frozen=True)
class MetricsRow:
    """One row of ``metrics.json`` (docs/contract.md, "The run folder").

    ``linf`` / ``l2``: mean realized perturbation of the delivered images in /255 units
    (adversarial and corrupted rows; ``None`` elsewhere). The operating-point metrics follow
    (:func:`operating_point_scores`); attributes whose JSON name has a dot are spelled without it
    (:data:`JSON_NAMES`: ``tpr_at_fpr_1pct`` is ``tpr_at_fpr_0.01`` in metrics.json). The ``*_ci``
    fields are bootstrap 95% intervals ``(lo, hi)`` (:func:`bootstrap_intervals`), ``None`` when
    the bootstrap is off or the metric is undefined.
    """

    set: str
    variant: str
    param: str
    n: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    auc: float | None
    ap: float | None
    misclassified: int
    threshold: float
    note: str | None = None
    linf: float | None = None
    l2: float | None = None
    balanced_accuracy: float | None = None
    real_accuracy: float | None = None
    fake_accuracy: float | None = None
    tpr_at_fpr_1pct: float | None = None
    tpr_at_fpr_01pct: float | None = None
    fpr_at_tpr_95pct: float | None = None
    eer: float | None = None
    brier: float | None = None
    ece: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    auc_ci: tuple[float, float] | None = None
    tpr_at_fpr_1pct_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json row: contract names (:data:`ROW_FIELDS`), intervals as ``[lo, hi]`` lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[JSON_NAMES.get(f.name, f.name)] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: "dict[str, Any]") -> "MetricsRow":
        """The inverse of :meth:`to_dict` (keys that are not row fields are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for key, v in d.items():
            attr = ATTRIBUTE_NAMES.get(key, key)
            if attr in names:
                kw[attr] = tuple(float(x) for x in v) if attr.endswith("_ci") and v is not None else v
        return cls(**kw)

    @property
    def key(self) -> str:
        """``set``, ``variant[param]`` style name used in reports and policies."""
        if self.set in ("clean", "worst-case", "mixed") and self.variant == "none":
            return self.set
        return f"{self.variant}[{self.param}]" if self.param else self.variant

    def with_updates(self, **changes: Any) -> "MetricsRow":
        return dataclasses.replace(self, **changes)


def predict(y_score: np.ndarray, threshold: float) -> np.ndarray:
    """int64 (N,) predictions: 1 where ``score >= threshold``."""
    return (np.asarray(y_score, dtype=np.float64) >= threshold).astype(np.int64)


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 int64 matrix ``[[tn, fp], [fn, tp]]`` (rows: true 0/1, columns: predicted 0/1)."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    m = np.zeros((2, 2), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def _safe_div(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def binary_scores(y_true: np.ndarray, y_score: np.ndarray, *, threshold: float = 0.5) -> dict[str, Any]:
    """accuracy, precision, recall, f1, auc, ap, misclassified, n, notes (list of str)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.shape[0]} labels, y_score {s.shape[0]} scores")
    notes: list[str] = []
    n = int(len(y))
    if n == 0:
        return {"n": 0, "accuracy": None, "precision": None, "recall": None, "f1": None, "auc": None, "ap": None, "misclassified": 0, "notes": ["no images"]}
    pred = predict(s, threshold)
    (tn, fp), (fn, tp) = confusion(y, pred).tolist()
    accuracy = (tp + tn) / n
    precision = _safe_div(tp, tp + fp)
    if precision is None:
        notes.append("precision undefined: nothing predicted positive")
    recall = _safe_div(tp, tp + fn)
    if recall is None:
        notes.append("recall undefined: no positive images")
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    if len(np.unique(y)) < 2:
        auc = ap = None
        notes.append("AUC/AP undefined: one class present")
    else:
        auc = float(roc_auc_score(y, s))
        ap = float(average_precision_score(y, s))
    return {
        "n": n,
        "accuracy": float(accuracy),
        "precision": None if precision is None else float(precision),
        "recall": None if recall is None else float(recall),
        "f1": None if f1 is None else float(f1),
        "auc": auc,
        "ap": ap,
        "misclassified": int(fp + fn),
        "notes": notes,
    }


def accuracy_score(y_true: np.ndarray, y_score: np.ndarray, *, threshold: float = 0.5) -> float:
    y = np.asarray(y_true, dtype=np.int64)
    return float(np.mean(predict(y_score, threshold) == y)) if len(y) else math.nan


# --------------------------------------------------------------------------- operating points

TPR_AT_FPR = {"tpr_at_fpr_0.01": 0.01, "tpr_at_fpr_0.001": 0.001}
FPR_AT_TPR = {"fpr_at_tpr_0.95": 0.95}


def negatives_needed(fpr: float) -> int:
    """Negatives a set needs before an FPR of ``fpr`` allows one false positive: ``ceil(1 / fpr)``."""
    return int(math.ceil(1.0 / fpr - 1e-9))


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` with the point (0, 0) first; predicted positive when ``s >= t``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thr


def tpr_at_fpr_score(y_true: np.ndarray, y_score: np.ndarray, *, fpr: float) -> float | None:
    """The highest TPR at a threshold whose FPR is <= ``fpr`` (no interpolation between ROC
    points: a threshold that exists). ``None`` when one class is absent or when the set has fewer
    than :func:`negatives_needed` negatives (the FPR cannot be resolved: the only admissible
    operating point would be zero false positives)."""
    y = np.asarray(y_true, np.int64).reshape(-1)
    n_neg = int((y == 0).sum())
    if n_neg == 0 or n_neg == len(y) or n_neg < negatives_needed(fpr):
        return None
    f, t, _ = _roc(y, np.asarray(y_score, np.float64).reshape(-1))
    return float(t[f <= fpr + 1e-12].max())


def fpr_at_tpr_score(y_true: np.ndarray, y_score: np.ndarray, *, tpr: float) -> float | None:
    """The lowest FPR at a threshold whose TPR is >= ``tpr`` (lower is better); ``None`` with one class."""
    y = np.asarray(y_true, np.int64).reshape(-1)
    if len(np.unique(y)) < 2:
        return None
    f, t, _ = _roc(y, np.asarray(y_score, np.float64).reshape(-1))
    return float(f[t >= tpr - 1e-12].min())


def eer_score(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Equal error rate: where FPR = FNR on the ROC curve, linearly interpolated between the two
    ROC points around the crossing (lower is better); ``None`` with one class."""
    y = np.asarray(y_true, np.int64).reshape(-1)
    if len(np.unique(y)) < 2:
        return None
    f, t, _ = _roc(y, np.asarray(y_score, np.float64).reshape(-1))
    d = (1.0 - t) - f  # FNR - FPR: starts at 1, ends at -1, non-increasing
    i = int(np.argmax(d <= 0))
    if d[i] == 0 or i == 0:
        return float(f[i])
    w = d[i - 1] / (d[i - 1] - d[i])
    return float(f[i - 1] + w * (f[i] - f[i - 1]))


def brier_score(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Mean squared error of P(positive) against the 0/1 label (lower is better); ``None`` if empty."""
    y = np.asarray(y_true, np.float64).reshape(-1)
    if not len(y):
        return None
    return float(np.mean((np.asarray(y_score, np.float64).reshape(-1) - y) ** 2))


def ece_score(y_true: np.ndarray, y_score: np.ndarray, *, bins: int = ECE_BINS) -> float | None:
    """Expected calibration error of P(positive): ``bins`` equal-width bins of the score on [0, 1]
    (the last one closed), sum over bins of ``|bin| / n * |mean label - mean score|`` (lower is
    better; the positive-class reliability diagram, as sklearn's ``calibration_curve`` bins it)."""
    y = np.asarray(y_true, np.float64).reshape(-1)
    s = np.clip(np.asarray(y_score, np.float64).reshape(-1), 0.0, 1.0)
    if not len(y):
        return None
    b = np.minimum((s * bins).astype(np.int64), bins - 1)
    count = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, y, bins) - np.bincount(b, s, bins))  # |sum y - sum s| per bin
    return float(gap.sum() / len(y)) if count.sum() else None


def class_accuracies(y_true: np.ndarray, correct: np.ndarray, *, positive: str = "fake") -> dict[str, float | None]:
    """``real_accuracy``, ``fake_accuracy`` (share right among real / fake images; labels are
    positive-class labels, so with ``positive: real`` label 1 is real) and ``balanced_accuracy``
    (their mean, ``None`` unless both classes are present)."""
    y = np.asarray(y_true, np.int64).reshape(-1)
    c = np.asarray(correct, bool).reshape(-1)
    per = {}
    for label in (0, 1):
        m = y == label
        per[label] = float(c[m].mean()) if m.any() else None
    real_label = 0 if positive == "fake" else 1
    real, fake = per[real_label], per[1 - real_label]
    balanced = None if real is None or fake is None else (real + fake) / 2.0
    return {"balanced_accuracy": balanced, "real_accuracy": real, "fake_accuracy": fake}


def operating_point_scores(y_true: np.ndarray, y_score: np.ndarray, *, threshold: float, positive: str = "fake") -> dict[str, Any]:
    """The operating-point metrics of a row (contract names), plus ``notes`` (list of str) saying
    why any is ``None``: balanced / real / fake accuracy at ``threshold``, TPR at FPR 1% and 0.1%,
    FPR at TPR 95%, EER, Brier score and ECE (:data:`ECE_BINS` bins)."""
    y = np.asarray(y_true, np.int64).reshape(-1)
    s = np.asarray(y_score, np.float64).reshape(-1)
    out: dict[str, Any] = class_accuracies(y, predict(s, threshold) == y, positive=positive)
    notes: list[str] = []
    if len(y) and out["balanced_accuracy"] is None:
        missing = "real" if out["real_accuracy"] is None else "fake"
        notes.append(f"balanced and {missing} accuracy undefined: no {missing} images")
    both = len(np.unique(y)) == 2
    n_neg = int((y == 0).sum())
    for name, fpr in TPR_AT_FPR.items():
        out[name] = tpr_at_fpr_score(y, s, fpr=fpr) if both else None
        if both and out[name] is None:
            neg = "real" if positive == "fake" else "fake"
            notes.append(f"{name} unresolved: needs >= {negatives_needed(fpr)} negative ({neg}) images, the set has {n_neg}")
    for name, tpr in FPR_AT_TPR.items():
        out[name] = fpr_at_tpr_score(y, s, tpr=tpr) if both else None
    out["eer"] = eer_score(y, s) if both else None
    if len(y) and not both:
        notes.append("TPR@FPR, FPR@TPR and EER undefined: one class present")
    out["brier"] = brier_score(y, s)
    out["ece"] = ece_score(y, s)
    out["notes"] = notes
    return out


# --------------------------------------------------------------------------- bootstrap

_BOOTSTRAP_CELLS = 2_000_000  # resamples x distinct scores held at once (bounds memory)


def bootstrap_intervals(
    y_true: np.ndarray,
    y_score: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    correct: np.ndarray | None = None,
    resamples: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals for ``accuracy``, ``auc`` and ``tpr_at_fpr_0.01``.

    Stratified: each resample draws ``n_neg`` negatives and ``n_pos`` positives with replacement
    from their own class, so every resample has the set's class balance. Seeded
    (``default_rng([seed, 0xB007])``): the same seed gives the same intervals. Vectorised: the
    scores are reduced to their distinct values once, each resample is a vector of counts per
    distinct value, and the metrics are cumulative sums over it (AUC as the Mann-Whitney
    statistic with ties counted half, TPR at FPR 1% as :func:`tpr_at_fpr_score` does). With only
    ``correct`` (bool (N,), no scores) just the accuracy interval is computed. ``resamples=0``
    gives ``None`` everywhere; so does a metric undefined on the set (AUC with one class, TPR at
    1% FPR with fewer than 100 negatives). Returns contract names -> ``(lo, hi)`` or ``None``.
    """
    y = np.asarray(y_true, np.int64).reshape(-1)
    out: dict[str, tuple[float, float] | None] = {"accuracy_ci": None, "auc_ci": None, "tpr_at_fpr_0.01_ci": None}
    if resamples <= 0 or not len(y):
        return out
    if y_score is not None:
        s = np.asarray(y_score, np.float64).reshape(-1)
        # one "value" per distinct score; its correctness follows from the threshold
        values, inv = np.unique(-s, return_inverse=True)  # descending scores
        value_right = np.where(np.arange(2) == 1, -values[:, None] >= threshold, -values[:, None] < threshold)  # (U, 2): right if label
    else:
        c = np.asarray(correct, bool).reshape(-1)
        inv = c.astype(np.int64)  # value 0: wrong, 1: right
        value_right = np.array([[False, False], [True, True]])
    n_values = len(value_right)  # distinct scores (or wrong / right), some maybe unused
    rng = np.random.default_rng([int(seed), 0xB007])
    classes = [(label, inv[y == label]) for label in (0, 1) if (y == label).any()]
    both = len(classes) == 2 and y_score is not None
    want_tpr = both and int((y == 0).sum()) >= negatives_needed(0.01)
    chunk = max(1, min(resamples, _BOOTSTRAP_CELLS // max(n_values, 1)))
    acc, auc, tpr = [], [], []
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        counts = {}
        for label, members in classes:
            draw = members[rng.integers(0, len(members), size=(b, len(members)))]
            flat = draw + (np.arange(b) * n_values)[:, None]
            counts[label] = np.bincount(flat.ravel(), minlength=b * n_values).reshape(b, n_values).astype(np.int32)
        right = sum(counts[label] @ value_right[:, label].astype(np.int32) for label, _ in classes)
        acc.append(right / len(y))
        if both:
            neg, pos = counts[0], counts[1]
            n_neg, n_pos = float(len(classes[0][1])), float(len(classes[1][1]))
            cum_neg = np.cumsum(neg, axis=1, dtype=np.int32)  # negatives scored >= each value
            # Mann-Whitney: pairs with the positive above, ties half = n_pos n_neg - sum pos (cum_neg - neg / 2)
            above = np.einsum("ij,ij->i", pos, cum_neg, dtype=np.float64) - 0.5 * np.einsum("ij,ij->i", pos, neg, dtype=np.float64)
            auc.append(1.0 - above / (n_pos * n_neg))
            if want_tpr:
                keep = cum_neg <= 0.01 * n_neg + 1e-9  # a prefix: the thresholds that keep FPR <= 1%
                tpr.append(np.einsum("ij,ij->i", pos, keep, dtype=np.float64) / n_pos)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]

    def interval(parts: list[np.ndarray]) -> tuple[float, float]:
        lo, hi = np.percentile(np.concatenate(parts), q)
        return (float(lo), float(hi))

    out["accuracy_ci"] = interval(acc)
    if auc:
        out["auc_ci"] = interval(auc)
    if tpr:
        out["tpr_at_fpr_0.01_ci"] = interval(tpr)
    return out


def _ci_kwargs(cis: dict[str, tuple[float, float] | None]) -> dict[str, Any]:
    return {ATTRIBUTE_NAMES.get(k, k): v for k, v in cis.items()}


def metrics_row(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    threshold: float,
    set: str,
    variant: str = "none",
    param: str = "",
    linf: float | None = None,
    l2: float | None = None,
    note: str | None = None,
    positive: str = "fake",
    bootstrap: int = 0,
    seed: int = 0,
) -> MetricsRow:
    """A :class:`MetricsRow` for one set of images.

    ``y_true`` int (N,) positive-class labels, ``y_score`` float (N,) P(positive); ``positive``
    (``fake`` | ``real``) names the class label 1 stands for; ``bootstrap`` resamples for the
    intervals (0: none), seeded with ``seed``.
    """
    r = binary_scores(y_true, y_score, threshold=threshold)
    notes = list(r.pop("notes"))
    if note:
        notes.insert(0, note)
    ops = operating_point_scores(y_true, y_score, threshold=threshold, positive=positive)
    notes.extend(ops.pop("notes"))
    cis = bootstrap_intervals(y_true, y_score, threshold=threshold, resamples=bootstrap, seed=seed)
    return MetricsRow(
        set=str(set),
        variant=variant,
        param=param,
        threshold=float(threshold),
        note="; ".join(notes) or None,
        linf=linf,
        l2=l2,
        **r,
        **{ATTRIBUTE_NAMES.get(k, k): v for k, v in ops.items()},
        **_ci_kwargs(cis),
    )


def row_from_correct(
    correct: np.ndarray,
    *,
    set: str,
    variant: str,
    param: str,
    threshold: float,
    note: str | None = None,
    y_true: np.ndarray | None = None,
    positive: str = "fake",
    bootstrap: int = 0,
    seed: int = 0,
) -> MetricsRow:
    """A row from per-image correctness only (e.g. worst-case: right only if right everywhere).

    ``correct`` bool (N,); with ``y_true`` (int (N,) positive-class labels) the row also has real /
    fake / balanced accuracy and a stratified accuracy interval. Score-based metrics (precision,
    AUC, TPR@FPR, EER, Brier, ECE...) are ``None``, and the note says so.
    """
    c = np.asarray(correct, dtype=bool)
    n = int(len(c))
    notes = [note] if note else []
    per: dict[str, Any] = {}
    cis: dict[str, Any] = {}
    if y_true is not None:
        y = np.asarray(y_true, np.int64).reshape(-1)
        if y.shape != c.shape:
            raise ValueError(f"correct has {n} entries, y_true {len(y)}")
        per = class_accuracies(y, c, positive=positive)
        cis = _ci_kwargs(bootstrap_intervals(y, correct=c, resamples=bootstrap, seed=seed))
    elif bootstrap:
        cis = _ci_kwargs(bootstrap_intervals(np.zeros(n, np.int64), correct=c, resamples=bootstrap, seed=seed))
    if n:
        notes.append("score-based metrics (precision, recall, F1, AUC, AP, TPR@FPR, FPR@TPR, EER, Brier, ECE) undefined: built from per-image correctness")
    return MetricsRow(
        set=set,
        variant=variant,
        param=param,
        n=n,
        accuracy=float(c.mean()) if n else None,
        precision=None,
        recall=None,
        f1=None,
        auc=None,
        ap=None,
        misclassified=int(n - c.sum()),
        threshold=float(threshold),
        note="; ".join(notes) or None,
        **per,
        **cis,
    )


def format_eps(eps: float) -> str:
    """``0.0314 -> "8/255"`` when eps is a whole number of grey levels, else ``"0.05"``."""
    levels = eps * 255.0
    if abs(levels - round(levels)) < 1e-6 and round(levels) >= 1:
        return f"{int(round(levels))}/255"
    return f"{eps:g}"


def parse_fraction(text: "str | float", *, what: str = "value") -> float:
    """``"8/255"`` / ``"0.05"`` / ``0.05`` -> float. Raises ValueError with a readable message."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip()
    if "/" in s:
        num, _, den = s.partition("/")
        try:
            d = float(den)
            if d == 0:
                raise ValueError
            return float(num) / d
        except ValueError:
            raise ValueError(f"{what} {text!r} is not a number or a fraction like 8/255") from None
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number or a fraction like 8/255") from None


def rows_to_records(rows: Sequence[MetricsRow]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in rows]
