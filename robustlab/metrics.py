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
)


@dataclass(frozen=True)
class MetricsRow:
    """One row of ``metrics.json`` (docs/contract.md, "The run folder").

    ``linf`` / ``l2``: mean realized perturbation of the delivered images in /255 units
    (adversarial and corrupted rows; ``None`` elsewhere).
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
) -> MetricsRow:
    """A :class:`MetricsRow` for one set of images."""
    r = binary_scores(y_true, y_score, threshold=threshold)
    notes = list(r.pop("notes"))
    if note:
        notes.insert(0, note)
    return MetricsRow(
        set=str(set),
        variant=variant,
        param=param,
        threshold=float(threshold),
        note="; ".join(notes) or None,
        linf=linf,
        l2=l2,
        **r,
    )


def row_from_correct(correct: np.ndarray, *, set: str, variant: str, param: str, threshold: float, note: str | None = None) -> MetricsRow:
    """A row that only has accuracy (e.g. worst-case: right only if right everywhere)."""
    c = np.asarray(correct, dtype=bool)
    n = int(len(c))
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
        note=note,
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
