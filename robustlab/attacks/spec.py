"""What an attack is: method, eps (a fraction of the pixel range), norm, PGD steps, step size and random start; parsed once from CLI/suite strings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from robustlab.enums import StrEnum
from robustlab.errors import RobustlabError

if TYPE_CHECKING:  # pragma: no cover
    pass

DEFAULT_PGD_STEPS = 10
PGD_STEP_FACTOR = 2.5  # default PGD step size: 2.5 * eps / steps (Madry et al.)
MAX_STEPS = 10_000


class AttackMethod(StrEnum):
    FGSM = "fgsm"
    PGD = "pgd"


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
    L2: the L2 norm of the whole perturbation in [0, 1] pixel units). ``steps`` / ``step`` /
    ``random_start`` are PGD's (``step=None``: ``2.5 * eps / steps``); FGSM is one step of size eps.
    """

    method: AttackMethod
    eps: float
    norm: Norm = Norm.LINF
    steps: int = None  # type: ignore[assignment]  # None: 1 for FGSM, 10 for PGD
    step: float | None = None
    random_start: bool = None  # type: ignore[assignment]  # None: False for FGSM, True for PGD

    def __post_init__(self) -> None:
        method = AttackMethod.parse(self.method, what="attack")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "norm", Norm.from_text(self.norm))
        object.__setattr__(self, "eps", check_eps(self.eps))
        if method is AttackMethod.FGSM:
            if self.steps not in (None, 1) or self.step is not None or self.random_start:
                raise RobustlabError("fgsm takes no steps, step or random_start", fix="use pgd for an iterative attack")
            object.__setattr__(self, "steps", 1)
            object.__setattr__(self, "random_start", False)
        else:
            object.__setattr__(self, "steps", DEFAULT_PGD_STEPS if self.steps is None else self.steps)
            object.__setattr__(self, "random_start", True if self.random_start is None else bool(self.random_start))
        if not 1 <= int(self.steps) <= MAX_STEPS:
            raise RobustlabError(f"steps={self.steps} is outside 1..{MAX_STEPS}", fix="use a whole number of steps, e.g. steps=10")
        if self.step is not None and not 0.0 < float(self.step) <= 1.0:
            raise RobustlabError(f"step={self.step:g} is outside (0, 1]", fix="give the PGD step size in pixel units, e.g. step=2/255")

    @property
    def step_size(self) -> float:
        """The step size ART gets: eps for FGSM, ``step`` or ``2.5 * eps / steps`` for PGD."""
        if self.method is AttackMethod.FGSM:
            return self.eps
        return float(self.step) if self.step is not None else PGD_STEP_FACTOR * self.eps / self.steps

    @property
    def param(self) -> str:
        """The row's ``param``: ``eps=0.0314`` (FGSM), ``eps=0.0314,steps=10`` (PGD), plus any
        non-default ``step``, ``norm=2`` and ``random_start=false``."""
        parts = [f"eps={format_param_number(self.eps)}"]
        if self.method is AttackMethod.PGD:
            parts.append(f"steps={self.steps}")
            if self.step is not None:
                parts.append(f"step={format_param_number(self.step)}")
        if self.norm is Norm.L2:
            parts.append("norm=2")
        if self.method is AttackMethod.PGD and not self.random_start:
            parts.append("random_start=false")
        return ",".join(parts)

    @property
    def budget_levels(self) -> float:
        """The budget in grey levels a delivered uint8 image can use (L-inf: whole levels)."""
        levels = self.eps * 255.0
        return float(math.floor(levels + 1e-6)) if self.norm is Norm.LINF else levels

    def describe(self) -> dict[str, Any]:
        """What run.json records about the attack."""
        return {
            "method": self.method.value,
            "eps": self.eps,
            "eps_levels": round(self.eps * 255.0, 4),
            "norm": self.norm.value,
            "steps": self.steps,
            "step": self.step_size,
            "random_start": self.random_start,
            "labels": "true labels",
            "library": "adversarial-robustness-toolbox",
        }

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
    AttackMethod.FGSM: ("eps", "norm"),
    AttackMethod.PGD: ("eps", "norm", "steps", "step", "random_start"),
}

ZERO_GRADIENT_WARN = 0.10  # warn when this share of images had an exactly zero gradient throughout
