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


def cross_attack_checks(result: "EvaluationResult") -> list[str]:
    """A check (``checks=[cross_attack_checks]``): warnings that point to a broken evaluation.

    * an L-inf attack at eps >= 4/255 whose adversarial accuracy is not below the clean accuracy of
      the same images (the attack did nothing: gradient masking, a wrong spec, a broken attack);
    * PGD weaker than FGSM at the same eps and norm (PGD with the same budget is at least as strong).
    """
    threshold = float(result.info.threshold)
    out: list[str] = []
    acc: dict[tuple[str, float, str], tuple[float, int, str]] = {}
    for o in result.outcomes:
        v = o.variant
        if not isinstance(v, AttackVariant) or o.n == 0:
            continue
        adv = _accuracy(o.y, o.scores, threshold)
        clean = _accuracy(o.y, o.clean_scores, threshold)
        spec = v.spec
        if spec.norm is Norm.LINF and spec.eps >= CHECK_EPS - 1e-9 and clean > 0 and adv >= clean:
            out.append(
                f"{spec.title()}: adversarial accuracy {adv:.1%} is not below the clean accuracy {clean:.1%} of the same {o.n} images "
                f"at eps >= 4/255: the attack did not hurt; suspect gradient masking (a saturated or non-differentiable score), "
                f"a wrong preprocessing spec (scale, color) or a broken attack"
            )
        key = (spec.method.value, round(spec.eps, 6), spec.norm.value)
        prev = acc.get(key)
        if prev is None or adv < prev[0]:  # strongest setting per method, eps and norm
            acc[key] = (adv, o.n, spec.title())
    for (method, eps, norm), (pgd_acc, n, title) in acc.items():
        if method != AttackMethod.PGD.value:
            continue
        fgsm = acc.get((AttackMethod.FGSM.value, eps, norm))
        if fgsm is None:
            continue
        fgsm_acc, fgsm_n, fgsm_title = fgsm
        tolerance = max(0.02, 1.5 / min(n, fgsm_n))
        if pgd_acc > fgsm_acc + tolerance:
            out.append(
                f"{title} is weaker than {fgsm_title}: accuracy {pgd_acc:.1%} vs {fgsm_acc:.1%}; PGD with the same budget should be "
                f"at least as strong: suspect gradient masking (obfuscated or noisy gradients), too few steps or too small a step"
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
    """The checks for a run with attacks: :func:`cross_attack_checks` when an attack runs. With
    attacks or ``sanity``, a detector without input gradients is refused here (RobustlabError),
    before any work."""
    attacks = any(isinstance(v, AttackVariant) for v in variants)
    if attacks or sanity:
        art_classifier(detector)  # a detector without input gradients stops here, with the reason
    return [cross_attack_checks] if attacks else []
