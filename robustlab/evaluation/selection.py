"""A threshold picked on a validation set, checked against leakage into the evaluated images.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from robustlab.errors import RobustlabError
from robustlab.evaluation.thresholds import (
    DEFAULT_THRESHOLD,
    BootstrapInterval,
    Strategy,
    StrategyKind,
    ThresholdChoice,
    bootstrap_threshold,
    parse_strategy,
    pick_threshold,
)

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.data import Dataset
    from robustlab.detector.model import Detector

# --------------------------------------------------------------------------- detectors and data sets


def validation_scores(detector: "Detector", data: "Dataset", *, batch_size: int = 32, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Score a validation set: ``(y, scores)``, int64 (N,) positive-class labels and float64 (N,)
    ``P(positive)``, in the order of the images read (unreadable files are skipped)."""
    from robustlab.progress import batch_progress

    ys, ss = [], []
    batches = data.batches(detector.input_size, method=detector.spec.preprocessing, batch_size=batch_size, positive=detector.positive)
    for b in batch_progress(batches, len(data), f"scoring {len(data)} validation images", progress):
        ys.append(b.y)
        ss.append(detector.scores(b.x))
    y = np.concatenate(ys).astype(np.int64) if ys else np.zeros((0,), np.int64)
    s = np.concatenate(ss).astype(np.float64) if ss else np.zeros((0,), np.float64)
    return y, s


def _sources(data: "Dataset") -> frozenset[str]:
    out = set()
    for i in range(len(data)):
        p = data.source(i)
        if p is not None:
            out.add(os.path.realpath(p))
    return frozenset(out)


@dataclass(frozen=True)
class Leakage:
    """How a validation set relates to the evaluated set: same fingerprint, shared image files."""

    same_data: bool
    shared_images: int
    val_fingerprint: str
    data_fingerprint: str
    allowed: bool

    @property
    def leaks(self) -> bool:
        return self.same_data or self.shared_images > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _leakage(val_fp: str, val_sources: frozenset[str], val_n: int, val_root: Any, data: "Dataset", allow: bool) -> Leakage:
    df = data.fingerprint()
    shared = len(val_sources & _sources(data)) if val_sources else 0
    leak = Leakage(same_data=val_fp == df, shared_images=shared, val_fingerprint=val_fp, data_fingerprint=df, allowed=allow)
    if leak.leaks and not allow:
        what = "is the evaluated data set (same fingerprint)" if leak.same_data else f"shares {shared} of its {val_n} images with the evaluated data set"
        raise RobustlabError(
            f"the validation set {what}: a threshold picked on it would be graded on its own images",
            thing=val_root,
            fix="give a separate validation split (e.g. --val DATA --val-split val), or pass --allow-same-data to do it anyway (the report flags it)",
        )
    return leak


def check_leakage(val: "Dataset", data: "Dataset", *, allow_same_data: bool = False) -> Leakage:
    """Refuse (RobustlabError) to evaluate on the images a threshold was picked on.

    Compares :meth:`Dataset.fingerprint` of the two sets and the resolved image files they share.
    With ``allow_same_data`` nothing is refused; the returned :class:`Leakage` says what leaked.
    """
    return _leakage(val.fingerprint(), _sources(val), len(val), val.root, data, allow_same_data)


@dataclass
class ThresholdSelection:
    """A threshold picked on a validation set, with its provenance (what ``run.json`` records).

    ``y`` / ``scores``: the validation labels and scores it was picked on (int64 / float64 (N,)).
    """

    choice: ThresholdChoice
    interval: BootstrapInterval | None
    val: dict[str, Any]
    y: np.ndarray
    scores: np.ndarray
    leakage: Leakage | None = None
    reference: ThresholdChoice | None = None  # the validation metrics at DEFAULT_THRESHOLD
    _sources: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def threshold(self) -> float:
        return self.choice.threshold

    @property
    def strategy(self) -> str:
        return self.choice.strategy

    @property
    def same_data_allowed(self) -> bool:
        return bool(self.leakage is not None and self.leakage.leaks and self.leakage.allowed)

    def to_info(self) -> dict[str, Any]:
        """The ``threshold_selection`` block of run.json."""
        return {
            "strategy": self.choice.strategy,
            "threshold": self.choice.threshold,
            "rule": "score >= threshold is positive; candidates are the distinct validation scores; ties -> the other metric of the pair, then the higher threshold",
            "validation": self.val,
            "validation_fingerprint": self.val.get("fingerprint"),
            "on_validation": self.choice.to_dict(),
            "at_default_threshold": None if self.reference is None else self.reference.to_dict(),
            "default_threshold": DEFAULT_THRESHOLD,
            "bootstrap": None if self.interval is None else self.interval.to_dict(),
            "same_data": None if self.leakage is None else self.leakage.to_dict(),
            "allow_same_data_used": self.same_data_allowed,
        }

    def against(self, data: "Dataset", *, allow_same_data: bool | None = None) -> Leakage:
        """Check this selection against the set about to be evaluated (see :func:`check_leakage`);
        records and returns the :class:`Leakage`. ``allow_same_data`` defaults to what the
        selection was made with."""
        if allow_same_data is None:
            allow_same_data = self.leakage is not None and self.leakage.allowed
        self.leakage = _leakage(self.val.get("fingerprint", ""), self._sources, int(self.val.get("n", 0)), self.val.get("root"), data, bool(allow_same_data))
        return self.leakage


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100.0 * float(v):.2f}%"


def selection_summary(info: Mapping[str, Any]) -> list[str]:
    """Markdown lines for ``metrics.md`` from the ``threshold_selection`` block of run.json."""
    from robustlab.reporting.tables import md_escape

    val = info.get("validation") or {}
    on = info.get("on_validation") or {}
    split = f", split {val['split']}" if val.get("split") and not str(val.get("root")).endswith(str(val["split"])) else ""
    lines = [
        f"Threshold: **{info['threshold']:.6g}**, picked by `{info['strategy']}` on the validation set `{md_escape(str(val.get('root')))}`{split} "
        f"({val.get('scored', val.get('n'))} images, fingerprint {str(info.get('validation_fingerprint') or '')[:12]}): "
        f"validation precision {_pct(on.get('precision'))}, recall {_pct(on.get('recall'))}, F1 {_pct(on.get('f1'))}."
    ]
    b = info.get("bootstrap")
    if b and b.get("low") is not None:
        failed = f"; {b['failed']} resamples could not pick" if b.get("failed") else ""
        lines.append(f"Bootstrap {100 * b['level']:g}% interval of the threshold: [{b['low']:.4g}, {b['high']:.4g}] ({b['n']} resamples of the validation set, seed {b['seed']}{failed}).")
    lines.append(f"Every set is scored at this threshold; the rows marked @ {info.get('default_threshold', DEFAULT_THRESHOLD):g} are the same images at the default threshold, for comparison.")
    if info.get("allow_same_data_used"):
        leak = info.get("same_data") or {}
        what = "the evaluated images themselves" if leak.get("same_data") else f"{leak.get('shared_images')} of the evaluated images"
        lines.append(f"**Warning: the threshold was picked on {what} (--allow-same-data); the rows at it are optimistic.**")
    return lines


def select_threshold(
    detector: "Detector",
    val: "Dataset",
    strategy: "str | Strategy" = "max-f1",
    *,
    data: "Dataset | None" = None,
    allow_same_data: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> ThresholdSelection:
    """Score ``val`` with ``detector`` and pick a threshold on it with ``strategy``.

    With ``data`` (the set to be evaluated), first refuse leakage (see :func:`check_leakage`).
    ``bootstrap``: resamples for the stability interval (0: none).
    """
    strat = parse_strategy(strategy)
    leakage = check_leakage(val, data, allow_same_data=allow_same_data) if data is not None else None
    y, s = validation_scores(detector, val, batch_size=batch_size, progress=progress)
    thing = val.root
    if len(y) == 0:
        raise RobustlabError("no validation image could be read", thing=thing, fix="check the files (see the skipped list above)")
    choice = pick_threshold(y, s, strat, thing=thing)
    reference = pick_threshold(y, s, Strategy(StrategyKind.FIXED, DEFAULT_THRESHOLD), thing=thing)
    interval = bootstrap_threshold(y, s, strat, n=bootstrap, seed=seed, thing=thing) if bootstrap > 0 else None
    info = val.describe()
    info["scored"] = int(len(y))
    return ThresholdSelection(choice, interval, info, y, s, leakage, reference, _sources(val))
