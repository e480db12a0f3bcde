"""``auto``: an AutoAttack for binary detectors (protocol ``auto-v1``).

Croce & Hein's AutoAttack needs three classes or more (DLR) and PyTorch; this is its two-class
analogue through ART: APGD with cross-entropy, then APGD with the binary margin loss, then the
score-based Square attack, each on the images the previous stages did not break (a cascade, so
the cost falls as images break). An image counts as robust only if every stage failed on it
(the per-image worst case, by construction); the delivered image is the first that broke it, or
else the one closest to breaking. The stages and their budgets are fixed by the protocol version,
so ``auto-v1`` numbers stay comparable across releases; a run with other budgets says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from robustlab.attacks.art_backend import run_attack
from robustlab.attacks.spec import DEFAULT_APGD_STEPS, DEFAULT_SQUARE_QUERIES, AttackMethod, AttackSpec, Direction, Loss
from robustlab.attacks.totals import attack_totals, budget_diagnostics
from robustlab.enums import SetKind
from robustlab.results import Delivery

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.detector.model import Detector
    from robustlab.results import VariantOutcome

PROTOCOL = "auto-v1"
STAGES = ("apgd-ce", "apgd-margin", "square")
MASKING_SHARE = 0.002  # Square breaking more than this share of the images the white-box stages left: gradient masking


def stage_specs(spec: AttackSpec) -> list[tuple[str, AttackSpec]]:
    """The cascade's stages for an ``auto`` spec: APGD-CE and APGD-margin (``steps``, ``restarts``)
    then Square (``queries``), at the spec's eps and norm, on every image (the direction is
    applied by the engine before the cascade sees the batch)."""
    common = {"eps": spec.eps, "norm": spec.norm}
    return [
        ("apgd-ce", AttackSpec(AttackMethod.APGD, steps=spec.steps, loss=Loss.CE, restarts=spec.restarts, **common)),
        ("apgd-margin", AttackSpec(AttackMethod.APGD, steps=spec.steps, loss=Loss.MARGIN, restarts=spec.restarts, **common)),
        ("square", AttackSpec(AttackMethod.SQUARE, queries=spec.queries, **common)),
    ]


@dataclass(frozen=True)
class AutoVariant:
    """The ``auto`` cascade as an evaluation variant (:class:`robustlab.results.Variant`).

    Per image, ``extras`` carry ``success``, ``psnr``, ``ssim``, ``zero_gradient`` (exactly zero
    gradient at every step of the APGD stages it went through), ``broken_by`` (int8: 0 robust,
    1 APGD-CE, 2 APGD-margin, 3 Square) and ``randomized`` (two clean scorings differed).
    """

    spec: AttackSpec

    @property
    def kind(self) -> SetKind:
        return SetKind.ADVERSARIAL

    @property
    def variant(self) -> str:
        return AttackMethod.AUTO.value

    @property
    def param(self) -> str:
        return self.spec.param

    @property
    def standard(self) -> bool:
        """The protocol's own budgets (100 APGD steps, 1 restart, 5000 Square queries)."""
        return self.spec.steps == DEFAULT_APGD_STEPS and self.spec.restarts == 1 and self.spec.queries == DEFAULT_SQUARE_QUERIES

    def selects(self, y_fake: np.ndarray) -> np.ndarray:
        """bool (B,) the images this cascade runs on (``direction``; ``y_fake`` 1 = fake)."""
        return self.spec.direction.selects(y_fake)

    def apply(self, detector: "Detector", x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Delivery:
        """uint8 (B, H, W, 3) clean images, positive-class labels -> the per-image worst case of the stages."""
        from robustlab.attacks.delivery import _measure, image_ssim

        n = len(x)
        labels = np.asarray(y, np.int64)
        clean = detector.scores(x)
        randomized = detector.scores(x) != clean
        images = x.copy()
        scores = clean.copy()
        # how close each image is to flipping: P(true class), lower is worse for the detector
        closeness = np.where(labels == 1, scores, 1.0 - scores)
        broken_by = np.zeros(n, np.int8)
        zero = np.zeros(n, bool)
        reached_gradient = np.zeros(n, bool)
        seconds: dict[str, float] = {}
        for k, (name, spec) in enumerate(stage_specs(self.spec), start=1):
            todo = np.flatnonzero(broken_by == 0)
            stage_rng = np.random.default_rng(rng.integers(0, 2**63, dtype=np.int64))
            if len(todo) == 0:
                continue
            r = run_attack(detector, x[todo], labels[todo], spec, stage_rng)
            seconds[name] = seconds.get(name, 0.0) + float(sum(r.seconds.values()))
            if r.zero_gradient is not None:
                zero[todo] = np.where(reached_gradient[todo], zero[todo] & r.zero_gradient, r.zero_gradient)
                reached_gradient[todo] = True
            close = np.where(labels[todo] == 1, r.scores, 1.0 - r.scores)
            better = r.success | (close < closeness[todo])
            pick = todo[better]
            images[pick] = r.images[better]
            scores[pick] = r.scores[better]
            closeness[pick] = close[better]
            broken_by[todo[r.success]] = k
        _, _, psnr = _measure(x, images)
        extras = {"success": broken_by > 0, "psnr": psnr, "ssim": image_ssim(x, images), "zero_gradient": zero, "broken_by": broken_by, "randomized": randomized}
        return Delivery(images, scores, extras, seconds)

    def breakdown(self, outcome: "VariantOutcome") -> dict[str, Any]:
        """How many images each stage broke, and how many stayed robust (run.json's ``cascade``)."""
        by = np.asarray(outcome.extras.get("broken_by", np.zeros(0, np.int8)))
        counts = {name: int((by == k).sum()) for k, name in enumerate(STAGES, start=1)}
        return {"images": outcome.n, "broken": counts, "robust": int((by == 0).sum())}

    def summary(self, outcome: "VariantOutcome") -> dict[str, Any]:
        """run.json's record: the protocol, its stages, what each broke, and the usual totals."""
        b = self.breakdown(outcome)
        stages = [{"stage": name, **spec.describe()} for name, spec in stage_specs(self.spec)]
        parts = ", ".join(f"{name.upper()} {b['broken'][name]}" for name in STAGES)
        line = f"{self.spec.title()} [{PROTOCOL}{'' if self.standard else ', custom budgets'}]: of {b['images']} images broke {parts}; {b['robust']} robust"
        return {
            "variant": self.variant,
            "param": self.param,
            "spec": {**self.spec.describe(), "protocol": PROTOCOL, "standard_budgets": self.standard, "stages": stages},
            "cascade": {**b, "line": line},
            **attack_totals(outcome),
        }

    def diagnostics(self, outcome: "VariantOutcome", threshold: float) -> list[str]:
        """AutoAttack's flags: Square breaking images the gradient stages could not (gradient
        masking), zero gradients, a randomized detector; plus the budget checks every attack gets."""
        if outcome.n == 0:
            return []
        name = f"{self.spec.title()} [{PROTOCOL}]"
        out = [d.replace(self.spec.title(), name, 1) for d in budget_diagnostics(self.spec, outcome)]
        b = self.breakdown(outcome)
        left = b["broken"]["square"] + b["robust"]
        if b["broken"]["square"] and b["broken"]["square"] > MASKING_SHARE * max(left, 1):
            out.append(
                f"{name}: the black-box Square attack broke {b['broken']['square']} of the {left} images both white-box APGD attacks "
                f"left: the gradients mislead the attacks (suspected gradient masking); trust the black-box number, and rerun "
                f"white-box attacks only on a detector whose gradients are informative"
            )
        zero = np.asarray(outcome.extras.get("zero_gradient", np.zeros(0, bool)))
        if len(zero) and zero.mean() >= 0.10:
            out.append(f"{name}: {int(zero.sum())}/{len(zero)} images had an exactly zero gradient at every APGD step (a saturated score): only Square could move them")
        rand = np.asarray(outcome.extras.get("randomized", np.zeros(0, bool)))
        if rand.any():
            out.append(f"{name}: {int(rand.sum())}/{len(rand)} images got different scores from two identical clean passes: the detector is randomized, and a single attack run understates what an attacker averaging over its randomness (EOT) finds")
        return out


def auto_variant(eps: float, *, direction: "str | Direction" = Direction.BOTH) -> AutoVariant:
    """``auto`` at ``eps`` (L-inf) with the protocol's budgets."""
    return AutoVariant(AttackSpec(AttackMethod.AUTO, eps, direction=direction))


__all__ = ["PROTOCOL", "STAGES", "AutoVariant", "auto_variant", "stage_specs"]
