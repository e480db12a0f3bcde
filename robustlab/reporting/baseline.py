"""A run against a baseline run: comparable rows, per-metric deltas, the side-by-side table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from robustlab.errors import RobustlabError
from robustlab.reporting.policy import HIGHER_IS_BETTER, row_identity, row_label
from robustlab.reporting.tables import comparison_title  # noqa: F401  (re-exported: reports import it from here)

# --------------------------------------------------------------------------- baselines


COMPARED_METRICS = ("accuracy", "precision", "recall", "f1", "auc")


def check_comparable(run: Mapping[str, Any], baseline: Mapping[str, Any], *, baseline_path: "str | Path") -> None:
    """RobustlabError (exit 2) unless both runs scored the same sets: same data, rows and sizes.

    ``run`` / ``baseline``: ``{"run": run.json, "rows": [...]}`` as :func:`robustlab.runs.read_run` gives.
    """
    fix = "compare runs of the same suite on the same data"
    fp_a = ((run.get("run") or {}).get("data") or {}).get("fingerprint")
    fp_b = ((baseline.get("run") or {}).get("data") or {}).get("fingerprint")
    if fp_a and fp_b and fp_a != fp_b:
        raise RobustlabError(f"baseline was evaluated on a different data set (fingerprint {fp_b[:12]} vs {fp_a[:12]})", thing=baseline_path, fix=fix)
    a = {row_identity(r): r for r in run["rows"]}
    b = {row_identity(r): r for r in baseline["rows"]}
    only_run = [row_label(a[k]) for k in a if k not in b]
    only_base = [row_label(b[k]) for k in b if k not in a]
    if only_run or only_base:
        parts = []
        if only_run:
            parts.append(f"only in this run: {', '.join(only_run[:6])}{' ...' if len(only_run) > 6 else ''}")
        if only_base:
            parts.append(f"only in the baseline: {', '.join(only_base[:6])}{' ...' if len(only_base) > 6 else ''}")
        raise RobustlabError(f"baseline has different sets ({'; '.join(parts)})", thing=baseline_path, fix=fix)
    sizes = [f"{row_label(a[k])} n={b[k]['n']} vs {a[k]['n']}" for k in a if int(a[k]["n"]) != int(b[k]["n"])]
    if sizes:
        raise RobustlabError(f"baseline has different sets (sizes differ: {', '.join(sizes[:4])})", thing=baseline_path, fix=fix)


@dataclass(frozen=True)
class Delta:
    metric: str
    baseline: float | None
    run: float | None

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.run is None else self.run - self.baseline

    @property
    def regressed(self) -> bool:
        d = self.delta
        if d is None:
            return self.baseline is not None and self.run is None
        return d < -1e-12 if self.metric in HIGHER_IS_BETTER else d > 1e-12

    @property
    def improved(self) -> bool:
        d = self.delta
        return d is not None and (d > 1e-12 if self.metric in HIGHER_IS_BETTER else d < -1e-12)


@dataclass(frozen=True)
class RowComparison:
    row: Mapping[str, Any]
    deltas: tuple[Delta, ...]

    @property
    def regressed(self) -> bool:
        return any(d.regressed for d in self.deltas)

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": row_label(self.row),
            "set": self.row["set"],
            "variant": self.row["variant"],
            "param": self.row["param"],
            "regressed": self.regressed,
            "metrics": {d.metric: {"baseline": d.baseline, "run": d.run, "delta": d.delta, "regressed": d.regressed} for d in self.deltas},
        }


def compare_rows(rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = COMPARED_METRICS + ("misclassified",)) -> list[RowComparison]:
    """Side by side, in the run's row order (rows missing from the baseline are left out)."""
    base = {row_identity(r): r for r in baseline_rows}
    out = []
    for r in rows:
        b = base.get(row_identity(r))
        if b is None:
            continue
        out.append(RowComparison(r, tuple(Delta(m, None if b.get(m) is None else float(b[m]), None if r.get(m) is None else float(r[m])) for m in metrics)))
    return out


def comparison_markdown(comparison: Sequence[RowComparison], *, baseline_name: str) -> str:
    """A Markdown table: each metric as ``run (delta)``, regressions marked with a red dot."""
    from robustlab.reporting.tables import md_escape

    metrics = [d.metric for d in comparison[0].deltas] if comparison else list(COMPARED_METRICS)
    lines = [f"## Against baseline `{md_escape(baseline_name)}`", ""]
    lines.append("| Test Data | " + " | ".join(m.upper() if m in ("f1", "auc") else m.capitalize() for m in metrics) + " |")
    lines.append("| --- |" + " --- |" * len(metrics))
    for c in comparison:
        cells = []
        for d in c.deltas:
            if d.run is None:
                cells.append("n/a")
                continue
            run = f"{int(d.run)}" if d.metric == "misclassified" else f"{d.run:.4f}"
            delta = "" if d.delta is None else (f" ({int(d.delta):+d})" if d.metric == "misclassified" else f" ({d.delta:+.4f})")
            mark = " 🔴" if d.regressed else ""
            cells.append(f"{run}{delta}{mark}")
        lines.append(f"| {md_escape(comparison_title(c.row))} | " + " | ".join(cells) + " |")
    n_reg = sum(c.regressed for c in comparison)
    lines += ["", f"{n_reg} of {len(comparison)} rows regressed (🔴: worse than the baseline)." if n_reg else f"No row is worse than the baseline ({len(comparison)} rows compared).", ""]
    return "\n".join(lines)
