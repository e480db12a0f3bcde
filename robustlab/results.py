"""The records that flow through an evaluation, and the interface its variants implement.

Data flows one way: a :class:`Variant` (an attack or a corruption, an immutable value) turns a
batch into a :class:`Delivery`; the engine (:mod:`robustlab.evaluation.engine`) measures it and
hands a :class:`BatchRecord` to each hook (the PNG writer, the report's example strip); at the end
it concatenates what each variant produced into a :class:`VariantOutcome` and returns an
:class:`EvaluationResult` whose :class:`RunInfo` becomes ``run.json``. Writing the run folder is a
separate reporting step (:mod:`robustlab.reporting.runfolder`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from robustlab.enums import SetKind
from robustlab.metrics import MetricsRow

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.detector.model import Detector

_EMPTY: Mapping[str, Any] = {}


class Delivery(NamedTuple):
    """What :meth:`Variant.apply` returns for one batch of B images.

    ``images`` uint8 (B, H, W, 3): the delivered images (what an attacker could save as PNG);
    ``scores`` float64 (B,) P(positive class) of exactly these images when the variant already
    computed them (an attack's success check), else None and the engine scores them;
    ``extras`` per-image arrays of length B the variant measured (an attack: ``success``,
    ``psnr``, ``ssim``, ``zero_gradient``); ``seconds`` time per stage of the variant's work.
    """

    images: np.ndarray
    scores: np.ndarray | None = None
    extras: Mapping[str, np.ndarray] = _EMPTY
    seconds: Mapping[str, float] = _EMPTY


@runtime_checkable
class Variant(Protocol):
    """An attack or a corruption as the engine sees it: an immutable value, safe to reuse.

    ``kind`` is ``SetKind.ADVERSARIAL`` (applied to the attacked subset) or ``SetKind.CORRUPTED``
    (applied to every image); ``variant`` / ``param`` name its rows (``"fgsm"``, ``"eps=0.0314"``).
    """

    @property
    def kind(self) -> SetKind: ...

    @property
    def variant(self) -> str: ...

    @property
    def param(self) -> str: ...

    def apply(self, detector: "Detector", x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Delivery:
        """``x`` uint8 (B, H, W, 3) clean images, ``y`` int64 (B,) positive-class labels, ``rng`` seeded
        for this variant and batch -> the :class:`Delivery` for the batch."""
        ...

    def diagnostics(self, outcome: "VariantOutcome", threshold: float) -> list[str]:
        """Warnings about a broken evaluation visible in this variant's outcome (may be empty)."""
        ...

    def summary(self, outcome: "VariantOutcome") -> dict[str, Any] | None:
        """Totals for ``run.json`` (an attack's success rate, PSNR, seconds per stage), or None."""
        ...


@runtime_checkable
class SelectiveVariant(Variant, Protocol):
    """An adversarial variant that runs on part of the attacked subset only (an attack with
    ``direction=evade``: fakes only); the images it does not select get no row of it."""

    def selects(self, y_fake: np.ndarray) -> np.ndarray:
        """``y_fake`` int64 (B,) with 1 = fake (whatever the detector's positive class) -> bool (B,)."""
        ...


@dataclass(frozen=True)
class BatchRecord:
    """One batch through one variant, or through the clean pass (``variant`` None), for hooks.

    ``idx`` int64 (B,) image indices in the data set; ``y`` int64 (B,) positive-class labels;
    ``clean`` / ``images`` uint8 (B, H, W, 3) clean and delivered images (the same array on the
    clean pass); ``scores`` float64 (B,) P(positive) of ``images``; ``linf`` / ``l2`` float64 (B,)
    realized perturbation in /255 units; ``extras`` as in :class:`Delivery`.
    """

    variant: Variant | None
    idx: np.ndarray
    y: np.ndarray
    clean: np.ndarray
    images: np.ndarray
    scores: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)


Hook = Callable[[BatchRecord], None]


@dataclass(frozen=True)
class VariantOutcome:
    """Everything one variant produced over the set, per image (positive-class labels).

    ``idx``/``y`` int64 (M,), ``clean_scores``/``scores``/``linf``/``l2`` float64 (M,) for the M
    images the variant ran on; ``extras`` the variant's per-image arrays, concatenated;
    ``seconds`` its total time per stage (``total`` included).
    """

    variant: Variant
    idx: np.ndarray
    y: np.ndarray
    clean_scores: np.ndarray
    scores: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)
    seconds: Mapping[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.idx))

    @property
    def key(self) -> str:
        return f"{self.variant.variant}[{self.variant.param}]"


@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` records about a run (written by :meth:`robustlab.runs.RunFolder.commit`)."""

    command: list[str] | None
    config: dict[str, Any]
    seed: int
    batch_size: int
    threshold: float
    versions: dict[str, str]
    detector: dict[str, Any]
    data: dict[str, Any]
    attack_fraction: float | None
    attacked: int
    variants: list[dict[str, str]]
    diagnostics: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    attacks: list[dict[str, Any]] | None = None  # per-attack totals (AttackVariant.summary)
    corruption_summary: list[dict[str, Any]] | None = None
    threshold_selection: dict[str, Any] | None = None
    sanity: dict[str, Any] | None = None  # the --sanity outcome
    adversarial_images: dict[str, Any] | None = None  # what `robustlab attack` saved
    demo: dict[str, Any] | None = None  # `robustlab demo`: how its detector was trained

    def to_dict(self) -> dict[str, Any]:
        """The ``run.json`` mapping (optional sections left out when absent)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_SECTIONS:
                continue
            out[name] = value
        return out


_OPTIONAL_SECTIONS = frozenset({"attacks", "corruption_summary", "threshold_selection", "sanity", "adversarial_images", "demo"})


@dataclass(frozen=True)
class EvaluationResult:
    """What an evaluation returns: the rows, the per-image arrays, what each variant produced, and
    the run record. ``run_dir`` is set once the reporting step has written the run folder."""

    rows: list[MetricsRow]
    info: RunInfo
    idx: np.ndarray
    y: np.ndarray
    scores: np.ndarray
    outcomes: tuple[VariantOutcome, ...]
    diagnostics: list[str] = field(default_factory=list)
    reference_rows: list[MetricsRow] = field(default_factory=list)  # at the default threshold, when a threshold was picked on validation data
    threshold_selection: Any = None  # robustlab.evaluation.selection.ThresholdSelection, when one was given
    run_dir: Path | None = None

    def row(self, key: str) -> MetricsRow:
        """The row whose key (``fgsm[eps=0.0314]``, ``adversarial``...) or set name is ``key``."""
        for r in self.rows:
            if r.key == key or r.set == key:
                return r
        raise KeyError(key)

    def outcome(self, variant: str, param: str | None = None) -> VariantOutcome:
        for o in self.outcomes:
            if o.variant.variant == variant and (param is None or o.variant.param == param):
                return o
        raise KeyError(f"{variant}[{param}]" if param is not None else variant)

    def attacked(self) -> Sequence[VariantOutcome]:
        return [o for o in self.outcomes if o.variant.kind is SetKind.ADVERSARIAL]
