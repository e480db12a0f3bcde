"""Reports from a run folder alone (no model): HTML, Markdown, JSON and JUnit, with a policy verdict
and a baseline comparison. The library API under ``robustlab report`` and ``evaluate --policy``::

    from robustlab.reporting.publish import report_run
    outcome = report_run("runs/nightly", policy="configs/policies/nightly.yaml", baseline="runs/last")
    outcome.policy.passed          # False -> the CLI exits 1
    outcome.written                # [report.html, metrics.md, report.json, junit.xml]

What is written (into the run folder, or ``out``), each atomically:

* ``report.html``: the self-contained page (:mod:`robustlab.reporting.html`);
* ``metrics.md``: the run's tables, plus the baseline table and the policy verdict appended after a
  ``<!-- robustlab report -->`` marker (a later report replaces what follows the marker);
* ``report.json``: rows, policy results and baseline deltas, numbers as numbers;
* ``junit.xml``: one test case per policy rule (needs a policy).

``metrics.json``, ``metrics.csv``, ``predictions.csv``, ``run.json``, plots and examples are never
touched.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from robustlab.errors import RobustlabError
from robustlab.reporting.baseline import RowComparison, check_comparable, compare_rows
from robustlab.reporting.policy import (
    Policy,
    PolicyReport,
    evaluate_policy,
    load_policy,
)
from robustlab.reporting.rundata import RunData, load_run_data

FORMATS = ("html", "md", "json", "junit")
FORMAT_FILES = {"html": "report.html", "md": "metrics.md", "json": "report.json", "junit": "junit.xml"}
MD_MARKER = "<!-- robustlab report -->"


# --------------------------------------------------------------------------- writing reports


def parse_formats(text: "str | Sequence[str] | None") -> tuple[str, ...] | None:
    """``"html,md"`` -> ("html", "md"); None stays None (the default set)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    out = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item == "markdown":
            item = "md"
        if item not in FORMATS:
            raise RobustlabError(f"unknown report format {item!r}", thing="--format", fix=f"use a comma-separated list of {', '.join(FORMATS)}")
        if item not in out:
            out.append(item)
    if not out:
        raise RobustlabError("no report format given", thing="--format", fix=f"use a comma-separated list of {', '.join(FORMATS)}")
    return tuple(out)


@dataclass
class ReportPlan:
    """What to report, checked before any work: formats, the policy, the baseline run."""

    formats: tuple[str, ...]
    policy: Policy | None = None
    baseline: RunData | None = None
    explicit: bool = False  # formats were asked for (not the default set)
    inconclusive: str = "fail"  # how a rule whose interval straddles its limit counts: fail | pass | warn

    @property
    def needed(self) -> bool:
        """Whether a finished evaluate has anything to add to the report.html it already wrote."""
        return self.explicit or self.policy is not None or self.baseline is not None

    def check_data(self, fingerprint: str | None, root: "str | Path | None" = None) -> None:
        """Refuse early when the baseline was evaluated on other data than ``fingerprint``."""
        if self.baseline is None or not fingerprint:
            return
        fp = (self.baseline.info.get("data") or {}).get("fingerprint")
        if fp and fp != fingerprint:
            raise RobustlabError(
                f"baseline was evaluated on a different data set than {root or 'this one'} (fingerprint {fp[:12]} vs {fingerprint[:12]})",
                thing=self.baseline.path,
                fix="compare runs of the same suite on the same data",
            )


def plan_report(*, policy: "str | Path | Policy | None" = None, baseline: "str | Path | None" = None, formats: "str | Sequence[str] | None" = None, inconclusive: str = "fail") -> ReportPlan:
    """Load and check the policy and the baseline; RobustlabError (exit 2) on any problem."""
    from robustlab.reporting.policy import INCONCLUSIVE_MODES

    if inconclusive not in INCONCLUSIVE_MODES:
        raise RobustlabError(f"unknown --inconclusive {inconclusive!r}", thing="--inconclusive", fix=f"use one of {', '.join(INCONCLUSIVE_MODES)}")
    fmts = parse_formats(formats)
    explicit = fmts is not None
    pol = load_policy(policy) if isinstance(policy, (str, os.PathLike)) else policy
    if fmts is None:
        fmts = ("html", "md", "json") + (("junit",) if pol is not None else ())
    if "junit" in fmts and pol is None:
        raise RobustlabError("the junit format needs a policy (one test case per rule)", thing="--format", fix="pass --policy P.yaml, or leave junit out")
    base = None
    if baseline is not None:
        base = load_run_data(baseline, predictions=False, plots=False)
    if pol is not None and pol.needs_baseline and base is None:
        lines = ", ".join(str(r.line) for r in pol.rules if r.function == "regression")
        raise RobustlabError(f"regression() rules (line {lines}) need a baseline run", thing=pol.source or "policy", fix="pass --baseline RUN (a finished run of the same suite on the same data)")
    return ReportPlan(fmts, pol, base, explicit, inconclusive)


@dataclass
class ReportOutcome:
    written: list[Path]
    policy: PolicyReport | None = None
    comparison: list[RowComparison] | None = None
    markdown: str | None = None  # the metrics.md written, when md was among the formats
    baseline: Path | None = None  # the baseline run folder, when one was compared

    @property
    def passed(self) -> bool:
        return self.policy is None or self.policy.passed


def _markdown(run: RunData, plan: ReportPlan, policy: PolicyReport | None, comparison: list[RowComparison] | None) -> str:
    from robustlab.reporting.baseline import comparison_markdown
    from robustlab.reporting.policy import policy_markdown

    try:
        text = (run.path / "metrics.md").read_text(encoding="utf-8")
    except OSError:
        from robustlab.reporting.tables import metrics_markdown

        text = metrics_markdown(run.rows, title=f"robustlab: {(run.info.get('detector') or {}).get('name', run.path.name)}")
    text = text.split(MD_MARKER, 1)[0].rstrip("\n") + "\n"
    extra = []
    if policy is not None:
        extra.append(policy_markdown(policy))
    if comparison is not None and plan.baseline is not None:
        extra.append(comparison_markdown(comparison, baseline_name=str(plan.baseline.path)))
    if extra:
        text += f"\n{MD_MARKER}\n\n" + "\n".join(extra)
    return text


def json_document(run: RunData, policy: PolicyReport | None = None, comparison: list[RowComparison] | None = None, baseline: "str | Path | None" = None) -> dict[str, Any]:
    """The run as one JSON-ready dict (report.json, and ``--json`` on stdout): rows, the verdict
    (``"pass"`` / ``"fail"``, or None without a policy), policy results, baseline deltas, run folder."""
    from robustlab import __version__

    det = run.info.get("detector") or {}
    return {
        "robustlab": __version__,
        "run": str(run.display_path),
        "detector": det.get("name"),
        "data": (run.info.get("data") or {}).get("root"),
        "threshold": run.info.get("threshold"),
        "verdict": None if policy is None else ("pass" if policy.passed else "fail"),
        "rows": run.rows,
        "policy": None if policy is None else policy.to_dict(),
        "baseline": None
        if comparison is None or baseline is None
        else {"run": str(baseline), "regressed": sum(c.regressed for c in comparison), "rows": [c.to_dict() for c in comparison]},
    }


def outcome_json(run_dir: "str | os.PathLike", outcome: "ReportOutcome | None" = None) -> str:
    """``--json`` output of evaluate / attack / report: :func:`json_document` of a finished run folder."""
    from robustlab.runs import to_json

    run = load_run_data(run_dir, predictions=False, plots=False)
    policy = None if outcome is None else outcome.policy
    comparison = None if outcome is None else outcome.comparison
    return to_json(json_document(run, policy, comparison, None if outcome is None else outcome.baseline))


def _json(run: RunData, plan: ReportPlan, policy: PolicyReport | None, comparison: list[RowComparison] | None) -> str:
    from robustlab.runs import to_json

    return to_json(json_document(run, policy, comparison, None if plan.baseline is None else plan.baseline.path))


def report_run(
    run: "str | os.PathLike",
    plan: ReportPlan | None = None,
    *,
    policy: "str | Path | Policy | None" = None,
    baseline: "str | Path | None" = None,
    formats: "str | Sequence[str] | None" = None,
    out: "str | os.PathLike | None" = None,
    info: dict[str, Any] | None = None,
    shown_as: "str | os.PathLike | None" = None,
) -> ReportOutcome:
    """Write the reports of a finished run folder (into ``out``, default the run folder).

    Give either a :class:`ReportPlan` (from :func:`plan_report`) or ``policy``/``baseline``/``formats``.
    A failed policy is returned in the outcome (``outcome.passed``), not raised. ``info`` (the
    run.json contents) and ``shown_as`` (its final path) are for a run folder still being written.
    """
    from robustlab.reporting.html import render_html
    from robustlab.reporting.junit import junit_xml
    from robustlab.runs import atomic_write_text

    if plan is None:
        plan = plan_report(policy=policy, baseline=baseline, formats=formats)
    needs_predictions = "html" in plan.formats
    data = load_run_data(run, info=info, predictions=needs_predictions, plots="html" in plan.formats)
    if shown_as is not None:
        data.shown_as = Path(shown_as)
    comparison = None
    if plan.baseline is not None:
        check_comparable({"run": data.info, "rows": data.rows}, {"run": plan.baseline.info, "rows": plan.baseline.rows}, baseline_path=plan.baseline.path)
        comparison = compare_rows(data.rows, plan.baseline.rows)
    verdict = None
    if plan.policy is not None:
        verdict = evaluate_policy(plan.policy, data.rows, None if plan.baseline is None else plan.baseline.rows, inconclusive=plan.inconclusive)
    target = Path(out) if out is not None else data.path
    if target.exists() and not target.is_dir():
        raise RobustlabError("exists and is not a folder", thing=target, fix="give a folder for --out")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    texts = {
        "html": lambda: render_html(data, policy=verdict, comparison=comparison, baseline_name=None if plan.baseline is None else str(plan.baseline.path)),
        "md": lambda: _markdown(data, plan, verdict, comparison),
        "json": lambda: _json(data, plan, verdict, comparison),
        "junit": lambda: junit_xml(verdict, properties={"run": data.path, "detector": (data.info.get("detector") or {}).get("name"), "baseline": None if plan.baseline is None else plan.baseline.path}),  # type: ignore[arg-type]
    }
    markdown = None
    for fmt in plan.formats:
        text = texts[fmt]()
        markdown = text if fmt == "md" else markdown
        written.append(atomic_write_text(target / FORMAT_FILES[fmt], text))
    return ReportOutcome(written, verdict, comparison, markdown, None if plan.baseline is None else plan.baseline.path)


def write_run_html(folder: "str | os.PathLike", info: dict[str, Any], *, final: "str | os.PathLike | None" = None) -> Path | None:
    """``report.html`` for a run folder being written (run.json not there yet: ``info`` stands in;
    ``final`` is the path the folder will have, shown in the page).

    A page that cannot be rendered does not cost the evaluation: a warning on stderr, no file (the
    run folder is complete without it; ``robustlab report RUN`` writes it later), None returned.
    A page that cannot be *written* (full disk, read-only folder) raises
    :class:`robustlab.runs.WriteFailed` (exit 2): the disk is the problem, not the page.
    """
    import logging
    import sys

    from robustlab.reporting.html import render_html
    from robustlab.runs import atomic_write_text

    try:
        data = load_run_data(folder, info=info)
        if final is not None:
            data.shown_as = Path(final)
        return atomic_write_text(Path(folder) / "report.html", render_html(data))
    except OSError:  # a write failure (full disk): the run is not complete, exit 2 naming the disk
        raise
    except Exception as exc:  # noqa: BLE001 - the run's numbers matter more than its page
        logging.getLogger("robustlab").debug("report.html failed", exc_info=True)
        print(f"robustlab: warning: report.html not written ({exc.__class__.__name__}: {exc}); run `robustlab report {final or folder}`", file=sys.stderr)
        return None
