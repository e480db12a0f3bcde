"""Attacks as evaluation variants: AttackVariant runs an AttackSpec on each batch of the attacked subset; parse_attacks reads fgsm:eps=2/255,8/255-style strings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from robustlab.attacks.art_backend import run_attack
from robustlab.attacks.delivery import AttackResult, AttackTally
from robustlab.attacks.spec import (
    _FALSE,
    _OPTIONS,
    _TRUE,
    ZERO_GRADIENT_WARN,
    AttackMethod,
    AttackSpec,
    Norm,
    parse_eps,
)
from robustlab.enums import SetKind
from robustlab.errors import RobustlabError

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.detector.model import Detector
    from robustlab.evaluation.engine import VariantStats

def make_attacks(
    method: "str | AttackMethod",
    eps: Sequence["str | float"],
    *,
    norm: "str | Norm" = Norm.LINF,
    steps: int | None = None,
    step: "str | float | None" = None,
    random_start: bool | None = None,
) -> list["AttackVariant"]:
    """One :class:`AttackVariant` per eps value; every value checked (RobustlabError, exit 2)."""
    m = AttackMethod.parse(method, what="attack")
    n = Norm.from_text(norm)
    if m is AttackMethod.FGSM:
        given = [name for name, v in (("steps", steps), ("step", step), ("random_start", random_start)) if v is not None]
        if given:
            raise RobustlabError(f"fgsm has no option {', '.join(given)}", thing="fgsm", fix="these are PGD options; use pgd for an iterative attack")
    if not eps:
        raise RobustlabError("no eps given", thing=m.value, fix=f"write e.g. {m.value}:eps=8/255")
    values = [parse_eps(e) for e in eps]
    step_value = None if step is None else parse_eps(step, what="step")
    out = []
    for e in values:
        if m is AttackMethod.FGSM:
            spec = AttackSpec(m, e, n)
        else:
            spec = AttackSpec(m, e, n, steps=steps, step=step_value, random_start=random_start)
        out.append(AttackVariant(spec))
    return out


def parse_attack(text: str) -> list["AttackVariant"]:
    """``"pgd:eps=2/255,8/255,steps=10,step=2/255,norm=inf,random_start=true"`` -> variants.

    Options are ``key=value`` separated by commas; bare values after ``eps=`` are more eps values
    (one variant per eps). FGSM takes ``eps`` and ``norm``; PGD also ``steps``, ``step`` and
    ``random_start``. Unknown names, eps outside (0, 1] and bad values raise a RobustlabError.
    """
    raw = str(text).strip()
    name, _, rest = raw.partition(":")
    name = name.strip().lower()
    try:
        method = AttackMethod.parse(name, what="attack", thing=raw)
    except RobustlabError as exc:
        raise RobustlabError(exc.problem, thing=raw, fix="use fgsm or pgd, e.g. fgsm:eps=8/255 or pgd:eps=8/255,steps=10") from None
    allowed = _OPTIONS[method]
    values: dict[str, list[str]] = {}
    last = None
    for token in (t.strip() for t in rest.split(",")):
        if not token:
            continue
        if "=" in token:
            key, _, value = token.partition("=")
            key = key.strip().lower().replace("-", "_")
            if key not in allowed:
                raise RobustlabError(f"unknown option {key!r} for {method.value}", thing=raw, fix=f"{method.value} takes: {', '.join(allowed)}")
            if key in values:
                raise RobustlabError(f"option {key!r} given twice", thing=raw, fix="give each option once (several eps values: eps=2/255,8/255)")
            values[key] = [value.strip()]
            last = key
        elif last == "eps":
            values["eps"].append(token)
        else:
            raise RobustlabError(f"{token!r} is not key=value", thing=raw, fix=f"write e.g. {method.value}:eps=2/255,8/255")
    if "eps" not in values:
        raise RobustlabError("no eps given", thing=raw, fix=f"write e.g. {method.value}:eps=8/255")
    try:
        steps = None
        if "steps" in values:
            s = values["steps"][0]
            if not s.isdigit():
                raise RobustlabError(f"steps={s!r} is not a whole number", fix="write e.g. steps=10")
            steps = int(s)
        random_start = None
        if "random_start" in values:
            r = values["random_start"][0].lower()
            if r not in _TRUE | _FALSE:
                raise RobustlabError(f"random_start={r!r} is not true or false", fix="write random_start=true or random_start=false")
            random_start = r in _TRUE
        return make_attacks(
            method,
            values["eps"],
            norm=values.get("norm", ["inf"])[0],
            steps=steps,
            step=values.get("step", [None])[0],
            random_start=random_start,
        )
    except RobustlabError as exc:
        raise RobustlabError(exc.problem, thing=raw, fix=exc.fix) from None


def parse_attacks(texts: Sequence[str]) -> list["AttackVariant"]:
    """Parse CLI/suite attack strings (see :func:`parse_attack`) into variants, in order.

    Raises :class:`RobustlabError` (exit 2) for an unknown attack or option, eps <= 0 or > 1, or a
    bad value; a repeated attack (same method and param) is given once.
    """
    if isinstance(texts, str):
        texts = [texts]
    out: list[AttackVariant] = []
    seen: set[tuple[str, str]] = set()
    for text in texts:
        for v in parse_attack(text):
            key = (v.variant, v.param)
            if key not in seen:
                seen.add(key)
                out.append(v)
    return out


@dataclass(eq=False)
class AttackVariant:
    """An attack as an :func:`robustlab.evaluation.engine.evaluate` variant (the attacked subset).

    ``record`` is a live dict (spec + totals, refreshed after every batch) meant for
    ``evaluate(extra_info={"attacks": [v.record, ...]})``; ``last`` is the latest batch's
    :class:`AttackResult` (for ``on_delivered`` callbacks such as :class:`AdversarialWriter`).
    Totals accumulate over every batch the object attacks: use fresh variants (``parse_attacks``)
    for each evaluation.
    """

    spec: AttackSpec
    kind: SetKind = SetKind.ADVERSARIAL
    tally: AttackTally = field(default_factory=AttackTally)
    last: AttackResult | None = field(default=None, repr=False)
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.record.update({"variant": self.variant, "param": self.param, "spec": self.spec.describe(), **self.tally.summary()})

    @property
    def variant(self) -> str:
        return self.spec.method.value

    @property
    def param(self) -> str:
        return self.spec.param

    def apply(self, detector: "Detector", x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (B, H, W, 3) clean images, positive-class labels -> uint8 delivered adversarial images."""
        self.last = run_attack(detector, x, y, self.spec, rng, tally=self.tally)
        self.record.update(self.tally.summary())
        return self.last.images

    def delivered_scores(self, images: np.ndarray) -> np.ndarray | None:
        """float64 (B,) P(positive) of ``images`` when they are this attack's latest delivered batch
        (scored once, by the success check), else None: evaluate then scores them itself."""
        if self.last is None or images is not self.last.images or self.tally.last_scores is None:
            return None
        return self.tally.last_scores

    def diagnostics(self, stats: "VariantStats", rows: Sequence[Any]) -> list[str]:
        """Warnings about this attack's evaluation: eps lost to uint8 delivery, a realized
        perturbation far from eps, identical images, an exactly zero gradient (saturated score)."""
        spec = self.spec
        a = stats.arrays()
        n = len(a["idx"])
        out: list[str] = []
        name = spec.title()
        if n == 0:
            return out
        if spec.eps * 255.0 < 1.0 - 1e-9:
            out.append(
                f"{name}: eps={spec.eps:.4g} is {spec.eps * 255:.2f} grey levels, less than one: uint8 delivery rounds it away and the "
                f"adversarial images equal the clean ones; use eps >= 1/255"
            )
            return out
        if spec.norm is Norm.LINF:
            budget = spec.budget_levels
            realized = np.median(a["linf"])
            if realized < 0.5 * budget:
                out.append(
                    f"{name}: the realized L-inf perturbation (median {realized:g}/255) is far below eps ({budget:g}/255): "
                    f"the perturbation collapsed (zero gradients, or clipping at 0/255 on saturated images)"
                )
            if a["linf"].max() > budget + 1e-9:
                out.append(f"{name}: the realized L-inf perturbation ({a['linf'].max():g}/255) exceeds eps ({budget:g}/255): the images were destroyed beyond the budget")
        else:
            radius = spec.eps * 255.0
            realized = np.median(a["l2"])
            if realized < 0.5 * radius:
                out.append(
                    f"{name}: the realized L2 perturbation (median {realized:.3g}/255) is far below eps ({radius:.3g}/255): rounding "
                    f"to uint8 erased most of it (per-pixel changes under half a grey level); use a larger eps"
                )
            if a["l2"].max() > radius + 1e-6:
                out.append(f"{name}: the realized L2 perturbation ({a['l2'].max():.3g}/255) exceeds eps ({radius:.3g}/255): the images were destroyed beyond the budget")
        unchanged = float(np.mean(a["linf"] == 0))
        if unchanged > 0.5:
            out.append(f"{name}: {unchanged:.0%} of the delivered images are identical to the clean ones")
        t = self.tally
        if t.zero_gradient_tracked and t.zero_gradient / t.zero_gradient_tracked >= ZERO_GRADIENT_WARN:
            sat = float(np.mean((a["clean_scores"] <= 0.0) | (a["clean_scores"] >= 1.0)))
            out.append(
                f"{name}: {t.zero_gradient}/{t.zero_gradient_tracked} images had an exactly zero loss gradient at every step "
                f"({sat:.0%} of clean scores are saturated at exactly 0 or 1): the score saturates and the attack cannot move "
                f"them; robust accuracy is overstated (gradient masking). If the model ends in a probability layer robustlab "
                f"cannot see through, give output: logits and a model that returns logits"
            )
        return out


def attack_info(variants: Sequence[Any]) -> list[dict[str, Any]]:
    """The live ``record`` dicts of the attack variants, for ``evaluate(extra_info={"attacks": ...})``."""
    return [v.record for v in variants if isinstance(v, AttackVariant)]
