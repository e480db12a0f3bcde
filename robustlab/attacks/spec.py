"""What an attack is: method, eps (a fraction of the pixel range), norm, iterations, loss, query budget and threat direction; parsed once from CLI/suite strings.

White-box attacks (``fgsm``, ``pgd``, ``apgd``) need the detector's input gradient; black-box ones
(``square``: scores only, ``hsj``: decisions only) need nothing but its outputs. ``auto`` is the
binary AutoAttack cascade (:mod:`robustlab.attacks.cascade`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab.attacks.eot import EOT
from robustlab.enums import StrEnum
from robustlab.errors import RobustlabError

DEFAULT_PGD_STEPS = 10
PGD_STEP_FACTOR = 2.5  # default PGD step size: 2.5 * eps / steps (Madry et al.)
DEFAULT_APGD_STEPS = 100  # Croce & Hein 2020
APGD_STEP_FACTOR = 2.0  # APGD's initial step size: 2 * eps (L-inf and L2), then adapted per image
DEFAULT_SQUARE_QUERIES = 5000
DEFAULT_HSJ_QUERIES = 1000
MAX_STEPS = 10_000
MAX_QUERIES = 1_000_000
MAX_RESTARTS = 100


class AttackMethod(StrEnum):
    FGSM = "fgsm"
    PGD = "pgd"
    APGD = "apgd"
    SQUARE = "square"
    HSJ = "hsj"
    AUTO = "auto"

    @property
    def white_box(self) -> bool:
        """Needs the detector's input gradient (``auto`` does: its first two stages are APGD)."""
        return self in (AttackMethod.FGSM, AttackMethod.PGD, AttackMethod.APGD, AttackMethod.AUTO)


WHITE_BOX = tuple(m.value for m in AttackMethod if m.white_box)
BLACK_BOX = tuple(m.value for m in AttackMethod if not m.white_box)


class Loss(StrEnum):
    """APGD's objective. For two classes cross-entropy is ``softplus(-margin)``, a monotone function
    of the margin ``logit(true) - logit(other)``: both push the same way, but cross-entropy's
    gradient underflows to exactly zero on confident images where the margin's never does (the
    binary analogue of DLR / CW, which need no probabilities)."""

    CE = "ce"
    MARGIN = "margin"


class Direction(StrEnum):
    """Which images an attack runs on: ``evade`` only fakes (make a fake pass as real), ``frame``
    only real images (make a real photo look generated), ``both`` every attacked image."""

    EVADE = "evade"
    FRAME = "frame"
    BOTH = "both"

    def selects(self, y_fake: np.ndarray) -> np.ndarray:
        """bool (N,) mask of the images this direction attacks; ``y_fake`` int (N,), 1 = fake."""
        y = np.asarray(y_fake).reshape(-1)
        if self is Direction.EVADE:
            return y == 1
        if self is Direction.FRAME:
            return y == 0
        return np.ones(len(y), dtype=bool)


class Norm(StrEnum):
    """The norm that bounds the perturbation."""

    LINF = "inf"
    L2 = "2"

    @property
    def order(self) -> float:
        return np.inf if self is Norm.LINF else 2.0

    @classmethod
    def from_text(cls, value: "str | Norm", *, thing: str | None = None) -> "Norm":
        aliases = {"linf": "inf", "l_inf": "inf", "infinity": "inf", "np.inf": "inf", "l2": "2", "2.0": "2"}
        text = str(value).strip().lower()
        return cls.parse(aliases.get(text, text), what="norm", thing=thing)


def format_param_number(value: float) -> str:
    """The 4-decimal form rows use for eps and step sizes (``8/255 -> "0.0314"``)."""
    return f"{value:.4f}"


@dataclass(frozen=True)
class AttackSpec:
    """One attack at one eps.

    ``eps``: the perturbation budget as a fraction of the pixel range, in (0, 1] (L-inf: per pixel;
    L2: the L2 norm of the whole perturbation in [0, 1] pixel units); optional for ``hsj`` only (a
    minimal-perturbation attack: without eps the delivered perturbation is what it found).
    ``steps``: iterations (PGD 10, APGD 100; FGSM is one step of size eps); ``step`` /
    ``random_start`` are PGD's (``step=None``: ``2.5 * eps / steps``); ``loss`` and ``restarts``
    APGD's; ``queries`` the per-image query budget of ``square`` (5000 iterations, one candidate
    each) and ``hsj`` (1000 decisions); ``direction`` which images are attacked.
    """

    method: AttackMethod
    eps: float | None
    norm: Norm = Norm.LINF
    steps: int = None  # type: ignore[assignment]  # None: the method's default
    step: float | None = None
    random_start: bool = None  # type: ignore[assignment]  # None: False for FGSM, True for PGD
    loss: Loss = None  # type: ignore[assignment]  # None: ce for APGD
    queries: int = None  # type: ignore[assignment]  # None: the method's default (square, hsj)
    restarts: int = None  # type: ignore[assignment]  # None: 1 for APGD
    direction: Direction = Direction.BOTH
    eot: EOT | None = None  # fgsm / pgd / apgd: average each gradient over draws of a laundering chain

    def __post_init__(self) -> None:
        method = AttackMethod.parse(self.method, what="attack")
        set_ = object.__setattr__
        set_(self, "method", method)
        set_(self, "norm", Norm.from_text(self.norm))
        set_(self, "direction", Direction.parse(self.direction, what="direction"))
        if self.eps is None and method is not AttackMethod.HSJ:
            raise RobustlabError(f"{method.value} needs an eps", fix=f"write e.g. {method.value}:eps=8/255")
        if self.eps is not None:
            set_(self, "eps", check_eps(self.eps))
        own = _OPTIONS[method]
        given = {"steps": self.steps, "step": self.step, "random_start": self.random_start, "loss": self.loss, "queries": self.queries, "restarts": self.restarts, "eot": self.eot}
        if method is AttackMethod.FGSM:  # one step without a random start is what FGSM is
            given["steps"] = None if self.steps == 1 else self.steps
            given["random_start"] = None if self.random_start is False else self.random_start
        foreign = [k for k, v in given.items() if v is not None and k not in own]
        if foreign:
            raise RobustlabError(f"{method.value} takes no {', '.join(foreign)}", fix=f"{method.value} takes: {', '.join(own)}")
        steps = {AttackMethod.FGSM: 1, AttackMethod.PGD: DEFAULT_PGD_STEPS, AttackMethod.APGD: DEFAULT_APGD_STEPS, AttackMethod.AUTO: DEFAULT_APGD_STEPS}.get(method)
        set_(self, "steps", steps if self.steps is None else self.steps)
        if method is AttackMethod.PGD:
            set_(self, "random_start", True if self.random_start is None else bool(self.random_start))
        else:  # FGSM never starts at random; APGD (and auto's APGD) always does; square / hsj have their own
            set_(self, "random_start", method in (AttackMethod.APGD, AttackMethod.AUTO))
        if method in (AttackMethod.APGD, AttackMethod.AUTO):
            set_(self, "restarts", 1 if self.restarts is None else self.restarts)
        if method is AttackMethod.APGD:
            set_(self, "loss", Loss.CE if self.loss is None else Loss.parse(self.loss, what="loss"))
        queries = {AttackMethod.SQUARE: DEFAULT_SQUARE_QUERIES, AttackMethod.HSJ: DEFAULT_HSJ_QUERIES, AttackMethod.AUTO: DEFAULT_SQUARE_QUERIES}.get(method)
        set_(self, "queries", queries if self.queries is None else self.queries)
        if self.steps is not None and not 1 <= int(self.steps) <= MAX_STEPS:
            raise RobustlabError(f"steps={self.steps} is outside 1..{MAX_STEPS}", fix="use a whole number of steps, e.g. steps=10")
        if self.step is not None and not 0.0 < float(self.step) <= 1.0:
            raise RobustlabError(f"step={self.step:g} is outside (0, 1]", fix="give the PGD step size in pixel units, e.g. step=2/255")
        if self.queries is not None and not 1 <= int(self.queries) <= MAX_QUERIES:
            raise RobustlabError(f"queries={self.queries} is outside 1..{MAX_QUERIES}", fix="give the per-image query budget as a whole number, e.g. queries=5000")
        if self.restarts is not None and not 1 <= int(self.restarts) <= MAX_RESTARTS:
            raise RobustlabError(f"restarts={self.restarts} is outside 1..{MAX_RESTARTS}", fix="use e.g. restarts=1 (one random start) or restarts=5")

    @property
    def white_box(self) -> bool:
        return self.method.white_box

    @property
    def step_size(self) -> float | None:
        """The step size ART gets: eps for FGSM, ``step`` or ``2.5 * eps / steps`` for PGD, APGD's
        initial ``2 * eps``; None for the black-box attacks."""
        if self.method is AttackMethod.FGSM:
            return self.eps
        if self.method is AttackMethod.PGD:
            return float(self.step) if self.step is not None else PGD_STEP_FACTOR * self.eps / self.steps
        if self.method in (AttackMethod.APGD, AttackMethod.AUTO):
            return APGD_STEP_FACTOR * self.eps
        return None

    @property
    def param(self) -> str:
        """The row's ``param``: ``eps=0.0314`` (FGSM, auto), ``eps=0.0314,steps=10`` (PGD),
        ``eps=0.0314,steps=100,loss=ce`` (APGD), ``eps=0.0314,queries=5000`` (square),
        ``queries=1000`` (hsj), plus any non-default ``step``, ``restarts``, ``norm=2``,
        ``random_start=false`` and ``direction`` (evade / frame)."""
        m = self.method
        parts = [f"eps={format_param_number(self.eps)}"] if self.eps is not None else []
        if m in (AttackMethod.PGD, AttackMethod.APGD) or (m is AttackMethod.AUTO and self.steps != DEFAULT_APGD_STEPS):
            parts.append(f"steps={self.steps}")
        if m is AttackMethod.PGD and self.step is not None:
            parts.append(f"step={format_param_number(self.step)}")
        if m is AttackMethod.APGD:
            parts.append(f"loss={self.loss.value}")
        if m in (AttackMethod.APGD, AttackMethod.AUTO) and self.restarts != 1:
            parts.append(f"restarts={self.restarts}")
        if m in (AttackMethod.SQUARE, AttackMethod.HSJ) or (m is AttackMethod.AUTO and self.queries != DEFAULT_SQUARE_QUERIES):
            parts.append(f"queries={self.queries}")
        if self.norm is Norm.L2:
            parts.append("norm=2")
        if m is AttackMethod.PGD and not self.random_start:
            parts.append("random_start=false")
        if self.direction is not Direction.BOTH:
            parts.append(f"direction={self.direction.value}")
        if self.eot is not None:
            parts.append(self.eot.param)
        return ",".join(parts)

    @property
    def budget_levels(self) -> float:
        """The budget in grey levels a delivered uint8 image can use (L-inf: whole levels; no eps: inf)."""
        if self.eps is None:
            return math.inf
        levels = self.eps * 255.0
        return float(math.floor(levels + 1e-6)) if self.norm is Norm.LINF else levels

    def describe(self) -> dict[str, Any]:
        """What run.json records about the attack."""
        out: dict[str, Any] = {
            "method": self.method.value,
            "eps": self.eps,
            "eps_levels": None if self.eps is None else round(self.eps * 255.0, 4),
            "norm": self.norm.value,
            "steps": self.steps,
            "step": self.step_size,
            "random_start": self.random_start,
            "direction": self.direction.value,
            "labels": "true labels",
            "library": "adversarial-robustness-toolbox",
            "access": "gradients" if self.white_box else ("scores" if self.method is AttackMethod.SQUARE else "decisions"),
        }
        if self.loss is not None:
            out["loss"] = self.loss.value
        if self.restarts is not None:
            out["restarts"] = self.restarts
        if self.queries is not None:
            out["queries"] = self.queries
        if self.eot is not None:
            out["eot"] = {"chain": self.eot.chain.text, "samples": int(self.eot.samples), "jpeg_gradient": "straight-through (BPDA)"}
        return out

    def title(self) -> str:
        from robustlab.reporting.tables import param_display

        return f"{self.method.value.upper()} ({param_display(self.param)})"


def check_eps(eps: float, *, what: str = "eps") -> float:
    """``eps`` as a float in (0, 1], or a one-line RobustlabError (exit 2)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise RobustlabError(f"{what} {eps!r} is not a number", fix="give eps as a fraction of the pixel range, e.g. 8/255 or 0.03") from None
    if not 0.0 < value <= 1.0 or math.isnan(value):
        raise RobustlabError(f"{what}={value:g} is outside (0, 1]", fix="eps is a fraction of the pixel range: 8/255 is eight grey levels")
    return value


def parse_eps(text: "str | float", *, what: str = "eps") -> float:
    """``"8/255"`` / ``"0.05"`` -> float in (0, 1], or a one-line RobustlabError."""
    from robustlab.metrics import parse_fraction

    try:
        value = parse_fraction(text, what=what)
    except ValueError as exc:
        raise RobustlabError(str(exc), fix="write eps as a number or a fraction like 8/255") from None
    return check_eps(value, what=what)


def parse_attack_fraction(text: "str | float", *, what: str = "fraction") -> float:
    """The attacked share of a set, in (0, 1] (``"0.3"``, ``"1/3"``), or a one-line RobustlabError."""
    from robustlab.metrics import parse_fraction

    try:
        value = parse_fraction(text, what=what)
    except ValueError as exc:
        raise RobustlabError(str(exc), fix="give a number in (0, 1], e.g. 0.3") from None
    if not 0.0 < value <= 1.0 or math.isnan(value):
        raise RobustlabError(f"{what}={value:g} is outside (0, 1]", fix="give the share of the set to attack, e.g. 0.3 (1 attacks every image)")
    return value


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_OPTIONS = {
    AttackMethod.FGSM: ("eps", "norm", "direction", "eot", "samples", "launder"),
    AttackMethod.PGD: ("eps", "norm", "steps", "step", "random_start", "direction", "eot", "samples", "launder"),
    AttackMethod.APGD: ("eps", "norm", "steps", "loss", "restarts", "direction", "eot", "samples", "launder"),
    AttackMethod.SQUARE: ("eps", "norm", "queries", "direction", "launder"),
    AttackMethod.HSJ: ("eps", "norm", "queries", "direction", "launder"),
    AttackMethod.AUTO: ("eps", "norm", "steps", "queries", "restarts", "direction", "launder"),
}

ZERO_GRADIENT_WARN = 0.10  # warn when this share of images had an exactly zero gradient throughout
