"""Attacks as evaluation variants: AttackVariant runs an AttackSpec on each batch of the attacked subset; parse_attacks reads fgsm:eps=2/255,8/255-style strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from robustlab.attacks.art_backend import run_attack
from robustlab.attacks.eot import CHAIN_EXAMPLE, EOT, Chain, parse_chain
from robustlab.attacks.spec import (
    _FALSE,
    _OPTIONS,
    _TRUE,
    ZERO_GRADIENT_WARN,
    AttackMethod,
    AttackSpec,
    Direction,
    Loss,
    Norm,
    parse_eps,
)
from robustlab.attacks.totals import attack_totals, budget_diagnostics
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
    loss: "str | Loss | None" = None,
    queries: int | None = None,
    restarts: int | None = None,
    direction: "str | Direction" = Direction.BOTH,
    eot: "str | Chain | None" = None,
    samples: int | None = None,
    launder: "str | Chain | None" = None,
) -> list[Any]:
    """One variant per eps value (an :class:`AttackVariant`, or an
    :class:`robustlab.attacks.cascade.AutoVariant` for ``auto``); every value checked
    (RobustlabError, exit 2). ``hsj`` alone may have no eps (one unbounded variant).

    ``eot`` (fgsm / pgd / apgd): a laundering chain (``jpeg:50-95+resize:0.5-1.0``) each gradient
    is averaged over, ``samples`` draws (default 8). ``launder``: a chain applied with Pillow to
    the delivered images, as a second variant per eps (a :class:`LaunderedVariant`)."""
    m = AttackMethod.parse(method, what="attack")
    n = Norm.from_text(norm)
    d = Direction.parse(direction, what="direction")
    options = {"steps": steps, "step": step, "random_start": random_start, "loss": loss, "queries": queries, "restarts": restarts, "eot": eot, "samples": samples, "launder": launder}
    given = [name for name, v in options.items() if v is not None and name not in _OPTIONS[m]]
    if given:
        hint = "these are PGD options; use pgd for an iterative attack" if m is AttackMethod.FGSM else f"{m.value} takes: {', '.join(_OPTIONS[m])}"
        raise RobustlabError(f"{m.value} has no option {', '.join(given)}", thing=m.value, fix=hint)
    if not eps and m is not AttackMethod.HSJ:
        raise RobustlabError("no eps given", thing=m.value, fix=f"write e.g. {m.value}:eps=8/255")
    values: list[float | None] = [parse_eps(e) for e in eps] or [None]
    step_value = None if step is None else parse_eps(step, what="step")
    if samples is not None and eot is None:
        raise RobustlabError("samples= is the number of EOT draws and needs eot=", thing=m.value, fix=f"add eot={CHAIN_EXAMPLE}, or drop samples=")
    eot_value = None if eot is None else EOT(eot if isinstance(eot, Chain) else parse_chain(eot, what="eot"), 8 if samples is None else samples)
    launder_chain = None if launder is None else (launder if isinstance(launder, Chain) else parse_chain(launder, what="launder"))
    out: list[Any] = []
    for e in values:
        spec = AttackSpec(m, e, n, steps=steps, step=step_value, random_start=random_start, loss=loss, queries=queries, restarts=restarts, direction=d, eot=eot_value)
        if m is AttackMethod.AUTO:
            from robustlab.attacks.cascade import AutoVariant

            attack: Any = AutoVariant(spec)
        else:
            attack = AttackVariant(spec)
        out.append(attack)
        if launder_chain is not None:
            out.append(LaunderedVariant(attack, launder_chain))
    return out


def _whole(key: str, text: str, example: str) -> int:
    """A positive whole number option (``steps``, ``queries``, ``restarts``), or a RobustlabError."""
    t = text.strip()
    if t.startswith("-") and t[1:].isdigit():
        raise RobustlabError(f"{key}={t} must be at least 1", fix=f"write e.g. {key}={example}")
    if not t.isdigit():
        raise RobustlabError(f"{key}={t!r} is not a whole number", fix=f"write e.g. {key}={example}")
    return int(t)


def parse_attack(text: str) -> list[Any]:
    """``"pgd:eps=2/255,8/255,steps=10,step=2/255,norm=inf,random_start=true"`` -> variants.

    Options are ``key=value`` separated by commas; bare values after ``eps=`` are more eps values
    (one variant per eps). Every method takes ``eps``, ``norm`` and ``direction``
    (``evade|frame|both``); PGD also ``steps``, ``step`` and ``random_start``; APGD ``steps``,
    ``loss`` (``ce|margin``) and ``restarts``; ``square`` and ``hsj`` ``queries`` (``hsj`` needs
    no eps); ``auto`` ``steps``, ``queries`` and ``restarts`` (its stages' budgets). fgsm, pgd and
    apgd take ``eot=jpeg:50-95+resize:0.5-1.0,samples=8`` (gradients averaged over the chain);
    every method ``launder=CHAIN`` (a second variant: the delivered images laundered). Unknown names,
    eps outside (0, 1] and bad values raise a RobustlabError.
    """
    raw = str(text).strip()
    name, _, rest = raw.partition(":")
    name = name.strip().lower()
    try:
        method = AttackMethod.parse(name, what="attack", thing=raw)
    except RobustlabError as exc:
        raise RobustlabError(exc.problem, thing=raw, fix=f"use one of {', '.join(m.value for m in AttackMethod)}, e.g. fgsm:eps=8/255 or apgd:eps=8/255,loss=margin") from None
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
    if "eps" not in values and method is not AttackMethod.HSJ:
        raise RobustlabError("no eps given", thing=raw, fix=f"write e.g. {method.value}:eps=8/255")
    try:
        one = {k: v[0] for k, v in values.items() if k != "eps"}
        random_start = None
        if "random_start" in one:
            r = one["random_start"].lower()
            if r not in _TRUE | _FALSE:
                raise RobustlabError(f"random_start={r!r} is not true or false", fix="write random_start=true or random_start=false")
            random_start = r in _TRUE
        examples = {"steps": "10", "queries": "5000", "restarts": "1", "samples": "8"}
        whole = {k: _whole(k, one[k], examples[k]) for k in examples if k in one}
        return make_attacks(
            method,
            values.get("eps", []),
            norm=one.get("norm", "inf"),
            step=one.get("step"),
            random_start=random_start,
            loss=one.get("loss"),
            direction=one.get("direction", "both"),
            eot=one.get("eot"),
            launder=one.get("launder"),
            **whole,
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

    def selects(self, y_fake: np.ndarray) -> np.ndarray:
        """bool (B,) the images of a batch this attack runs on (``y_fake`` int (B,), 1 = fake):
        all of them, or only fakes (``direction=evade``) or only real ones (``frame``)."""
        return self.spec.direction.selects(y_fake)

    def apply(self, detector: "Detector", x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Delivery:
        """uint8 (B, H, W, 3) clean images, positive-class labels -> the delivered adversarial batch."""
        r = run_attack(detector, x, y, self.spec, rng)
        return Delivery(r.images, r.scores, result_extras(r), r.seconds)

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
        if spec.eps is None:  # hsj without a budget: its perturbation is what it found
            return []
        if spec.eps * 255.0 < 1.0 - 1e-9:
            return [
                f"{name}: eps={spec.eps:.4g} is {spec.eps * 255:.2f} grey levels, less than one: uint8 delivery rounds it away and the "
                f"adversarial images equal the clean ones; use eps >= 1/255"
            ]
        out = budget_diagnostics(spec, outcome)
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


def result_extras(r: Any) -> dict[str, np.ndarray]:
    """The per-image arrays of an :class:`~robustlab.attacks.delivery.AttackResult` a Delivery carries."""
    extras = {"success": r.success, "psnr": r.psnr, "ssim": r.ssim}
    if r.zero_gradient is not None:
        extras["zero_gradient"] = r.zero_gradient
    if r.queries is not None:
        extras["queries"] = r.queries
    return extras


@dataclass(frozen=True)
class LaunderedVariant:
    """"Attack then launder": ``attack`` (an :class:`AttackVariant` or ``AutoVariant``) delivers its
    images, then the real Pillow ``chain`` (:meth:`robustlab.attacks.eot.Chain.launder`, parameters
    drawn per image) is applied to them, as a platform would on upload. Its rows are the attack's
    ``variant`` with ``laundered=CHAIN`` added to the ``param``; ``success`` is measured after
    laundering. The attack runs again for this variant with a generator spawned from its own
    ``rng`` (same seed, same bytes), so its delivered images are a fresh seeded draw of the attack.
    """

    attack: Any
    chain: Chain

    @property
    def kind(self) -> SetKind:
        return SetKind.ADVERSARIAL

    @property
    def variant(self) -> str:
        return self.attack.variant

    @property
    def param(self) -> str:
        return f"{self.attack.param},laundered={self.chain.text}"

    @property
    def spec(self) -> AttackSpec:
        return self.attack.spec

    def selects(self, y_fake: np.ndarray) -> np.ndarray:
        """bool (B,): the images the wrapped attack runs on."""
        return self.attack.selects(y_fake)

    def apply(self, detector: "Detector", x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Delivery:
        """uint8 (B, H, W, 3) clean images, positive-class labels -> the attack's delivered images,
        laundered (uint8 (B, H, W, 3)); ``success`` is the detector being wrong on them."""
        import time

        from robustlab.metrics import predict

        attack_rng, launder_rng = rng.spawn(2)
        d = self.attack.apply(detector, x, y, attack_rng)
        t = time.perf_counter()
        images = self.chain.launder(d.images, launder_rng)
        laundered = time.perf_counter() - t
        scores = detector.scores(images)
        extras = {k: v for k, v in d.extras.items() if k not in ("success", "psnr", "ssim")}
        extras["success"] = predict(scores, detector.threshold) != np.asarray(y).reshape(-1)
        if "success" in d.extras:
            extras["delivered_success"] = np.asarray(d.extras["success"], bool)
        seconds = {**d.seconds, "launder": laundered}
        return Delivery(images, scores, extras, seconds)

    def summary(self, outcome: "VariantOutcome") -> dict[str, Any]:
        """The totals of :meth:`AttackVariant.summary` after laundering, plus the laundering chain and
        the share of images the attack fooled before laundering."""
        out = {"variant": self.variant, "param": self.param, "spec": {**self.spec.describe(), "laundered": self.chain.text}, **attack_totals(outcome)}
        before = outcome.extras.get("delivered_success")
        if before is not None and len(before):
            out["success_before_laundering"] = float(np.mean(before))
        return out

    def diagnostics(self, outcome: "VariantOutcome", threshold: float) -> list[str]:
        """None of its own: the attack's own row carries the attack's warnings."""
        return []
