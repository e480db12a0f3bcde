"""Attacks as evaluation variants: AttackVariant runs an AttackSpec on each batch of the attacked subset; parse_attacks reads fgsm:eps=2/255,8/255-style strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from robustlab.attacks.art_backend import run_attack
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
from robustlab.results import Delivery

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.detector.model import Detector
    from robustlab.results import VariantOutcome

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


@dataclass(frozen=True)
class AttackVariant:
    """An attack as an evaluation variant (:class:`robustlab.results.Variant`), run on the attacked
    subset: an immutable value (the :class:`AttackSpec`), reusable across evaluations.

    :meth:`apply` runs :func:`run_attack` on a batch and returns the delivered images with the
    scores its success check computed and, per image, ``success``, ``psnr``, ``ssim`` and
    ``zero_gradient``; :meth:`summary` and :meth:`diagnostics` read the engine's outcome.
    """

    spec: AttackSpec

    @property
    def kind(self) -> SetKind:
        return SetKind.ADVERSARIAL

    @property
    def variant(self) -> str:
        return self.spec.method.value

    @property
    def param(self) -> str:
        return self.spec.param

    def apply(self, detector: "Detector", x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Delivery:
        """uint8 (B, H, W, 3) clean images, positive-class labels -> the delivered adversarial batch."""
        r = run_attack(detector, x, y, self.spec, rng)
        extras = {"success": r.success, "psnr": r.psnr, "ssim": r.ssim}
        if r.zero_gradient is not None:
            extras["zero_gradient"] = r.zero_gradient
        return Delivery(r.images, r.scores, extras, r.seconds)

    def summary(self, outcome: "VariantOutcome") -> dict[str, Any]:
        """This attack's totals for run.json: images, success rate, unchanged images, zero gradients,
        mean PSNR / SSIM, seconds per stage of :func:`run_attack`."""
        return {"variant": self.variant, "param": self.param, "spec": self.spec.describe(), **attack_totals(outcome)}

    def diagnostics(self, outcome: "VariantOutcome", threshold: float) -> list[str]:
        """Warnings about this attack's evaluation: eps lost to uint8 delivery, a realized
        perturbation far from eps, identical images, an exactly zero gradient (saturated score)."""
        spec = self.spec
        if outcome.n == 0:
            return []
        name = spec.title()
        if spec.eps * 255.0 < 1.0 - 1e-9:
            return [
                f"{name}: eps={spec.eps:.4g} is {spec.eps * 255:.2f} grey levels, less than one: uint8 delivery rounds it away and the "
                f"adversarial images equal the clean ones; use eps >= 1/255"
            ]
        out = _budget_diagnostics(spec, outcome)
        unchanged = float(np.mean(outcome.linf == 0))
        if unchanged > 0.5:
            out.append(f"{name}: {unchanged:.0%} of the delivered images are identical to the clean ones")
        zero = outcome.extras.get("zero_gradient")
        if zero is not None and len(zero) and zero.mean() >= ZERO_GRADIENT_WARN:
            sat = float(np.mean((outcome.clean_scores <= 0.0) | (outcome.clean_scores >= 1.0)))
            out.append(
                f"{name}: {int(zero.sum())}/{len(zero)} images had an exactly zero loss gradient at every step "
                f"({sat:.0%} of clean scores are saturated at exactly 0 or 1): the score saturates and the attack cannot move "
                f"them; robust accuracy is overstated (gradient masking). If the model ends in a probability layer robustlab "
                f"cannot see through, give output: logits and a model that returns logits"
            )
        return out


def _budget_diagnostics(spec: AttackSpec, outcome: "VariantOutcome") -> list[str]:
    """The realized perturbation against the budget: collapsed far below it, or beyond it."""
    name = spec.title()
    out = []
    if spec.norm is Norm.LINF:
        budget = spec.budget_levels
        realized = np.median(outcome.linf)
        if realized < 0.5 * budget:
            out.append(
                f"{name}: the realized L-inf perturbation (median {realized:g}/255) is far below eps ({budget:g}/255): "
                f"the perturbation collapsed (zero gradients, or clipping at 0/255 on saturated images)"
            )
        if outcome.linf.max() > budget + 1e-9:
            out.append(f"{name}: the realized L-inf perturbation ({outcome.linf.max():g}/255) exceeds eps ({budget:g}/255): the images were destroyed beyond the budget")
    else:
        radius = spec.eps * 255.0
        realized = np.median(outcome.l2)
        if realized < 0.5 * radius:
            out.append(
                f"{name}: the realized L2 perturbation (median {realized:.3g}/255) is far below eps ({radius:.3g}/255): rounding "
                f"to uint8 erased most of it (per-pixel changes under half a grey level); use a larger eps"
            )
        if outcome.l2.max() > radius + 1e-6:
            out.append(f"{name}: the realized L2 perturbation ({outcome.l2.max():.3g}/255) exceeds eps ({radius:.3g}/255): the images were destroyed beyond the budget")
    return out


def attack_totals(outcome: "VariantOutcome") -> dict[str, Any]:
    """Totals of an attack's per-image outcome (for run.json)."""
    n = outcome.n
    ex = outcome.extras
    success = np.asarray(ex.get("success", np.zeros(0, bool)), bool)
    psnr = np.asarray(ex.get("psnr", np.zeros(0)), np.float64)
    ssim = np.asarray(ex.get("ssim", np.zeros(0)), np.float64)
    zero = ex.get("zero_gradient")
    finite = psnr[np.isfinite(psnr)]
    return {
        "images": n,
        "success": int(success.sum()),
        "success_rate": float(success.sum()) / n if n else None,
        "unchanged": int((outcome.linf == 0).sum()),
        "zero_gradient": int(np.asarray(zero).sum()) if zero is not None else 0,
        "psnr_mean_db": float(finite.mean()) if len(finite) else None,
        "ssim_mean": float(ssim.mean()) if len(ssim) else None,
        "ssim_min": float(ssim.min()) if len(ssim) else None,
        "seconds": {stage: round(t, 4) for stage, t in outcome.seconds.items() if stage != "total"},
    }