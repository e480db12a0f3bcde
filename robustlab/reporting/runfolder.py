"""The reporting step: one run folder written once from an evaluation result.

:func:`write_run_folder` writes ``metrics.json`` / ``.csv`` / ``.md``, ``predictions.csv``, the
plots, the example strip, ``report.html`` (and, with a report plan, the policy / baseline reports
and ``junit.xml``) into a :class:`robustlab.runs.RunFolder` still under construction, then commits
it with ``run.json`` last. The engine never writes; nothing is read back from a finished folder.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from robustlab.data import Dataset
from robustlab.enums import SetKind
from robustlab.metrics import confusion, predict
from robustlab.results import EvaluationResult
from robustlab.runs import RunFolder

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.reporting.examples import ExampleCollector
    from robustlab.reporting.publish import ReportOutcome, ReportPlan


@dataclass(frozen=True)
class WrittenRun:
    """What :func:`write_run_folder` returns: the result (``run_dir`` set, ``info`` as written to
    run.json), the text of ``metrics.md`` and the policy / baseline outcome when a plan asked."""

    result: EvaluationResult
    markdown: str
    report: "ReportOutcome | None" = None


def prediction_records(result: EvaluationResult, data: Dataset) -> Iterable[tuple]:
    """(id, path, label, set, variant, param, score, pred) for clean and every variant image."""
    t = result.info.threshold
    for i, yi, si in zip(result.idx.tolist(), result.y.tolist(), result.scores.tolist()):
        yield (i, data.paths[i], yi, "clean", "none", "", si, int(si >= t))
    for o in result.outcomes:
        v = o.variant
        for i, yi, si in zip(o.idx.tolist(), o.y.tolist(), o.scores.tolist()):
            yield (i, data.paths[i], yi, str(v.kind), v.variant, v.param, si, int(si >= t))


def run_summary(result: EvaluationResult, data: Dataset) -> list[str]:
    """The lines above the tables of metrics.md: detector, data, attacked subset, threshold."""
    from robustlab.reporting.tables import md_escape

    info = result.info
    det = info.detector
    other = "real" if det["positive"] == "fake" else "fake"
    summary = [
        f"Detector: **{md_escape(det['name'])}** ({det['format']}, input {det['input_size'][0]}x{det['input_size'][1]}, {det['spec']['color']}, scale {det['spec']['scale']}, {det['output']} {det['classes']})",
        f"Data: `{md_escape(str(data.root))}` ({len(result.idx)} images: {int((result.y == 1).sum())} {det['positive']}, {int((result.y == 0).sum())} {other}; {len(data.skipped)} skipped)",
    ]
    if info.attacked:
        summary.append(f"Attacked subset: {info.attacked} images (fraction {info.attack_fraction:g}, stratified, seed {info.seed}).")
    summary.extend(a["cascade"]["line"] + "." for a in info.attacks or () if "cascade" in a)  # auto: which stage broke how many
    if info.threshold_selection:
        from robustlab.evaluation.selection import selection_summary

        summary.extend(selection_summary(info.threshold_selection))
    return summary


def write_tables(folder: RunFolder, result: EvaluationResult, data: Dataset, *, sections: Sequence[str] = ()) -> str:
    """metrics.json / .csv / .md and predictions.csv into ``folder``; returns the metrics.md text
    (``sections``: extra markdown appended to metrics.md, e.g. ``attack --min-eps``'s)."""
    from robustlab.reporting.tables import metrics_csv, metrics_markdown, predictions_csv

    rows = result.rows
    metrics_json: dict[str, Any] = {"rows": [r.to_dict() for r in rows]}
    if result.reference_rows:
        metrics_json["reference_rows"] = [r.to_dict() for r in result.reference_rows]
    folder.write_json("metrics.json", metrics_json)
    folder.write_text("metrics.csv", metrics_csv(rows))
    title = f"robustlab: {result.info.detector['name']}"
    notes = [f"diagnostic: {d}" for d in result.diagnostics]
    markdown = metrics_markdown(rows, title=title, summary=run_summary(result, data), notes=notes, reference_rows=result.reference_rows)
    markdown += "".join(sections)
    folder.write_text("metrics.md", markdown)
    folder.write_text("predictions.csv", predictions_csv(prediction_records(result, data)))
    return markdown


def write_plots(folder: RunFolder, result: EvaluationResult) -> None:
    """Every plot into ``folder/plots``: ROC / PR curves of all sets (small multiples per family),
    score histograms, the reliability diagram, accuracy per class, confusion matrices and accuracy
    vs eps / severity (:mod:`robustlab.reporting.plots`)."""
    from robustlab.reporting.plots import ScoreSet, plot_accuracy_vs_param, plot_confusion, plot_score_sets
    from robustlab.reporting.tables import param_display, slug

    threshold = result.info.threshold
    sets = [ScoreSet("clean", "none", "", result.y, result.scores)]
    sets += [ScoreSet(str(o.variant.kind), o.variant.variant, o.variant.param, o.y, o.scores) for o in result.outcomes if o.n]
    chosen: dict[str, Any] = {}
    sel = result.threshold_selection
    if sel is not None:
        chosen = {"val_curve": (sel.y, sel.scores), "reference_threshold": result.info.threshold_selection["default_threshold"], "threshold_label": f"{sel.strategy} on validation"}
    pos = result.info.detector["positive"]
    labels = ("real" if pos == "fake" else "fake", pos)
    clean_row = next((r.to_dict() for r in result.rows if r.set == SetKind.CLEAN.value), {})
    plot_score_sets(sets, folder.path("plots"), threshold=threshold, labels=labels, clean_ece=clean_row.get("ece"), **chosen)
    plot_confusion(confusion(result.y, predict(result.scores, threshold)), folder.path("plots/confusion_clean.png"), title=f"clean (threshold {threshold:g})", labels=labels)
    for o in result.attacked():
        if o.n:
            v = o.variant
            name = slug(f"{v.variant}_{v.param}")
            plot_confusion(confusion(o.y, predict(o.scores, threshold)), folder.path(f"plots/confusion_{name}.png"), title=f"{v.variant} {param_display(v.param)}", labels=labels)
    plot_accuracy_vs_param([r.to_dict() for r in result.rows], folder.path("plots"))


def write_run_folder(
    folder: RunFolder,
    result: EvaluationResult,
    data: Dataset,
    *,
    examples: "ExampleCollector | None" = None,
    plan: "ReportPlan | None" = None,
    sections: Sequence[str] = (),
) -> WrittenRun:
    """Write the whole run folder from ``result`` and commit it (``run.json`` last).

    ``examples`` (filled by the engine as a hook) become the report's image strip; ``plan`` (from
    :func:`robustlab.reporting.publish.plan_report`) adds the policy / baseline reports and
    junit.xml. Returns a :class:`WrittenRun`; a failed policy is in ``.report``, not raised.
    """
    from robustlab.reporting.publish import report_run, write_run_html
    from robustlab.reporting.tables import corruption_summary

    if any(r.set == SetKind.CORRUPTED.value for r in result.rows):
        result = replace(result, info=replace(result.info, corruption_summary=corruption_summary(result.rows)))
    info = result.info.to_dict()
    markdown = write_tables(folder, result, data, sections=sections)
    write_plots(folder, result)
    if examples is not None:
        examples.write(folder, threshold=result.info.threshold, paths=data.paths, positive=result.info.detector["positive"])
    outcome = None
    if plan is not None and plan.needed:
        outcome = report_run(folder.dir, plan, info=info, shown_as=folder.final)
        markdown = outcome.markdown or markdown
    else:
        write_run_html(folder.dir, info, final=folder.final)
    run_dir = folder.commit(info)
    return WrittenRun(replace(result, run_dir=Path(run_dir)), markdown, outcome)
