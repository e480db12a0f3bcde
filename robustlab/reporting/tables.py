"""Rows to tables: metrics.md (the table users of these detectors publish), metrics.csv, predictions.csv, corruption summaries.
"""
from __future__ import annotations

import csv
import io
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from robustlab.metrics import ROW_FIELDS, MetricsRow, format_eps

PREDICTION_FIELDS = ("id", "path", "label", "set", "variant", "param", "score", "pred")


def _row_dict(row: "MetricsRow | Mapping[str, Any]") -> dict[str, Any]:
    return row.to_dict() if isinstance(row, MetricsRow) else dict(row)


def param_display(param: str) -> str:
    """``eps=0.0314,steps=10`` -> ``eps=8/255, steps=10`` (eps in grey levels when whole)."""
    if not param:
        return ""
    parts = []
    for item in param.split(","):
        key, _, value = item.partition("=")
        if key == "eps":
            try:
                eps = float(value)
                levels = eps * 255
                if round(levels) >= 1 and abs(levels - round(levels)) < 0.02:
                    value = f"{int(round(levels))}/255"
                else:
                    value = format_eps(eps)
            except ValueError:
                pass
        parts.append(f"{key}={value}" if _ else item)
    return ", ".join(parts)


def row_title(row: "MetricsRow | Mapping[str, Any]") -> str:
    """The row names users of these detectors publish ("Original Images", ...)."""
    r = _row_dict(row)
    kind, variant, param = r["set"], r["variant"], param_display(r.get("param") or "")
    if kind == "clean":
        return "Original Images"
    if kind == "adversarial":
        return f"{variant.upper()} Adversarial Images ({param})" if param else f"{variant.upper()} Adversarial Images"
    if kind == "mixed":
        return "(Original + Adversarial) Images"
    if kind == "corrupted":
        name = {"jpeg": "JPEG"}.get(variant, variant.capitalize())
        return f"{name} Images ({param})" if param else f"{name} Images"
    if kind == "worst-case":
        return "Worst case (right clean and under every attack and corruption)"
    return f"{kind} {variant} {param}".strip()


def comparison_title(row: Mapping[str, Any]) -> str:
    """The published row title, with the attack named on mixed rows (several sit in one table)."""
    if row["set"] == "mixed" and row["variant"] not in ("none", ""):
        p = param_display(row.get("param") or "")
        return f"(Original + {row['variant'].upper()} Adversarial{f' ({p})' if p else ''}) Images"
    return row_title(row)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100.0 * float(v):.2f}%"


def _num(v: Any, digits: int = 4) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def _table_line(r: Mapping[str, Any], title: str | None = None) -> str:
    n = int(r["n"])
    mis = int(r["misclassified"])
    rate = f"{100.0 * mis / n:.2f}%" if n else "n/a"
    cells = [
        md_escape(row_title(r) if title is None else title),
        _pct(r["accuracy"]),
        _pct(r["precision"]),
        _pct(r["recall"]),
        _pct(r["f1"]),
        f"{mis}/{n} ({rate})",
        _num(r["auc"]),
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = (
    "| Test Data | Accuracy | Precision | Recall | F1 Score | Misclassifications | AUC |\n"
    "| --- | --- | --- | --- | --- | --- | --- |"
)


OPERATING_HEADER = (
    "| Test Data | Balanced accuracy | Real accuracy | Fake accuracy | TPR @ 1% FPR | TPR @ 0.1% FPR | FPR @ 95% TPR | EER | Brier | ECE | Accuracy 95% CI | AUC 95% CI | TPR @ 1% FPR 95% CI |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _ci(v: Any, pct: bool = True) -> str:
    if not v:
        return "n/a"
    lo, hi = (float(x) for x in v)
    return f"[{100 * lo:.2f}%, {100 * hi:.2f}%]" if pct else f"[{lo:.4f}, {hi:.4f}]"


def operating_point_line(r: Mapping[str, Any]) -> str:
    """One line of the operating-point table (rates as %, EER / Brier / ECE as numbers)."""
    cells = [
        md_escape(comparison_title(r)),
        _pct(r.get("balanced_accuracy")),
        _pct(r.get("real_accuracy")),
        _pct(r.get("fake_accuracy")),
        _pct(r.get("tpr_at_fpr_0.01")),
        _pct(r.get("tpr_at_fpr_0.001")),
        _pct(r.get("fpr_at_tpr_0.95")),
        _pct(r.get("eer")),
        _num(r.get("brier")),
        _num(r.get("ece")),
        _ci(r.get("accuracy_ci")),
        _ci(r.get("auc_ci"), pct=False),
        _ci(r.get("tpr_at_fpr_0.01_ci")),
    ]
    return "| " + " | ".join(cells) + " |"


def operating_point_markdown(rows: Sequence["MetricsRow | Mapping[str, Any]"]) -> str:
    """The ``## Operating points`` section of metrics.md: every row once, in table order."""
    dicts = [_row_dict(r) for r in rows]
    if not dicts:
        return ""
    seen: set[tuple[str, str, str]] = set()
    lines = ["## Operating points", "", OPERATING_HEADER]
    for _, group in group_rows(dicts):
        for r in group:
            key = (r["set"], r["variant"], r.get("param") or "")
            if key not in seen:
                seen.add(key)
                lines.append(operating_point_line(r))
    lines += [
        "",
        "Real / fake accuracy: the share of real photos / fakes classified right at the threshold; balanced accuracy "
        "their mean. TPR @ x% FPR: the highest share of positives caught at a threshold passing at most x% of "
        "negatives (n/a when the set has too few negatives to resolve it: see the notes); EER where the two error "
        "rates meet; Brier and ECE (15 bins) measure the calibration of the score. Intervals: stratified percentile "
        "bootstrap (n/a with --bootstrap 0).",
        "",
    ]
    return "\n".join(lines) + "\n"


def md_escape(text: str) -> str:
    return re.sub(r"([|\\`*_\[\]<>])", r"\\\1", str(text))


def group_rows(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """[(heading, rows)] in the order a reader expects: one table per attack, then corruptions."""
    clean = [r for r in rows if r["set"] == "clean"]
    groups: list[tuple[str, list[Mapping[str, Any]]]] = []
    attacks = [r for r in rows if r["set"] == "adversarial"]
    if not attacks:
        groups.append(("Clean", clean))
    for adv in attacks:
        mixed = [r for r in rows if r["set"] == "mixed" and r["variant"] == adv["variant"] and r["param"] == adv["param"]]
        title = f"{adv['variant'].upper()} ({param_display(adv['param'])})" if adv["param"] else adv["variant"].upper()
        groups.append((title, clean + [adv] + mixed))
    corrupted = [r for r in rows if r["set"] == "corrupted"]
    if corrupted:
        groups.append(("Corruptions", clean + corrupted))
    worst = [r for r in rows if r["set"] == "worst-case"]
    if worst:
        groups.append(("Worst case", worst))
    known = {"clean", "adversarial", "mixed", "corrupted", "worst-case"}
    other = [r for r in rows if r["set"] not in known]
    if other:
        groups.append(("Other", other))
    return groups


def metrics_markdown(
    rows: Sequence["MetricsRow | Mapping[str, Any]"],
    *,
    title: str | None = None,
    summary: Sequence[str] = (),
    notes: Sequence[str] = (),
    reference_rows: Sequence["MetricsRow | Mapping[str, Any]"] = (),
) -> str:
    """``metrics.md``: the tables users publish, one per attack, plus corruptions and notes.

    With ``reference_rows`` (the same sets at another threshold, e.g. 0.5 when the run's threshold
    was picked on validation data), each row is preceded by its reference row, both titled
    ``... @ threshold``.
    """
    dicts = [_row_dict(r) for r in rows]
    refs = {(r["set"], r["variant"], r["param"]): r for r in map(_row_dict, reference_rows)}
    out = io.StringIO()
    if title:
        out.write(f"# {md_escape(title)}\n\n")
    for line in summary:
        out.write(f"{line}\n")
    if summary:
        out.write("\n")
    thresholds = sorted({float(r["threshold"]) for r in dicts})
    for heading, group in group_rows(dicts):
        out.write(f"## {md_escape(heading)}\n\n{TABLE_HEADER}\n")
        for r in group:
            ref = refs.get((r["set"], r["variant"], r["param"]))
            if ref is None:
                out.write(_table_line(r) + "\n")
                continue
            out.write(_table_line(ref, f"{row_title(ref)} @ {float(ref['threshold']):g}") + "\n")
            out.write(_table_line(r, f"{row_title(r)} @ {float(r['threshold']):g}") + "\n")
        out.write("\n")
    out.write(operating_point_markdown(dicts))
    out.write(corruption_summary_markdown(dicts))
    if len(thresholds) == 1 and refs:
        out.write(f"Rows marked @ T: predicted fake when score >= T; every set is scored at {thresholds[0]:g}, and at {float(next(iter(refs.values()))['threshold']):g} for comparison.\n")
    elif len(thresholds) == 1:
        out.write(f"Predicted fake when score >= {thresholds[0]:g}.\n")
    row_notes = [(row_title(r), r["note"]) for r in dicts if r.get("note")]
    if row_notes or notes:
        out.write("\n## Notes\n\n")
        for n in notes:
            out.write(f"- {md_escape(n)}\n")
        for name, note in row_notes:
            out.write(f"- {md_escape(name)}: {md_escape(note)}\n")
    return out.getvalue()


def _severity_list(sevs: Sequence[int]) -> str:
    """[1, 2, 3, 5] -> ``1-3,5``."""
    parts: list[str] = []
    for s in sorted(sevs):
        if parts and s == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{s}"
        else:
            parts.append(str(s))
    return ",".join(parts)


def corruption_summary(rows: Sequence["MetricsRow | Mapping[str, Any]"]) -> list[dict[str, Any]]:
    """One entry per corruption over its severities, plus ``all`` (the mean over corruptions).

    ``mean_accuracy``: mean over the severities run; ``drop``: clean accuracy minus it, i.e. the
    mean over severities of (corrupted error - clean error), the relative corruption error of
    Hendrycks & Dietterich (ICLR 2019) without their AlexNet normalisation; ``mean_error`` = 1 -
    mean_accuracy (their unnormalised corruption error); the worst severity and its accuracy.
    Empty when there are no corrupted rows.
    """
    dicts = [_row_dict(r) for r in rows]
    clean = next((r["accuracy"] for r in dicts if r["set"] == "clean"), None)
    by_name: dict[str, dict[int, float]] = {}
    for r in dicts:
        if r["set"] != "corrupted" or r["accuracy"] is None:
            continue
        sev = _param_value(r.get("param") or "", "severity")
        if sev is None:
            continue
        by_name.setdefault(r["variant"], {})[int(sev)] = float(r["accuracy"])
    out: list[dict[str, Any]] = []
    for name, accs in by_name.items():
        mean = float(np.mean(list(accs.values())))
        worst = min(accs, key=lambda s: (accs[s], -s))
        out.append(
            {
                "corruption": name,
                "severities": sorted(accs),
                "accuracy_by_severity": {str(s): accs[s] for s in sorted(accs)},
                "mean_accuracy": mean,
                "mean_error": 1.0 - mean,
                "clean_accuracy": clean,
                "drop": None if clean is None else float(clean) - mean,
                "worst_severity": worst,
                "worst_accuracy": accs[worst],
            }
        )
    if len(out) > 1:
        mean = float(np.mean([e["mean_accuracy"] for e in out]))
        worst_entry = min(out, key=lambda e: e["worst_accuracy"])
        out.append(
            {
                "corruption": "all",
                "severities": sorted({s for e in out for s in e["severities"]}),
                "accuracy_by_severity": {},
                "mean_accuracy": mean,
                "mean_error": 1.0 - mean,
                "clean_accuracy": clean,
                "drop": None if clean is None else float(clean) - mean,
                "worst_severity": f"{worst_entry['corruption']}:{worst_entry['worst_severity']}",
                "worst_accuracy": worst_entry["worst_accuracy"],
            }
        )
    return out


def corruption_summary_markdown(rows: Sequence["MetricsRow | Mapping[str, Any]"]) -> str:
    """The ``## Corruption summary`` section of metrics.md (empty without corrupted rows)."""
    entries = corruption_summary(rows)
    if not entries:
        return ""
    out = io.StringIO()
    out.write("## Corruption summary\n\n| Corruption | Severities | Mean accuracy | Drop from clean | Worst severity (accuracy) |\n| --- | --- | --- | --- | --- |\n")
    for e in entries:
        name = "All corruptions (mean)" if e["corruption"] == "all" else e["corruption"]
        drop = "n/a" if e["drop"] is None else f"{100.0 * e['drop']:.2f} pp"
        out.write(f"| {md_escape(name)} | {_severity_list(e['severities'])} | {_pct(e['mean_accuracy'])} | {drop} | {md_escape(str(e['worst_severity']))} ({_pct(e['worst_accuracy'])}) |\n")
    out.write(
        "\nMean accuracy is over the severities run; drop from clean = clean accuracy - mean accuracy, "
        "the mean over severities of (corrupted error - clean error): the relative corruption error of "
        "Hendrycks & Dietterich (2019), not normalised by a baseline model.\n\n"
    )
    return out.getvalue()


def _csv_cell(v: Any) -> Any:
    """A metrics.csv cell: empty for null, an interval as ``[lo, hi]`` (JSON), else the value."""
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(repr(float(x)) for x in v) + "]"
    return v


def metrics_csv(rows: Sequence["MetricsRow | Mapping[str, Any]"]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ROW_FIELDS), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        d = _row_dict(r)
        w.writerow({k: _csv_cell(d.get(k)) for k in ROW_FIELDS})
    return buf.getvalue()


def predictions_csv(records: Iterable[Sequence[Any]]) -> str:
    """Rows of (id, path, label, set, variant, param, score, pred) -> CSV text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PREDICTION_FIELDS)
    for rec in records:
        rec = list(rec)
        rec[6] = f"{float(rec[6]):.6f}"
        w.writerow(rec)
    return buf.getvalue()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "x"


def _param_value(param: str, key: str) -> float | None:
    for item in (param or "").split(","):
        k, _, v = item.partition("=")
        if k.strip() == key:
            try:
                return float(v)
            except ValueError:
                return None
    return None
