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
    """Side-by-side rows keyed by (set, variant, param): ``metric_before``, ``metric_after``, ``metric_delta``
    (after minus before) for accuracy, precision, recall, F1 and AUC, and both thresholds.

    ``before`` / ``after``: the MetricsRows of the input and the new detector; paired through
    :func:`robustlab.reporting.baseline.compare_rows` (the input detector is the baseline).
    """
    from robustlab.reporting.baseline import COMPARED_METRICS, compare_rows

    before_d = [_as_dict(r) for r in before]
    after_d = [_as_dict(r) for r in after]
    paired = {(c.row["set"], c.row["variant"], c.row["param"]): c for c in compare_rows(after_d, before_d, COMPARED_METRICS)}
    out = []
    for r in before_d:
        c = paired.get((r["set"], r["variant"], r["param"]))
        row: dict[str, Any] = {"set": r["set"], "variant": r["variant"], "param": r["param"], "n": r["n"]}
        for m in COMPARED_METRICS:
            d = next((d for d in c.deltas if d.metric == m), None) if c is not None else None
            row[f"{m}_before"] = r.get(m)
            row[f"{m}_after"] = None if d is None else d.run
            row[f"{m}_delta"] = None if d is None else d.delta
        row["threshold_before"] = r["threshold"]
        row["threshold_after"] = c.row["threshold"] if c is not None else None
        out.append(row)
    return out


def _as_dict(row: Any) -> dict[str, Any]:
    return row.to_dict() if hasattr(row, "to_dict") else dict(row)


def comparison_markdown(rows: Sequence[Mapping[str, Any]], *, title: str, summary: Sequence[str] = ()) -> str:
    """``comparison.md``: one table, each row titled as users publish it (mixed rows name their attack,
    :func:`robustlab.reporting.baseline.comparison_title`), accuracy / F1 / AUC before and after."""
    from robustlab.reporting.baseline import comparison_title
    from robustlab.reporting.tables import md_escape

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    def pts(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:+.2f} pts"

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [f"# {title}", ""]
    lines += [*summary, ""] if summary else []
    lines += ["| Test Data | Accuracy before | Accuracy after | Change | F1 before | F1 after | AUC before | AUC after |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {md_escape(comparison_title(r))} | {pct(r['accuracy_before'])} | {pct(r['accuracy_after'])} | {pts(r['accuracy_delta'])} | "
            f"{pct(r['f1_before'])} | {pct(r['f1_after'])} | {num(r['auc_before'])} | {num(r['auc_after'])} |"
        )
    return "\n".join(lines) + "\n"


def _checks(detector: Any, variants: Sequence[Any]) -> tuple[Any, ...]:
    """The checks for a before/after evaluation: the attack module's diagnostics (an attack that
    does not hurt, FGSM beating PGD: signs of gradient masking)."""
    from robustlab.attacks.checks import attack_checks

    return tuple(attack_checks(detector, variants))