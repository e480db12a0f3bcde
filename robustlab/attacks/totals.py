"""What an attack did, read from its outcome: totals for run.json and the budget diagnostics
(shared by single attacks and the auto cascade).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from robustlab.attacks.spec import AttackSpec, Norm
from robustlab.enums import SetKind

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.results import VariantOutcome




def budget_diagnostics(spec: AttackSpec, outcome: "VariantOutcome") -> list[str]:
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
    queries = ex.get("queries")
    extra: dict[str, Any] = {}
    if queries is not None and len(queries):
        extra = {"queries_mean": float(np.mean(queries)), "queries_max": int(np.max(queries))}
    if n and outcome.variant.kind is SetKind.ADVERSARIAL:
        extra["linf_median"] = float(np.median(outcome.linf))
        extra["l2_median"] = float(np.median(outcome.l2))
    return {**extra,
        "images": n,
        "success": int(success.sum()),
        "success_rate": float(success.sum()) / n if n else None,
        "unchanged": int((outcome.linf == 0).sum()),
        "zero_gradient": int(np.asarray(zero).sum()) if zero is not None else 0,
        "psnr_mean_db": float(finite.mean()) if len(finite) else None,
        "ssim_mean": float(ssim.mean()) if len(ssim) else None,
        "ssim_min": float(ssim.min()) if len(ssim) else None,
        "seconds": {stage: round(t, 4) for stage, t in outcome.seconds.items() if stage != "total"},
        "seconds_per_image": round(outcome.seconds.get("total", 0.0) / n, 6) if n else None,
    }
