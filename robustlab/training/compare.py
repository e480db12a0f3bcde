"""The before/after evaluation of a fine-tuned detector: default variants, comparison rows and table.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def default_eval_variants(eps: float, attacks: Sequence[str] | None, corruptions: Sequence[str] | None) -> list[Any]:
    """The before/after variants: FGSM and PGD at the training eps + corruptions (or the given specs)."""
    from robustlab.metrics import format_eps

    e = format_eps(eps)
    attack_specs = list(attacks) if attacks is not None else [f"fgsm:eps={e}", f"pgd:eps={e}"]
    corruption_specs = list(corruptions) if corruptions is not None else list(DEFAULT_EVAL_CORRUPTIONS)
    variants: list[Any] = []
    if attack_specs:
        from robustlab.attacks.variant import parse_attacks

        variants += parse_attacks(attack_specs)
    if corruption_specs:
        from robustlab.corruptions.variant import parse_corruptions

        variants += parse_corruptions(corruption_specs)
    return variants


DEFAULT_EVAL_CORRUPTIONS = ("jpeg:3", "blur:3", "resize:3")


def comparison_rows(before: Sequence[Any], after: Sequence[Any]) -> list[dict[str, Any]]:
    """Side-by-side rows keyed by (set, variant, param): metric_before, metric_after, delta."""
    metrics = ("accuracy", "precision", "recall", "f1", "auc")
    after_by = {(r.set, r.variant, r.param): r for r in after}
    out = []
    for r in before:
        a = after_by.get((r.set, r.variant, r.param))
        row: dict[str, Any] = {"set": r.set, "variant": r.variant, "param": r.param, "n": r.n}
        for m in metrics:
            b_v = getattr(r, m)
            a_v = getattr(a, m) if a is not None else None
            row[f"{m}_before"] = b_v
            row[f"{m}_after"] = a_v
            row[f"{m}_delta"] = None if (a_v is None or b_v is None) else a_v - b_v
        row["threshold_before"] = r.threshold
        row["threshold_after"] = a.threshold if a is not None else None
        out.append(row)
    return out


def comparison_markdown(rows: Sequence[Mapping[str, Any]], *, title: str, summary: Sequence[str] = ()) -> str:
    from robustlab.reporting.tables import param_display, row_title

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    def pts(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:+.2f} pts"

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [f"# {title}", ""]
    lines += [*summary, ""] if summary else []
    def title(r: Mapping[str, Any]) -> str:
        if r["set"] == "mixed":
            param = param_display(r.get("param") or "")
            return f"(Original + {r['variant'].upper()} Adversarial) Images" + (f" ({param})" if param else "")
        return row_title(r)

    lines += ["| Test Data | Accuracy before | Accuracy after | Change | F1 before | F1 after | AUC before | AUC after |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {title(r)} | {pct(r['accuracy_before'])} | {pct(r['accuracy_after'])} | {pts(r['accuracy_delta'])} | "
            f"{pct(r['f1_before'])} | {pct(r['f1_after'])} | {num(r['auc_before'])} | {num(r['auc_after'])} |"
        )
    return "\n".join(lines) + "\n"


def _checks(detector: Any, variants: Sequence[Any]) -> tuple[Any, ...]:
    """The checks for a before/after evaluation: the attack module's diagnostics (an attack that
    does not hurt, FGSM beating PGD: signs of gradient masking)."""
    from robustlab.attacks.checks import attack_checks

    return tuple(attack_checks(detector, variants))