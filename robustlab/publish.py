"""Reports from a run folder alone (no model): HTML, Markdown, JSON and JUnit, with a policy verdict
and a baseline comparison. The library API under ``robustlab report`` and ``evaluate --policy``::

    from robustlab.publish import report_run
    outcome = report_run("runs/nightly", policy="configs/policies/nightly.yaml", baseline="runs/last")
    outcome.policy.passed          # False -> the CLI exits 1
    outcome.written                # [report.html, metrics.md, report.json, junit.xml]

What is written (into the run folder, or ``out``), each atomically:

* ``report.html``: the self-contained page (:mod:`robustlab.html`);
* ``metrics.md``: the run's tables, plus the baseline table and the policy verdict appended after a
  ``<!-- robustlab report -->`` marker (a later report replaces what follows the marker);
* ``report.json``: rows, policy results and baseline deltas, numbers as numbers;
* ``junit.xml``: one test case per policy rule (needs a policy).

``metrics.json``, ``metrics.csv``, ``predictions.csv``, ``run.json``, plots and examples are never
touched.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robustlab.errors import RobustlabError
from robustlab.policy import Policy, PolicyReport, RowComparison, check_comparable, compare_rows, evaluate_policy, load_policy

FORMATS = ("html", "md", "json", "junit")
FORMAT_FILES = {"html": "report.html", "md": "metrics.md", "json": "report.json", "junit": "junit.xml"}
MD_MARKER = "<!-- robustlab report -->"
ROW_KEYS = ("set", "variant", "param", "n", "accuracy", "misclassified", "threshold")


# --------------------------------------------------------------------------- reading a run back


@dataclass
class RunData:
    """A run folder read back: run.json, rows, predictions, plots and example images."""

    path: Path
    info: dict[str, Any]
    rows: list[dict[str, Any]]
    reference_rows: list[dict[str, Any]] = field(default_factory=list)
    predictions: Any = None  # pandas.DataFrame with PREDICTION_FIELDS, or None when not loaded
    plots: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes
    examples: dict[str, Any] | None = None  # examples/index.json
    shown_as: Path | None = None  # the path to show, when the files are read from elsewhere (a run being written)

    @property
    def display_path(self) -> Path:
        return self.shown_as or self.path

    @property
    def threshold(self) -> float:
        return float(self.info.get("threshold", self.rows[0]["threshold"] if self.rows else 0.5))

    def _label_names(self) -> tuple[str, str]:
        pos = (self.info.get("detector") or {}).get("positive", "fake")
        return ("real" if pos == "fake" else "fake", pos)

    def confusions(self) -> list[tuple[tuple[str, str, str], tuple[int, int, int, int]]]:
        """``[((set, variant, param), (tn, fp, fn, tp))]`` per scored set, clean first."""
        df = self.predictions
        if df is None or not len(df):
            return []
        out = []
        import pandas as pd

        codes, uniques = pd.MultiIndex.from_arrays([df["set"], df["variant"], df["param"]]).factorize()
        y = df["label"].to_numpy(np.int64)
        p = df["pred"].to_numpy(np.int64)
        cell = np.bincount(codes * 4 + y * 2 + p, minlength=4 * len(uniques)).reshape(len(uniques), 4)
        for k, key in enumerate(uniques):
            tn, fp, fn, tp = (int(v) for v in cell[k])
            s, v, prm = (str(x) for x in key)
            out.append(((s, v, prm), (tn, fp, fn, tp)))
        out.sort(key=lambda item: item[0][0] != "clean")
        return out

    def misclassified_clean(self, limit: int) -> list[tuple[str, str, float]]:
        """``[(path, true label name, score)]`` wrong on clean images, most confident first."""
        df = self.predictions
        if df is None or not len(df):
            return []
        c = df[(df["set"] == "clean") & (df["label"] != df["pred"])]
        if not len(c):
            return []
        conf = (c["score"] - self.threshold).abs()
        c = c.assign(_conf=conf).sort_values(["_conf", "id"], ascending=[False, True], kind="stable").head(limit)
        names = self._label_names()
        return [(str(r.path), names[int(r.label)], float(r.score)) for r in c.itertuples()]

    def flipped(self, limit: int) -> list[tuple[str, str, str, float, float]]:
        """``[(path, true label name, variant, clean score, score)]``: right clean, wrong under a variant."""
        df = self.predictions
        if df is None or not len(df):
            return []
        clean = df[df["set"] == "clean"][["id", "score", "pred", "label"]].rename(columns={"score": "clean_score", "pred": "clean_pred"})
        other = df[df["set"] != "clean"]
        if not len(other) or not len(clean):
            return []
        m = other.merge(clean[["id", "clean_score", "clean_pred"]], on="id", how="inner")
        m = m[(m["clean_pred"] == m["label"]) & (m["pred"] != m["label"])]
        if not len(m):
            return []
        m = m.assign(_chg=(m["score"] - m["clean_score"]).abs()).sort_values(["_chg", "id"], ascending=[False, True], kind="stable").head(limit)
        from robustlab.reports import param_display

        names = self._label_names()
        return [(str(r.path), names[int(r.label)], f"{r.variant} {param_display(r.param)}".strip(), float(r.clean_score), float(r.score)) for r in m.itertuples()]

    def example_png(self, file: str) -> bytes | None:
        """An example image's PNG bytes (scaled down for the page when large), None if missing."""
        from robustlab.html import THUMB_MAX

        p = self.path / "examples" / Path(file).name
        try:
            data = p.read_bytes()
        except OSError:
            return None
        from PIL import Image
        import io

        try:
            with Image.open(io.BytesIO(data)) as im:
                if max(im.size) <= THUMB_MAX:
                    return data
                im = im.convert("RGB")
                im.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                return buf.getvalue()
        except OSError:
            return None


def _interrupted_hint(folder: Path) -> str:
    if not folder.parent.is_dir():
        return ""
    leftovers = sorted(p.name for p in folder.parent.glob(f".{folder.name}.tmp-*") if p.is_dir())
    return f" (only {leftovers[0]}, left by a run that is still going or was interrupted)" if leftovers else ""


def read_rows(folder: Path, info: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(run.json, rows, reference_rows)``; with ``info`` given, run.json is not read (a run being written)."""
    from robustlab.runs import read_run

    if info is None:
        if not folder.is_dir():
            raise RobustlabError(f"no such run folder{_interrupted_hint(folder)}", thing=folder, fix="give the --out folder of a finished robustlab run")
        got = read_run(folder)
        info = got["run"]
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        rows = list(metrics["rows"])
        refs = list(metrics.get("reference_rows") or [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RobustlabError(f"unreadable metrics.json ({exc.__class__.__name__})", thing=folder, fix="re-run the evaluation") from None
    for i, r in enumerate(rows):
        missing = [k for k in ROW_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise RobustlabError(f"metrics.json row {i} lacks {', '.join(missing)}", thing=folder, fix="re-run the evaluation with this robustlab")
        r["param"] = r.get("param") or ""
    if not rows:
        raise RobustlabError("metrics.json has no rows", thing=folder, fix="re-run the evaluation")
    return info, rows, refs


def read_predictions(folder: Path) -> Any:
    """``predictions.csv`` as a DataFrame (id, path, label, set, variant, param, score, pred)."""
    import pandas as pd

    from robustlab.reports import PREDICTION_FIELDS

    path = folder / "predictions.csv"
    try:
        df = pd.read_csv(
            path,
            dtype={"path": str, "set": str, "variant": str, "param": str},
            keep_default_na=False,
            na_values=[],
            encoding="utf-8",
        )
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RobustlabError(f"unreadable predictions.csv ({exc.__class__.__name__})", thing=path, fix="re-run the evaluation") from None
    missing = [c for c in PREDICTION_FIELDS if c not in df.columns]
    if missing:
        raise RobustlabError(f"predictions.csv lacks columns {', '.join(missing)}", thing=path, fix="re-run the evaluation with this robustlab")
    try:
        df["id"] = df["id"].astype(np.int64)
        df["label"] = df["label"].astype(np.int64)
        df["pred"] = df["pred"].astype(np.int64)
        df["score"] = df["score"].astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise RobustlabError(f"predictions.csv has a non-numeric id/label/score/pred ({exc})", thing=path, fix="re-run the evaluation") from None
    if len(df) and (not df["label"].isin([0, 1]).all() or not df["pred"].isin([0, 1]).all()):
        raise RobustlabError("predictions.csv has labels or predictions other than 0/1", thing=path, fix="re-run the evaluation")
    return df


def _read_plots(folder: Path) -> dict[str, bytes]:
    plots_dir = folder / "plots"
    if not plots_dir.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(plots_dir.glob("*.png"))}


def _rebuild_plots(run: RunData) -> None:
    """Draw the standard plots a run folder lacks (from rows and predictions) into ``run.plots``."""
    from robustlab import reports
    from robustlab.metrics import confusion

    want_curves = not ({"roc.png", "pr.png"} <= set(run.plots))
    want_conf = "confusion_clean.png" not in run.plots
    kinds = {r["set"] for r in run.rows}
    want_acc = ("adversarial" in kinds and "accuracy_vs_eps.png" not in run.plots) or ("corrupted" in kinds and "accuracy_vs_severity.png" not in run.plots)
    df = run.predictions
    if not (want_curves or want_conf or want_acc):
        return
    with tempfile.TemporaryDirectory(prefix="robustlab-plots-") as tmp:
        t = Path(tmp)
        if df is not None and len(df) and (want_curves or want_conf):
            groups = []
            for (s, v, p), g in df.groupby(["set", "variant", "param"], sort=False):
                if s != "mixed":
                    groups.append((s, v, p, g))
            groups.sort(key=lambda item: item[0] != "clean")
            curves = {("clean" if s == "clean" else f"{v} {p}".strip()): (g["label"].to_numpy(), g["score"].to_numpy()) for s, v, p, g in groups[:9]}
            if want_curves and curves:
                reports.plot_roc_pr(curves, t / "roc.png", t / "pr.png", threshold=run.threshold)
            clean = df[df["set"] == "clean"]
            if want_conf and len(clean):
                neg, pos = run._label_names()
                m = confusion(clean["label"].to_numpy(), clean["pred"].to_numpy())
                reports.plot_confusion(m, t / "confusion_clean.png", title=f"clean (threshold {run.threshold:g})", labels=(neg, pos))
        if want_acc:
            reports.plot_accuracy_vs_param(run.rows, t)
        for p in sorted(t.glob("*.png")):
            run.plots.setdefault(p.name, p.read_bytes())


def load_run_data(run: "str | os.PathLike", *, info: dict[str, Any] | None = None, predictions: bool = True, plots: bool = True) -> RunData:
    """Read a run folder for reporting; :class:`RobustlabError` (exit 2) when incomplete or unreadable.

    ``info``: the run.json contents, for a run folder still being written (then completeness is not
    checked). Plots the folder lacks are drawn from its rows and predictions.
    """
    folder = Path(run)
    info, rows, refs = read_rows(folder, info)
    data = RunData(folder.resolve(), info, rows, refs)
    if predictions:
        data.predictions = read_predictions(folder)
    if plots:
        data.plots = _read_plots(folder)
        _rebuild_plots(data)
    idx = folder / "examples" / "index.json"
    if idx.is_file():
        try:
            data.examples = json.loads(idx.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data.examples = None
    return data


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


def plan_report(*, policy: "str | Path | Policy | None" = None, baseline: "str | Path | None" = None, formats: "str | Sequence[str] | None" = None) -> ReportPlan:
    """Load and check the policy and the baseline; RobustlabError (exit 2) on any problem."""
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
    return ReportPlan(fmts, pol, base, explicit)


@dataclass
class ReportOutcome:
    written: list[Path]
    policy: PolicyReport | None = None
    comparison: list[RowComparison] | None = None

    @property
    def passed(self) -> bool:
        return self.policy is None or self.policy.passed


def _markdown(run: RunData, plan: ReportPlan, policy: PolicyReport | None, comparison: list[RowComparison] | None) -> str:
    from robustlab.policy import comparison_markdown, policy_markdown

    try:
        text = (run.path / "metrics.md").read_text(encoding="utf-8")
    except OSError:
        from robustlab.reports import metrics_markdown

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


def _json(run: RunData, plan: ReportPlan, policy: PolicyReport | None, comparison: list[RowComparison] | None) -> str:
    from robustlab import __version__
    from robustlab.runs import to_json

    det = run.info.get("detector") or {}
    doc: dict[str, Any] = {
        "robustlab": __version__,
        "run": str(run.path),
        "detector": det.get("name"),
        "data": (run.info.get("data") or {}).get("root"),
        "threshold": run.info.get("threshold"),
        "rows": run.rows,
        "policy": None if policy is None else policy.to_dict(),
        "baseline": None
        if comparison is None or plan.baseline is None
        else {"run": str(plan.baseline.path), "regressed": sum(c.regressed for c in comparison), "rows": [c.to_dict() for c in comparison]},
    }
    return to_json(doc)


def report_run(
    run: "str | os.PathLike",
    plan: ReportPlan | None = None,
    *,
    policy: "str | Path | Policy | None" = None,
    baseline: "str | Path | None" = None,
    formats: "str | Sequence[str] | None" = None,
    out: "str | os.PathLike | None" = None,
) -> ReportOutcome:
    """Write the reports of a finished run folder (into ``out``, default the run folder).

    Give either a :class:`ReportPlan` (from :func:`plan_report`) or ``policy``/``baseline``/``formats``.
    A failed policy is returned in the outcome (``outcome.passed``), not raised.
    """
    from robustlab.html import render_html
    from robustlab.policy import junit_xml
    from robustlab.runs import atomic_write_text

    if plan is None:
        plan = plan_report(policy=policy, baseline=baseline, formats=formats)
    needs_predictions = "html" in plan.formats
    data = load_run_data(run, predictions=needs_predictions, plots="html" in plan.formats)
    comparison = None
    if plan.baseline is not None:
        check_comparable({"run": data.info, "rows": data.rows}, {"run": plan.baseline.info, "rows": plan.baseline.rows}, baseline_path=plan.baseline.path)
        comparison = compare_rows(data.rows, plan.baseline.rows)
    verdict = None
    if plan.policy is not None:
        verdict = evaluate_policy(plan.policy, data.rows, None if plan.baseline is None else plan.baseline.rows)
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
    for fmt in plan.formats:
        written.append(atomic_write_text(target / FORMAT_FILES[fmt], texts[fmt]()))
    return ReportOutcome(written, verdict, comparison)


def write_run_html(folder: "str | os.PathLike", info: dict[str, Any], *, final: "str | os.PathLike | None" = None) -> Path | None:
    """``report.html`` for a run folder being written (run.json not there yet: ``info`` stands in;
    ``final`` is the path the folder will have, shown in the page).

    A page that cannot be rendered does not cost the evaluation: a warning on stderr, no file (the
    run folder is complete without it; ``robustlab report RUN`` writes it later), None returned.
    """
    import logging
    import sys

    from robustlab.html import render_html
    from robustlab.runs import atomic_write_text

    try:
        data = load_run_data(folder, info=info)
        if final is not None:
            data.shown_as = Path(final)
        return atomic_write_text(Path(folder) / "report.html", render_html(data))
    except Exception as exc:  # noqa: BLE001 - the run's numbers matter more than its page
        logging.getLogger("robustlab").debug("report.html failed", exc_info=True)
        print(f"robustlab: warning: report.html not written ({exc.__class__.__name__}: {exc}); run `robustlab report {final or folder}`", file=sys.stderr)
        return None
