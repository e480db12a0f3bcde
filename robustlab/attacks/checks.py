"""Checks that catch broken evaluations: cross-attack diagnostics (gradient masking, a broken attack) and the large-eps PGD sanity check.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from robustlab.attacks.art_backend import art_classifier, run_attack
from robustlab.attacks.spec import AttackMethod, AttackSpec, Norm
from robustlab.attacks.variant import AttackVariant

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.data import Dataset
    from robustlab.detector.model import Detector
    from robustlab.evaluation.engine import EvaluationResult

# --sanity: a PGD this strong must drive any working, differentiable detector to ~0 accuracy
SANITY_EPS = 64 / 255
SANITY_STEPS = 20
SANITY_MAX_ACCURACY = 0.05
SANITY_IMAGES = 64
# diagnostics
CHECK_EPS = 4 / 255  # at and above this L-inf eps an attack that does not hurt is suspicious


# --------------------------------------------------------------------------- checks across attacks


def _accuracy(y: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    from robustlab.metrics import predict

    return float(np.mean(predict(scores, threshold) == y)) if len(y) else math.nan


# (stronger, weaker): the first at the same eps and norm should be at least as strong as the second
_ORDER = (
    ("pgd", "fgsm", "PGD with the same budget should be at least as strong: suspect gradient masking (obfuscated or noisy gradients), too few steps or too small a step"),
    ("apgd", "pgd", "APGD adapts its step size and should match PGD at the same budget: suspect gradient masking (noisy gradients), or too few APGD steps"),
    ("square", "fgsm", "on a smooth detector Square with enough queries matches a single gradient step: raise queries, or suspect a score that hides the margin (rounded, clipped)"),
)


def _attack_spec(v: Any) -> "AttackSpec | None":
    from robustlab.attacks.cascade import AutoVariant

    return v.spec if isinstance(v, (AttackVariant, AutoVariant)) else None


def cross_attack_checks(result: "EvaluationResult") -> list[str]:
    """A check (``checks=[cross_attack_checks]``): warnings that point to a broken evaluation.

    * an L-inf attack at eps >= 4/255 whose adversarial accuracy is not below the clean accuracy of
      the same images (the attack did nothing: gradient masking, a wrong spec, a broken attack);
    * at the same eps, norm and direction: PGD weaker than FGSM, APGD weaker than PGD, Square weaker
      than FGSM (see ``_ORDER``), and ``auto`` weaker than any single attack (its own stages make it
      the worst case per image; a stronger outside attack means its budgets are too small).
    """
    threshold = float(result.info.threshold)
    out: list[str] = []
    acc: dict[tuple[str, float, str, str], tuple[float, int, str]] = {}
    for o in result.outcomes:
        spec = _attack_spec(o.variant)
        if spec is None or o.n == 0 or spec.eps is None:
            continue
        adv = _accuracy(o.y, o.scores, threshold)
        clean = _accuracy(o.y, o.clean_scores, threshold)
        if spec.norm is Norm.LINF and spec.eps >= CHECK_EPS - 1e-9 and clean > 0 and adv >= clean:
            out.append(
                f"{spec.title()}: adversarial accuracy {adv:.1%} is not below the clean accuracy {clean:.1%} of the same {o.n} images "
                f"at eps >= 4/255: the attack did not hurt; suspect gradient masking (a saturated or non-differentiable score), "
                f"a wrong preprocessing spec (scale, color) or a broken attack"
            )
        key = (spec.method.value, round(spec.eps, 6), spec.norm.value, spec.direction.value)
        prev = acc.get(key)
        if prev is None or adv < prev[0]:  # strongest setting per method, eps, norm and direction
            acc[key] = (adv, o.n, spec.title())

    def weaker(a: tuple[float, int, str], b: tuple[float, int, str]) -> bool:
        return a[0] > b[0] + max(0.02, 1.5 / min(a[1], b[1]))

    for (method, eps, norm, direction), mine in acc.items():
        for strong, weak, why in _ORDER:
            other = acc.get((weak, eps, norm, direction))
            if method == strong and other is not None and weaker(mine, other):
                out.append(f"{mine[2]} is weaker than {other[2]}: accuracy {mine[0]:.1%} vs {other[0]:.1%}; {why}")
        if method == AttackMethod.AUTO.value:
            for (m2, e2, n2, d2), single in acc.items():
                if m2 != method and (e2, n2, d2) == (eps, norm, direction) and weaker(mine, single):
                    out.append(
                        f"{mine[2]} is weaker than {single[2]}: accuracy {mine[0]:.1%} vs {single[0]:.1%}; the cascade should be the worst "
                        f"case: raise its budgets (steps=, queries=, restarts=) and report the minimum of the two"
                    )
    return out


@dataclass(frozen=True)
class SanityOutcome:
    """What the large-eps PGD sanity check found (``run.json``'s ``sanity``)."""

    attack: dict[str, Any]
    images: int
    clean_accuracy: float | None
    adversarial_accuracy: float | None
    max_accuracy: float = SANITY_MAX_ACCURACY

    @property
    def passed(self) -> bool:
        return self.adversarial_accuracy is not None and self.adversarial_accuracy <= self.max_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def warnings(self) -> list[str]:
        if self.images == 0 or self.passed:
            return []
        return [
            f"sanity check failed: PGD at eps=64/255 ({SANITY_STEPS} steps, L-inf) left accuracy at {self.adversarial_accuracy:.1%} on {self.images} images "
            f"(expected <= {SANITY_MAX_ACCURACY:.0%}): the attack cannot find the detector's weak spots; suspect gradient masking, "
            f"a saturated or non-differentiable score, or a wrong preprocessing spec; this run's attack rows overstate robustness"
        ]


def sanity_check(detector: "Detector", data: "Dataset", *, seed: int = 0, batch_size: int = 32, max_images: int = SANITY_IMAGES) -> SanityOutcome:
    """A large-eps PGD (L-inf eps=64/255, 20 steps) on up to ``max_images`` images (stratified,
    seeded) must drive accuracy to <= 5%; when it does not, the attack cannot find the detector's
    weak spots (gradient masking, a saturated or non-differentiable score, a wrong spec)."""
    from robustlab.sampling import stratified_subset

    spec = AttackSpec(AttackMethod.PGD, SANITY_EPS, Norm.LINF, steps=SANITY_STEPS, random_start=True)
    fraction = min(1.0, max_images / max(len(data), 1))
    idx = stratified_subset(data.labels_for(detector.positive), fraction, seed)
    rng = np.random.default_rng([seed, 0x5A17])
    n = correct = clean_correct = 0
    for b in data.batches(detector.input_size, method=detector.spec.preprocessing, batch_size=batch_size, indices=idx, positive=detector.positive):
        if len(b.idx) == 0:
            continue
        r = run_attack(detector, b.x, b.y, spec, rng)
        n += len(b.y)
        correct += int((~r.success).sum())
        clean_correct += int(np.sum((detector.scores(b.x) >= detector.threshold).astype(np.int64) == b.y))
    return SanityOutcome(spec.describe(), n, clean_correct / n if n else None, correct / n if n else None)


def sanity_message(outcome: "SanityOutcome | None") -> str:
    """One line about a finished sanity check (for stderr)."""
    if outcome is None or outcome.images == 0:
        return "sanity check: no image could be attacked"
    verdict = "passed" if outcome.passed else "FAILED"
    return (
        f"sanity check {verdict}: PGD eps=64/255, {SANITY_STEPS} steps drove accuracy from {outcome.clean_accuracy:.1%} to "
        f"{outcome.adversarial_accuracy:.1%} on {outcome.images} images (must be <= {SANITY_MAX_ACCURACY:.0%})"
    )


def attack_checks(detector: "Detector", variants: Sequence[Any], *, sanity: bool = False) -> list[Callable[["EvaluationResult"], list[str]]]:
    """The checks for a run with attacks: :func:`cross_attack_checks` when an attack runs. With a
    white-box attack (fgsm, pgd, apgd, auto) or ``sanity``, a detector without input gradients is
    refused here (RobustlabError naming the black-box attacks), before any work; black-box attacks
    (square, hsj) need no gradient."""
    specs = [s for s in (_attack_spec(v) for v in variants) if s is not None]
    attacks = bool(specs)
    if sanity or any(s.white_box for s in specs):
        art_classifier(detector)  # a detector without input gradients stops here, with the reason
    return [cross_attack_checks] if attacks else []
