"""Several runs on the same data side by side: a leaderboard, per-row deltas, paired significance.

``robustlab compare RUN... --out CMP`` (and :func:`compare_runs` for notebooks) reads finished run
folders (:func:`robustlab.reporting.rundata.load_run_data`) of detectors (or versions of one)
evaluated on the same data (run.json's data fingerprint) and writes into ``CMP``:

* ``leaderboard.md`` / ``leaderboard.csv`` / ``comparison.json`` / ``comparison.html``;
* the runs ranked by worst-case accuracy (clean accuracy when a run has no worst-case row; ties by
  clean accuracy, then the order given);
* for every row the runs share, each run's metrics and their delta against the first run, and a
  paired test on per-image correctness: McNemar's exact test (a two-sided binomial test with p =
  1/2 on the discordant pairs: images right in one run and wrong in the other), the images matched
  by id within the same set / variant / param of predictions.csv. ``mixed`` rows pair the clean
  and the adversarial images; ``worst-case`` rows pair each image's right-everywhere verdict.

Refused (exit 2, one line): fewer than two runs, a run given twice, a missing or incomplete run,
runs on different data (naming both), runs with no row in common, and an ``--out`` that is, holds
or lies inside one of the runs.
"""
from __future__ import annotations

import csv
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from robustlab.errors import RobustlabError
from robustlab.reporting.policy import LOWER_IS_BETTER, row_identity, row_label
from robustlab.reporting.rundata import RunData, load_run_data

COMPARED_METRICS = ("accuracy", "balanced_accuracy", "fake_accuracy", "real_accuracy", "auc", "tpr_at_fpr_0.01", "eer")
ALPHA = 0.05
Key = tuple[str, str, str]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` / ``c`` discordant pairs: ``min(1, 2 P(X <= min(b, c)))``
    with ``X ~ Binomial(b + c, 1/2)``; 1.0 when there is no discordant pair."""
    from scipy.stats import binom

    n = int(b) + int(c)
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(int(b), int(c)), n, 0.5)))


@dataclass(frozen=True)
class PairedTest:
    """McNemar on one row between the first run (``a``) and another (``b``)."""

    pairs: int  # images scored in both runs
    a_only: int  # right in the first run, wrong in the other
    b_only: int  # wrong in the first run, right in the other
    p_value: float
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "no significant difference"
        return "better" if self.b_only > self.a_only else "worse"

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "first_right_other_wrong": self.a_only, "first_wrong_other_right": self.b_only, "p_value": self.p_value, "significant": self.significant, "verdict": self.verdict}


@dataclass(frozen=True)
class RowDelta:
    """One shared row of one run against the first run."""

    key: Key
    row: Mapping[str, Any]
    first: Mapping[str, Any]
    test: PairedTest | None  # None when the runs' predictions share no image for this row

    def delta(self, metric: str) -> float | None:
        a, b = self.first.get(metric), self.row.get(metric)
        return None if a is None or b is None else float(b) - float(a)

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": row_label(self.row),
            "set": self.key[0],
            "variant": self.key[1],
            "param": self.key[2],
            "n": self.row.get("n"),
            "metrics": {m: {"value": self.row.get(m), "first": self.first.get(m), "delta": self.delta(m)} for m in COMPARED_METRICS},
            "accuracy_ci": self.row.get("accuracy_ci"),
            "paired_test": None if self.test is None else self.test.to_dict(),
        }


@dataclass
class RunEntry:
    """One run on the leaderboard."""

    name: str
    path: Path
    detector: str
    rank_value: float | None
    ranked_by: str  # "worst-case accuracy" | "clean accuracy"
    clean_accuracy: float | None
    rank: int = 0
    deltas: list[RowDelta] = field(default_factory=list)  # empty for the first run


@dataclass
class Comparison:
    entries: list[RunEntry]  # in the order given (entries[0] is the reference)
    keys: list[Key]  # the shared rows, in the first run's order
    left_out: dict[str, list[str]]  # run name -> its rows not shared by every run
    fingerprint: str | None
    alpha: float = ALPHA

    @property
    def ranked(self) -> list[RunEntry]:
        return sorted(self.entries, key=lambda e: e.rank)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_fingerprint": self.fingerprint,
            "alpha": self.alpha,
            "test": "McNemar exact (two-sided binomial on discordant pairs, matched by image id)",
            "reference": self.entries[0].name,
            "leaderboard": [
                {"rank": e.rank, "run": e.name, "path": str(e.path), "detector": e.detector, "ranked_by": e.ranked_by, "value": e.rank_value, "clean_accuracy": e.clean_accuracy}
                for e in self.ranked
            ],
            "rows": [row_label({"set": k[0], "variant": k[1], "param": k[2]}) for k in self.keys],
            "left_out": self.left_out,
            "runs": [{"run": e.name, "path": str(e.path), "rows": [d.to_dict() for d in e.deltas]} for e in self.entries],
        }


# --------------------------------------------------------------------------- loading and checking


def _correctness(run: RunData) -> dict[Key, dict[Any, bool]]:
    """Per row key: ``{image key: right?}`` from predictions.csv (mixed and worst-case derived)."""
    df = run.predictions
    out: dict[Key, dict[Any, bool]] = {}
    right_of = (df["label"].to_numpy() == df["pred"].to_numpy())
    ids = df["id"].to_numpy(np.int64)
    sets, variants, params = df["set"].to_numpy(), df["variant"].to_numpy(), df["param"].to_numpy()
    everywhere: dict[int, bool] = {}
    for i, s, v, p, ok in zip(ids.tolist(), sets, variants, params, right_of.tolist()):
        out.setdefault((str(s), str(v), str(p)), {})[i] = ok
        everywhere[i] = everywhere.get(i, True) and ok
    clean = out.get(("clean", "none", ""), {})
    for (s, v, p), per in list(out.items()):
        if s == "adversarial":
            mixed = {("clean", i): ok for i, ok in clean.items()}
            mixed.update({("adv", i): ok for i, ok in per.items()})
            out[("mixed", v, p)] = mixed
    out[("worst-case", "none", "")] = everywhere
    return out


def paired_test(a: Mapping[Any, bool], b: Mapping[Any, bool], *, alpha: float = ALPHA) -> PairedTest | None:
    """McNemar between two ``{image key: right?}`` maps over the images both have (None if none)."""
    common = sorted(set(a) & set(b), key=repr)
    if not common:
        return None
    ra = np.fromiter((a[k] for k in common), bool, len(common))
    rb = np.fromiter((b[k] for k in common), bool, len(common))
    a_only, b_only = int((ra & ~rb).sum()), int((~ra & rb).sum())
    return PairedTest(len(common), a_only, b_only, mcnemar_exact(a_only, b_only), alpha)


def load_runs(paths: Sequence["str | os.PathLike"]) -> list[RunData]:
    """Read and check the runs: at least two, none twice, all complete and on the same data."""
    if len(paths) < 2:
        raise RobustlabError(f"compare needs at least two runs, got {len(paths)}", thing="RUN...", fix="give two or more run folders: robustlab compare runs/a runs/b --out CMP")
    seen: dict[str, str] = {}
    for p in paths:
        real = os.path.realpath(os.fspath(p))
        if real in seen:
            raise RobustlabError(f"run given twice ({seen[real]} and {p})", thing=p, fix="give each run folder once")
        seen[real] = os.fspath(p)
    runs = [load_run_data(p, predictions=True, plots=False) for p in paths]
    first = runs[0]
    fp0 = (first.info.get("data") or {}).get("fingerprint")
    for p, r in zip(paths[1:], runs[1:]):
        fp = (r.info.get("data") or {}).get("fingerprint")
        if not fp or not fp0 or fp != fp0:
            raise RobustlabError(
                f"{p} was evaluated on different data than {paths[0]} (fingerprint {str(fp)[:12]} vs {str(fp0)[:12]})",
                thing=p,
                fix="compare runs evaluated on the same data set (same files, split and classes)",
            )
    return runs


def _name(path: Path, taken: set[str]) -> str:
    name = path.name
    k = 2
    while name in taken:
        name = f"{path.name}#{k}"
        k += 1
    taken.add(name)
    return name


def compare_runs(paths: Sequence["str | os.PathLike"], *, alpha: float = ALPHA) -> Comparison:
    """The :class:`Comparison` of the runs at ``paths`` (RobustlabError, exit 2, on bad input)."""
    runs = load_runs(paths)
    by_run = [{row_identity(r): r for r in run.rows} for run in runs]
    keys = [k for k in by_run[0] if all(k in b for b in by_run[1:])]
    if not keys:
        raise RobustlabError(
            f"the runs have no row in common ({paths[0]}: {', '.join(row_label(r) for r in runs[0].rows[:4])}; {paths[1]}: {', '.join(row_label(r) for r in runs[1].rows[:4])})",
            thing=paths[1],
            fix="compare runs of the same suite (the same attacks and corruptions)",
        )
    taken: set[str] = set()
    entries: list[RunEntry] = []
    correct = [_correctness(r) for r in runs]
    left_out: dict[str, list[str]] = {}
    for i, (path, run, rows) in enumerate(zip(paths, runs, by_run)):
        name = _name(Path(os.path.realpath(os.fspath(path))), taken)
        extra = [row_label(r) for k, r in rows.items() if k not in keys]
        if extra:
            left_out[name] = extra
        worst = rows.get(("worst-case", "none", ""))
        clean = rows.get(("clean", "none", ""))
        if worst is not None and worst.get("accuracy") is not None:
            value, by = float(worst["accuracy"]), "worst-case accuracy"
        else:
            value, by = (None if clean is None or clean.get("accuracy") is None else float(clean["accuracy"])), "clean accuracy"
        entry = RunEntry(name, run.path, str((run.info.get("detector") or {}).get("name", "?")), value, by, None if clean is None else clean.get("accuracy"))
        if i:
            for k in keys:
                test = paired_test(correct[0].get(k, {}), correct[i].get(k, {}), alpha=alpha)
                entry.deltas.append(RowDelta(k, rows[k], by_run[0][k], test))
        entries.append(entry)
    order = sorted(range(len(entries)), key=lambda j: (-(entries[j].rank_value if entries[j].rank_value is not None else -math.inf), -(entries[j].clean_accuracy or 0.0), j))
    for rank, j in enumerate(order, 1):
        entries[j].rank = rank
    return Comparison(entries, keys, left_out, (runs[0].info.get("data") or {}).get("fingerprint"), alpha)


# --------------------------------------------------------------------------- writing


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.2f}%"


def _delta(metric: str, d: float | None) -> str:
    if d is None:
        return "n/a"
    if metric in ("auc", "eer") or metric in LOWER_IS_BETTER:
        return f"{d:+.4f}"
    return f"{100 * d:+.2f} pp"


def _title(key: Key) -> str:
    from robustlab.reporting.tables import comparison_title

    return comparison_title({"set": key[0], "variant": key[1], "param": key[2]})


def _test_cell(t: PairedTest | None) -> str:
    if t is None:
        return "no shared images"
    return f"{t.verdict} (p = {t.p_value:.3g}; {t.b_only} vs {t.a_only} of {t.pairs})"


def comparison_markdown(cmp: Comparison) -> str:
    """leaderboard.md: the ranking, then per other run its row-by-row deltas and paired tests."""
    from robustlab.reporting.tables import md_escape

    ref = cmp.entries[0].name
    lines = ["# robustlab compare", "", f"{len(cmp.entries)} runs on the same data (fingerprint `{(cmp.fingerprint or '?')[:12]}`), {len(cmp.keys)} shared rows.", "", "## Leaderboard", ""]
    lines += ["| Rank | Run | Detector | Ranked by | Value | Clean accuracy |", "| --- | --- | --- | --- | --- | --- |"]
    for e in cmp.ranked:
        lines.append(f"| {e.rank} | {md_escape(e.name)} | {md_escape(e.detector)} | {e.ranked_by} | {_pct(e.rank_value)} | {_pct(e.clean_accuracy)} |")
    for e in cmp.entries[1:]:
        lines += ["", f"## {md_escape(e.name)} against {md_escape(ref)}", ""]
        lines += ["| Test Data | n | Accuracy | Δ accuracy | Δ balanced accuracy | Δ fake accuracy | Δ real accuracy | Δ AUC | Δ TPR @ 1% FPR | Δ EER | Paired test (right only here vs only in the first) |"]
        lines += ["| --- |" + " --- |" * 10]
        for d in e.deltas:
            cells = [md_escape(_title(d.key)), str(d.row.get("n")), _pct(d.row.get("accuracy"))]
            cells += [_delta(m, d.delta(m)) for m in COMPARED_METRICS]
            cells.append(md_escape(_test_cell(d.test)))
            lines.append("| " + " | ".join(cells) + " |")
        sig = [d for d in e.deltas if d.test is not None and d.test.significant]
        lines += ["", f"{len(sig)} of {len(e.deltas)} rows differ significantly at {cmp.alpha:g} (McNemar exact test on per-image correctness)."]
    if cmp.left_out:
        lines += ["", "## Rows not in every run (left out)", ""]
        lines += [f"- {md_escape(name)}: {md_escape(', '.join(rows))}" for name, rows in cmp.left_out.items()]
    lines += ["", "Δ: this run minus the first run given; pp = percentage points. Ranked by worst-case accuracy (right clean and under every attack and corruption), or clean accuracy for a run without a worst-case row.", ""]
    return "\n".join(lines)


def leaderboard_csv(cmp: Comparison) -> str:
    """One line per run and shared row: rank, row, metrics, deltas against the first run, the test."""
    buf = io.StringIO()
    fields = ["rank", "run", "detector", "ranked_by", "rank_value", "set", "variant", "param", "n"] + list(COMPARED_METRICS) + [f"delta_{m}" for m in COMPARED_METRICS] + ["pairs", "first_right_other_wrong", "first_wrong_other_right", "p_value", "significant"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for i, e in enumerate(cmp.entries):
        rows: list[tuple[Key, Mapping[str, Any], RowDelta | None]]
        if i == 0:  # the reference: its own values, no deltas
            rows = [(d.key, d.first, None) for d in cmp.entries[1].deltas]
        else:
            rows = [(d.key, d.row, d) for d in e.deltas]
        for k, r, d in rows:
            line: dict[str, Any] = {"rank": e.rank, "run": e.name, "detector": e.detector, "ranked_by": e.ranked_by, "rank_value": e.rank_value, "set": k[0], "variant": k[1], "param": k[2], "n": r.get("n")}
            line.update({m: r.get(m) for m in COMPARED_METRICS})
            if d is not None:
                line.update({f"delta_{m}": d.delta(m) for m in COMPARED_METRICS})
                if d.test is not None:
                    line.update({"pairs": d.test.pairs, "first_right_other_wrong": d.test.a_only, "first_wrong_other_right": d.test.b_only, "p_value": d.test.p_value, "significant": d.test.significant})
            w.writerow({k2: ("" if v is None else v) for k2, v in line.items()})
    return buf.getvalue()


def comparison_html(cmp: Comparison) -> str:
    """A small self-contained page: the leaderboard and the per-run delta tables."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>robustlab compare</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
        ".sig{font-weight:bold}.worse{color:#b00}.better{color:#070}</style></head><body>",
        f"<h1>robustlab compare</h1><p>{len(cmp.entries)} runs on the same data (fingerprint <code>{esc((cmp.fingerprint or '?')[:12])}</code>), {len(cmp.keys)} shared rows.</p>",
        "<h2>Leaderboard</h2><table class='leaderboard'><tr><th>Rank</th><th>Run</th><th>Detector</th><th>Ranked by</th><th>Value</th><th>Clean accuracy</th></tr>",
    ]
    for e in cmp.ranked:
        parts.append(f"<tr><td>{e.rank}</td><td>{esc(e.name)}</td><td>{esc(e.detector)}</td><td>{esc(e.ranked_by)}</td><td>{_pct(e.rank_value)}</td><td>{_pct(e.clean_accuracy)}</td></tr>")
    parts.append("</table>")
    for e in cmp.entries[1:]:
        parts.append(f"<h2>{esc(e.name)} against {esc(cmp.entries[0].name)}</h2><table class='deltas'><tr><th>Test data</th><th>n</th><th>Accuracy</th>")
        parts.extend(f"<th>&Delta; {esc(m)}</th>" for m in COMPARED_METRICS)
        parts.append("<th>Paired test</th></tr>")
        for d in e.deltas:
            cls = "" if d.test is None or not d.test.significant else f"sig {d.test.verdict}"
            cells = "".join(f"<td>{esc(_delta(m, d.delta(m)))}</td>" for m in COMPARED_METRICS)
            parts.append(f"<tr><td>{esc(_title(d.key))}</td><td>{d.row.get('n')}</td><td>{_pct(d.row.get('accuracy'))}</td>{cells}<td class='{cls}'>{esc(_test_cell(d.test))}</td></tr>")
        parts.append("</table>")
    parts.append(f"<p>&Delta;: this run minus the first run. Paired test: McNemar exact test on per-image correctness, significant at {cmp.alpha:g}.</p></body></html>\n")
    return "".join(parts)


def write_comparison(cmp: Comparison, out: "str | os.PathLike", *, force: bool = False, command: Sequence[str] | None = None) -> Path:
    """Write leaderboard.md / .csv, comparison.json and comparison.html into ``out`` (atomic; a
    folder that is, holds or lies inside one of the runs is refused, exit 2). Returns the folder."""
    from robustlab.runs import RunFolder, to_json, versions

    with RunFolder(out, force=force, inputs=[e.path for e in cmp.entries]) as folder:
        folder.write_text("leaderboard.md", comparison_markdown(cmp))
        folder.write_text("leaderboard.csv", leaderboard_csv(cmp))
        folder.write_text("comparison.json", to_json(cmp.to_dict()))
        folder.write_text("comparison.html", comparison_html(cmp))
        info = {"command": None if command is None else list(command), "kind": "compare", "runs": [str(e.path) for e in cmp.entries], "data": {"fingerprint": cmp.fingerprint}, "versions": versions()}
        return folder.commit(info)
