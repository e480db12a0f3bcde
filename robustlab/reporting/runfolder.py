"""The run folder's tables, predictions and plots, written from an evaluation result.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from robustlab.data import Dataset
from robustlab.metrics import (
    confusion,
    predict,
)
from robustlab.runs import RunFolder

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.evaluation.engine import EvaluationResult


def prediction_records(result: EvaluationResult, data: Dataset) -> Iterable[tuple]:
    """(id, path, label, set, variant, param, score, pred) for clean and every variant image."""
    t = result.info["threshold"]
    for i, yi, si in zip(result.idx.tolist(), result.y.tolist(), result.scores.tolist()):
        yield (i, data.paths[i], yi, "clean", "none", "", si, int(si >= t))
    for st in result.variant_stats:
        a = st.arrays()
        v = st.variant
        for i, yi, si in zip(a["idx"].tolist(), a["y"].tolist(), a["scores"].tolist()):
            yield (i, data.paths[i], yi, str(v.kind), v.variant, v.param, si, int(si >= t))


def write_run(folder: RunFolder, result: EvaluationResult, data: Dataset, *, max_curve_sets: int = 8) -> None:
    """metrics.json/.csv/.md, predictions.csv and plots into ``folder``."""
    from robustlab.reporting.plots import (
        plot_accuracy_vs_param,
        plot_confusion,
        plot_roc_pr,
    )
    from robustlab.reporting.tables import (
        md_escape,
        metrics_csv,
        metrics_markdown,
        param_display,
        predictions_csv,
        slug,
    )

    rows = result.rows
    info = result.info
    metrics_json: dict[str, Any] = {"rows": [r.to_dict() for r in rows]}
    if result.reference_rows:
        metrics_json["reference_rows"] = [r.to_dict() for r in result.reference_rows]
    folder.write_json("metrics.json", metrics_json)
    folder.write_text("metrics.csv", metrics_csv(rows))
    det = info["detector"]
    summary = [
        f"Detector: **{md_escape(det['name'])}** ({det['format']}, input {det['input_size'][0]}x{det['input_size'][1]}, {det['spec']['color']}, scale {det['spec']['scale']}, {det['output']} {det['classes']})",
        f"Data: `{md_escape(str(data.root))}` ({len(result.idx)} images: {int((result.y == 1).sum())} {det['positive']}, {int((result.y == 0).sum())} {'real' if det['positive'] == 'fake' else 'fake'}; {len(data.skipped)} skipped)",
    ]
    if info.get("attacked"):
        summary.append(f"Attacked subset: {info['attacked']} images (fraction {info['attack_fraction']:g}, stratified, seed {info['seed']}).")
    selection = info.get("threshold_selection")
    if selection:
        from robustlab.evaluation.selection import selection_summary

        summary.extend(selection_summary(selection))
    folder.write_text(
        "metrics.md",
        metrics_markdown(rows, title=f"robustlab: {det['name']}", summary=summary, notes=[f"diagnostic: {d}" for d in result.diagnostics], reference_rows=result.reference_rows),
    )
    folder.write_text("predictions.csv", predictions_csv(prediction_records(result, data)))
    threshold = info["threshold"]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {"clean": (result.y, result.scores)}
    for st in result.variant_stats[:max_curve_sets]:
        a = st.arrays()
        if len(a["idx"]):
            curves[f"{st.variant.variant} {st.variant.param}".strip()] = (a["y"], a["scores"])
    chosen: dict[str, Any] = {}
    sel = result.threshold_selection
    if sel is not None:
        chosen = {"val_curve": (sel.y, sel.scores), "reference_threshold": selection["default_threshold"], "threshold_label": f"{sel.strategy} on validation"}
    plot_roc_pr(curves, folder.path("plots/roc.png"), folder.path("plots/pr.png"), threshold=threshold, **chosen)
    pos = det["positive"]
    neg = "real" if pos == "fake" else "fake"
    plot_confusion(confusion(result.y, predict(result.scores, threshold)), folder.path("plots/confusion_clean.png"), title=f"clean (threshold {threshold:g})", labels=(neg, pos))
    for st in result.variant_stats:
        a = st.arrays()
        if len(a["idx"]) and str(st.variant.kind) == "adversarial":
            name = slug(f"{st.variant.variant}_{st.variant.param}")
            plot_confusion(confusion(a["y"], predict(a["scores"], threshold)), folder.path(f"plots/confusion_{name}.png"), title=f"{st.variant.variant} {param_display(st.variant.param)}", labels=(neg, pos))
    plot_accuracy_vs_param([r.to_dict() for r in rows], folder.path("plots"))
