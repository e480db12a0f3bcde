"""``report.html``: one self-contained page for a run, that opens from disk.

Everything is inlined: plots and example images are ``data:`` URIs, the style sheet is in the page,
and a Content-Security-Policy forbids loading anything else (and running any script), so the file
can be mailed, attached to a CI job or opened offline. Every string that came from the user or the
file system (file names, spec names, commands, notes) goes through :func:`esc`.

:func:`render_html` works from a :class:`robustlab.publish.RunData` (the run folder read back),
optionally with a policy verdict and a baseline comparison.
"""
from __future__ import annotations

import base64
import html
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from robustlab.reporting.tables import group_rows, param_display, row_title

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.reporting.baseline import RowComparison
    from robustlab.reporting.policy import PolicyReport
    from robustlab.reporting.rundata import RunData

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
MAX_EXAMPLE_COLUMNS = 16
MAX_LISTED_IMAGES = 20
THUMB_MAX = 192  # example images larger than this are shown scaled down (files keep full size)

STYLE = """
:root { --fg:#1b1f24; --muted:#5b6570; --line:#d5dae0; --bg:#fff; --pass:#1a7f37; --fail:#c4212f; --warn:#9a6700; --head:#f3f5f7; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); } code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--head); padding: 8px 10px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: var(--head); font-weight: 600; } td:first-child, th:first-child { text-align: left; }
table.kv td:first-child { font-weight: 600; white-space: nowrap; } table.kv td { text-align: left; }
.pass { color: var(--pass); font-weight: 600; } .fail { color: var(--fail); font-weight: 600; }
tr.regressed td { background: #fff0f0; } td.worse { color: var(--fail); } td.better { color: var(--pass); }
.banner { padding: 10px 14px; border-radius: 6px; font-size: 16px; font-weight: 600; margin: 12px 0; }
.banner.pass { background: #e6f4ea; } .banner.fail { background: #fde8ea; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.card .v { font-size: 20px; font-weight: 600; } .card .k { color: var(--muted); font-size: 12px; }
.card.bad { border-color: var(--fail); background: #fff6f6; } .card.bad .v { color: var(--fail); }
.chance { display: inline-block; margin-top: 4px; padding: 1px 6px; border-radius: 4px; background: var(--fail); color: #fff; font-size: 11px; font-weight: 600; }
table.images img.thumb { width: 48px; height: auto; image-rendering: pixelated; display: block; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; } figure { margin: 0; flex: 0 1 560px; } figure img { width: 100%; height: auto; border: 1px solid var(--line); }
.plots.small figure { flex: 0 1 280px; } .plots figure.full { flex: 1 1 100%; }
figcaption { color: var(--muted); font-size: 12px; }
.strip { overflow-x: auto; } .strip table td { text-align: center; } .strip img { image-rendering: pixelated; width: 96px; height: auto; display: block; margin: 0 auto; }
.conf { display: flex; flex-wrap: wrap; gap: 14px; } .conf table td, .conf table th { padding: 2px 6px; }
ul.diag li { color: var(--warn); }
table.images td, table.policy td, table.images th, table.policy th { text-align: left; }
.wide { overflow-x: auto; max-width: 100%; } table.baseline td, table.baseline th { white-space: nowrap; }
"""


def esc(value: Any) -> str:
    """HTML-escaped text (quotes too) of any value."""
    return html.escape("" if value is None else str(value), quote=True)


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100.0 * float(v):.2f}%"


def _num(v: Any, digits: int = 4) -> str:
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def _kv(pairs: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in pairs if v not in (None, ""))
    return f'<table class="kv">{body}</table>'


def metrics_table(rows: Sequence[Mapping[str, Any]], *, table_id: str | None = None, clean: Mapping[str, Any] | None = None, attacked: int | None = None) -> str:
    """The publishable table, plus AP and realized perturbation (/255); a worst-case row says over
    how many images it is computed (``clean``: the clean row, for the total)."""
    head = "<tr><th>Test Data</th><th>Accuracy</th><th>Precision</th><th>Recall</th><th>F1 Score</th><th>Misclassifications</th><th>AUC</th><th>AP</th><th>L&infin; (/255)</th><th>L2 (/255)</th></tr>"
    out = []
    for r in rows:
        n, mis = int(r["n"]), int(r["misclassified"])
        rate = f"{100.0 * mis / n:.2f}%" if n else "n/a"
        out.append(
            "<tr>"
            f"<td>{esc(row_title(r))}{_scope_note(r, clean, attacked)}</td><td>{_pct(r['accuracy'])}</td><td>{_pct(r['precision'])}</td><td>{_pct(r['recall'])}</td>"
            f"<td>{_pct(r['f1'])}</td><td>{mis}/{n} ({rate})</td><td>{_num(r['auc'])}</td><td>{_num(r.get('ap'))}</td>"
            f"<td>{_num(r.get('linf'), 2)}</td><td>{_num(r.get('l2'), 1)}</td>"
            "</tr>"
        )
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f'<table class="metrics"{ident}>{head}{"".join(out)}</table>'


def _class_rates(run: "RunData") -> dict[tuple[str, str, str], tuple[float | None, float | None, int, int]]:
    """``(set, variant, param) -> (real accuracy, fake accuracy, n real, n fake)`` from the rows'
    ``real_accuracy`` / ``fake_accuracy`` when they have them, else from predictions.csv."""
    positive = (run.info.get("detector") or {}).get("positive", "fake")
    out: dict[tuple[str, str, str], tuple[float | None, float | None, int, int]] = {}
    for (kind, variant, param), (tn, fp, fn, tp) in run.confusions():
        neg_acc = tn / (tn + fp) if tn + fp else None
        pos_acc = tp / (tp + fn) if tp + fn else None
        n_neg, n_pos = tn + fp, tp + fn
        out[(kind, variant, param)] = (neg_acc, pos_acc, n_neg, n_pos) if positive == "fake" else (pos_acc, neg_acc, n_pos, n_neg)
    for r in run.rows:
        key = (r["set"], r["variant"], r.get("param") or "")
        if r.get("real_accuracy") is not None or r.get("fake_accuracy") is not None:
            _, _, n_real, n_fake = out.get(key, (None, None, 0, 0))
            out[key] = (r.get("real_accuracy"), r.get("fake_accuracy"), n_real, n_fake)
    return out


def _balanced(row: Mapping[str, Any], rates: tuple[float | None, float | None, int, int] | None) -> float | None:
    """The row's balanced accuracy: its own field, else the mean of the class rates, else accuracy."""
    if row.get("balanced_accuracy") is not None:
        return float(row["balanced_accuracy"])
    if rates is not None and rates[0] is not None and rates[1] is not None:
        return (rates[0] + rates[1]) / 2
    return None if row.get("accuracy") is None else float(row["accuracy"])


def _ci(row: Mapping[str, Any], key: str, fmt: Any) -> str:
    ci = row.get(f"{key}_ci")
    return f" (95% CI {fmt(ci[0])} to {fmt(ci[1])})" if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci else ""


def _card(key: str, value: str, sub: str, *, ident: str, bad: bool = False, chance: bool = False) -> str:
    mark = '<span class="chance" title="balanced accuracy at or below 0.5: no better than guessing">at or below chance</span>' if chance else ""
    cls = "card bad" if bad or chance else "card"
    return f'<div class="{cls}" id="card-{ident}"><div class="k">{esc(key)}</div><div class="v">{esc(value)}</div><div class="k">{esc(sub)}</div>{mark}</div>'


def _scope_note(row: Mapping[str, Any], clean: Mapping[str, Any] | None, attacked: int | None) -> str:
    if row["set"] != "worst-case":
        return ""
    return f'<br><span class="muted scope">{esc(_worst_case_scope(row, clean, attacked))}</span>'


def _cards(run: "RunData") -> str:
    """The answer first: fakes caught under the strongest attack, real photos wrongly flagged, the
    clean operating point (EER, TPR at 1% FPR), then the lowest accuracies; each accuracy card is
    marked when its balanced accuracy is at or below chance (0.5)."""
    rows = run.rows
    rates = _class_rates(run)

    def key(r: Mapping[str, Any]) -> tuple[str, str, str]:
        return (r["set"], r["variant"], r.get("param") or "")

    def worst(kind: str) -> Mapping[str, Any] | None:
        cand = [r for r in rows if r["set"] == kind and r["accuracy"] is not None]
        return min(cand, key=lambda r: r["accuracy"]) if cand else None

    def name(r: Mapping[str, Any]) -> str:
        return f"{r['variant']} {param_display(r.get('param') or '')}".strip()

    def chance(r: Mapping[str, Any]) -> bool:
        b = _balanced(r, rates.get(key(r)))
        return b is not None and b <= 0.5

    cards = []
    clean = next((r for r in rows if r["set"] == "clean"), None)
    adv = [(r, rates[key(r)]) for r in rows if r["set"] == "adversarial" and rates.get(key(r)) and rates[key(r)][1] is not None]
    if adv:
        r, (_, fake_acc, _, n_fake) = min(adv, key=lambda item: item[1][1])
        let = round(n_fake * (1 - fake_acc))
        cards.append(_card("fakes caught under the strongest attack", _pct(fake_acc), f"{name(r)}: {let} of {n_fake} fakes let through", ident="fakes-caught", bad=fake_acc < 0.5))
    elif any(r["set"] == "adversarial" for r in rows):
        cards.append(_card("fakes caught under the strongest attack", "n/a", "no attacked fake images", ident="fakes-caught"))
    if clean is not None:
        real_acc, _, n_real, _ = rates.get(key(clean), (None, None, 0, 0))
        if real_acc is None:
            cards.append(_card("real photos wrongly flagged", "n/a", "no real images in the clean set", ident="real-flagged"))
        else:
            fpr = 1 - real_acc
            cards.append(_card("real photos wrongly flagged", _pct(fpr), f"{round(n_real * fpr)} of {n_real} real images, clean, threshold {run.threshold:g}", ident="real-flagged", bad=fpr > 0.1))
        sub = f"balanced {_pct(_balanced(clean, rates.get(key(clean))))}{_ci(clean, 'accuracy', _pct)}; AUC {_num(clean['auc'])}"
        cards.append(_card("clean accuracy", _pct(clean["accuracy"]), sub, ident="clean-accuracy", chance=chance(clean)))
        cards.append(_card("clean EER", _pct(clean.get("eer")), "equal error rate: FPR = FNR", ident="eer"))
        tpr = clean.get("tpr_at_fpr_0.01")
        cards.append(_card("clean TPR at 1% FPR", _pct(tpr), "fakes caught when 1 in 100 real photos may be flagged" + _ci(clean, "tpr_at_fpr_0.01", _pct), ident="tpr-at-fpr"))
    for kind, label in (("adversarial", "lowest adversarial accuracy"), ("corrupted", "lowest corrupted accuracy")):
        w = worst(kind)
        if w is not None:
            cards.append(_card(label, _pct(w["accuracy"]), name(w), ident=f"lowest-{kind}", chance=chance(w)))
    wc = worst("worst-case")
    if wc is not None:
        cards.append(_card("worst-case accuracy", _pct(wc["accuracy"]), f"right clean and under everything; {_worst_case_scope(wc, clean, run.info.get('attacked'))}", ident="worst-case", chance=chance(wc)))
    return f'<div class="cards">{"".join(cards)}</div>'


def _worst_case_scope(row: Mapping[str, Any], clean: Mapping[str, Any] | None, attacked: int | None = None) -> str:
    """Over how many images a worst-case row is computed, and how many of them were attacked:
    ``over 24 of 80 images (the attacked subset)``, or ``over 80 images; the attacks ran on 24 of
    them (the others count clean and under the corruptions only)``."""
    n = int(row["n"])
    total = int(clean["n"]) if clean is not None else n
    if n < total:
        return f"over {n} of {total} images (the attacked subset)"
    if attacked and attacked < n:
        return f"over {n} images; the attacks ran on {attacked} of them (the others count clean and under the corruptions only)"
    return f"over {n} images"


def _summary(run: "RunData") -> str:
    info = run.info
    det = info.get("detector") or {}
    spec = det.get("spec") or {}
    data = info.get("data") or {}
    counts = data.get("counts") or {}
    inp = det.get("input_size") or spec.get("input_size")
    det_pairs = [
        ("name", esc(det.get("name"))),
        ("spec file", esc(det.get("spec_file"))),
        ("format", esc(det.get("format"))),
        ("input", esc(f"{inp[0]}x{inp[1]}" if inp else None)),
        ("resize / color / scale", esc(f"{spec.get('resize')} / {spec.get('color')} / {spec.get('scale')}") if spec else ""),
        ("output", esc(f"{det.get('output')} {det.get('classes')}")),
        ("positive class", esc(det.get("positive"))),
        ("threshold", esc(info.get("threshold"))),
        ("logits from", esc(det.get("logits_from"))),
    ]
    data_pairs = [
        ("root", esc(data.get("root"))),
        ("layout", esc(data.get("kind"))),
        ("split", esc(data.get("split"))),
        ("images", esc(data.get("n"))),
        ("per class", esc(", ".join(f"{k}: {v}" for k, v in counts.items())) if counts else ""),
        ("skipped (unreadable)", esc(data.get("skipped"))),
        ("fingerprint", f"<code>{esc(str(data.get('fingerprint') or '')[:16])}</code>" if data.get("fingerprint") else ""),
    ]
    if info.get("attacked"):
        data_pairs.append(("attacked subset", esc(f"{info['attacked']} images (fraction {info.get('attack_fraction')}, stratified, seed {info.get('seed')})")))
    return f'<div class="plots"><div><h3>Detector</h3>{_kv(det_pairs)}</div><div><h3>Data</h3>{_kv(data_pairs)}</div></div>'


def _policy(report: "PolicyReport") -> str:
    rows = []
    for r in report.results:
        cls = "pass" if r.passed else "fail"
        rows.append(f'<tr><td class="{cls}">{"PASS" if r.passed else "FAIL"}</td><td><code>{esc(r.rule.text)}</code></td><td>{esc(r.rule.name)}</td><td style="text-align:left">{esc(r.message)}</td></tr>')
    src = report.policy.source
    return (
        f"<h2>Policy <code>{esc(report.policy.name)}</code></h2>"
        + (f'<p class="muted">{esc(src.resolve())}</p>' if src else "")
        + f'<table class="policy"><tr><th>Result</th><th>Rule</th><th>Name</th><th>Found</th></tr>{"".join(rows)}</table>'
    )


def _comparison(comparison: Sequence["RowComparison"], baseline_name: str) -> str:
    from robustlab.reporting.baseline import comparison_title

    if not comparison:
        return ""
    metrics = [d.metric for d in comparison[0].deltas]
    head = "<tr><th>Test Data</th>" + "".join(f'<th colspan="3">{esc(m)}</th>' for m in metrics) + "</tr>"
    sub = "<tr><th></th>" + "<th>baseline</th><th>this run</th><th>&Delta;</th>" * len(metrics) + "</tr>"
    body = []
    for c in comparison:
        cells = []
        for d in c.deltas:
            fmt = (lambda v: "n/a" if v is None else str(int(v))) if d.metric == "misclassified" else (lambda v: _num(v))
            delta = "n/a" if d.delta is None else (f"{int(d.delta):+d}" if d.metric == "misclassified" else f"{d.delta:+.4f}")
            cls = ' class="worse"' if d.regressed else (' class="better"' if d.improved else "")
            mark = " &#9660;" if d.regressed else ""
            cells.append(f"<td>{fmt(d.baseline)}</td><td>{fmt(d.run)}</td><td{cls}>{delta}{mark}</td>")
        tr = '<tr class="regressed">' if c.regressed else "<tr>"
        body.append(f'{tr}<td>{esc(comparison_title(c.row))}</td>{"".join(cells)}</tr>')
    n_reg = sum(c.regressed for c in comparison)
    verdict = f'<p class="fail">{n_reg} of {len(comparison)} rows are worse than the baseline (&#9660;).</p>' if n_reg else f'<p class="pass">No row is worse than the baseline ({len(comparison)} rows).</p>'
    return f'<h2>Against baseline <code>{esc(baseline_name)}</code></h2>{verdict}<div class="wide"><table class="baseline">{head}{sub}{"".join(body)}</table></div>'


PLOT_CAPTIONS = {
    "roc.png": "ROC curves on a log false-positive axis (the dotted vertical line is 1% FPR), one panel per family, clean dashed in each; dots mark the run's threshold",
    "pr.png": "Precision-recall curves, one panel per family, clean dashed in each; dots mark the run's threshold",
    "scores.png": "Score distributions per class, clean and under each attack (counts; dashed line: threshold)",
    "per_class.png": "Accuracy on real and on fake images, clean and under each attack and corruption (dotted: chance)",
    "reliability.png": "Reliability (clean): fraction of fakes against the mean score in 15 bins; on the diagonal = calibrated",
    "accuracy_vs_eps.png": "Accuracy vs eps (grey levels of 255): measured points only; dotted: clean accuracy",
    "accuracy_vs_severity.png": "Accuracy vs corruption severity: measured points only; dotted: clean accuracy",
}


FULL_WIDTH_PLOTS = ("roc.png", "pr.png", "scores.png", "per_class.png")  # small multiples: the page's width


def _confusion_caption(name: str) -> str | None:
    """``confusion_pgd_eps=0.0314_steps=10.png`` -> ``confusion: pgd eps=8/255, steps=10`` (the file
    name is a slug of variant and param; eps reads in grey levels)."""
    import re

    stem = name.removesuffix(".png")
    if not stem.startswith("confusion_"):
        return None
    variant, _, param = stem.removeprefix("confusion_").partition("_")
    param = re.sub(r"_(?=[A-Za-z]\w*=)", ",", param)
    return f"confusion: {variant} {param_display(param)}".strip()


def _plots(plots: Mapping[str, bytes]) -> str:
    order = [n for n in PLOT_CAPTIONS if n in plots]
    conf = sorted(n for n in plots if n.startswith("confusion_"))
    conf = [n for n in conf if n == "confusion_clean.png"] + [n for n in conf if n != "confusion_clean.png"]
    other = sorted(n for n in plots if n not in order and n not in conf)

    def fig(name: str) -> str:
        cap = PLOT_CAPTIONS.get(name) or _confusion_caption(name) or name.removesuffix(".png").replace("_", " ")
        full = ' class="full"' if name in FULL_WIDTH_PLOTS else ""
        return f'<figure{full}><img class="plot" src="{data_uri(plots[name])}" alt="{esc(name)}"><figcaption>{esc(cap)}</figcaption></figure>'

    out = ""
    if order:
        out += "<h2>Plots</h2><div class=\"plots\">" + "".join(fig(n) for n in order) + "</div>"
    if conf:
        out += "<h3>Confusion matrices</h3><div class=\"plots small\">" + "".join(fig(n) for n in conf) + "</div>"
    if other:
        out += "<h3>Other plots</h3><div class=\"plots\">" + "".join(fig(n) for n in other) + "</div>"
    return out


def _confusion_tables(run: "RunData") -> str:
    conf = run.confusions()
    if not conf:
        return ""
    pos = (run.info.get("detector") or {}).get("positive", "fake")
    neg = "real" if pos == "fake" else "fake"
    parts = []
    for (kind, variant, param), (tn, fp, fn, tp) in conf:
        title = "clean" if kind == "clean" else f"{kind}: {variant} {param_display(param)}"
        parts.append(
            f'<table class="confusion"><tr><th colspan="3">{esc(title)}</th></tr>'
            f"<tr><th></th><th>pred {esc(neg)}</th><th>pred {esc(pos)}</th></tr>"
            f"<tr><th>true {esc(neg)}</th><td>{tn}</td><td>{fp}</td></tr>"
            f"<tr><th>true {esc(pos)}</th><td>{fn}</td><td>{tp}</td></tr></table>"
        )
    return f'<h3>Confusion counts per set (threshold {esc(run.info.get("threshold"))})</h3><div class="conf">{"".join(parts)}</div>'


def _strip(run: "RunData") -> str:
    ex = run.examples
    if not ex or not ex.get("images"):
        return ""
    rows = []
    n_hidden = 0
    for im in ex["images"]:
        clean = im["clean"]
        cells = [
            f'<td><b>{esc(im.get("label_name"))}</b><br><span class="muted">{esc(im.get("path"))}</span></td>',
            _example_cell(run, clean["file"], f"clean: {clean['score']:.3f}", clean.get("correct")),
        ]
        variants = im.get("variants", [])
        n_hidden = max(n_hidden, len(variants) - MAX_EXAMPLE_COLUMNS)
        for v in variants[:MAX_EXAMPLE_COLUMNS]:
            label = f"{v['variant']} {param_display(v['param'])}: {v['score']:.3f}"
            cells.append(_example_cell(run, v["file"], label, v.get("correct"), note=f"L&infin; {v.get('linf', 0):.0f}/255"))
            if v.get("perturbation"):
                cells.append(_example_cell(run, v["perturbation"], f"perturbation &times;{v.get('magnify', 1):.1f}", None, raw_label=True))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="muted">{n_hidden} more variants per image in <code>examples/</code>.</p>' if n_hidden > 0 else ""
    pos = ex.get("positive", "fake")
    return (
        "<h2>Example images</h2>"
        f'<p class="muted">Score = P({esc(pos)}); green = right, red = wrong at threshold {esc(ex.get("threshold"))}. '
        "Perturbations are magnified around mid grey (no change).</p>"
        f'<div class="strip"><table class="examples">{"".join(rows)}</table></div>{more}'
    )


def _example_cell(run: "RunData", file: str, label: str, correct: bool | None, *, note: str = "", raw_label: bool = False) -> str:
    png = run.example_png(file)
    if png is None:
        return f"<td>{esc(label)}<br><span class=\"muted\">missing {esc(file)}</span></td>"
    cls = "" if correct is None else (' class="pass"' if correct else ' class="fail"')
    text = label if raw_label else esc(label)
    extra = f'<br><span class="muted">{note}</span>' if note else ""
    return f'<td><img class="example" src="{data_uri(png)}" alt="{esc(file)}"><span{cls}>{text}</span>{extra}</td>'


def _thumb_cell(run: "RunData", thumbs: Mapping[tuple[str, str], str], path: str, variant: str) -> str:
    file = thumbs.get((path, variant))
    try:
        png = (run.path / "examples" / "thumbs" / Path(file).name).read_bytes() if file else None
    except OSError:
        png = None
    if png is None:
        return '<td class="muted">-</td>'
    return f'<td><img class="thumb" src="{data_uri(png)}" alt="{esc(path)}"></td>'


def _image_lists(run: "RunData") -> str:
    """Misclassified clean images and flips, with thumbnails kept by the evaluation (``-`` when the
    run kept none for that image: older runs, or a flip outside the collector's candidates)."""
    from robustlab.reporting.tables import param_display

    wrong = run.misclassified_clean(MAX_LISTED_IMAGES)
    flips = run.flipped(MAX_LISTED_IMAGES)
    thumbs: dict[tuple[str, str], str] = {}
    for th in (run.examples or {}).get("thumbs") or []:
        shown = "clean" if th["set"] == "clean" else f"{th['variant']} {param_display(th['param'])}".strip()
        thumbs[(str(th["path"]), shown)] = th["file"]
    out = ""
    if wrong:
        body = "".join(f"<tr>{_thumb_cell(run, thumbs, p, 'clean')}<td>{esc(p)}</td><td>{esc(lbl)}</td><td>{s:.4f}</td></tr>" for p, lbl, s in wrong)
        out += f'<h3>Misclassified clean images (most confident first, up to {MAX_LISTED_IMAGES})</h3><table class="images" id="misclassified"><tr><th></th><th>Image</th><th>True</th><th>Score</th></tr>{body}</table>'
    if flips:
        body = "".join(f"<tr>{_thumb_cell(run, thumbs, p, v)}<td>{esc(p)}</td><td>{esc(lbl)}</td><td>{esc(v)}</td><td>{a:.4f}</td><td>{b:.4f}</td></tr>" for p, lbl, v, a, b in flips)
        out += f'<h3>Images right when clean and wrong under a variant (largest score change first, up to {MAX_LISTED_IMAGES}; thumbnail: the delivered image)</h3><table class="images" id="flipped"><tr><th></th><th>Image</th><th>True</th><th>Variant</th><th>Clean score</th><th>Score</th></tr>{body}</table>'
    return f"<h2>Images</h2>{out}" if out else ""


def _diagnostics(run: "RunData") -> str:
    diags = list(run.info.get("diagnostics") or [])
    notes = [(row_title(r), r["note"]) for r in run.rows if r.get("note")]
    skipped = (run.info.get("data") or {}).get("skipped_files") or {}
    out = "<h2>Diagnostics</h2>"
    if diags:
        out += '<ul class="diag">' + "".join(f"<li>{esc(d)}</li>" for d in diags) + "</ul>"
    else:
        out += '<p class="pass">No diagnostic warnings.</p>'
    if notes:
        out += "<h3>Notes on rows</h3><ul>" + "".join(f"<li><b>{esc(t)}</b>: {esc(n)}</li>" for t, n in notes) + "</ul>"
    if skipped:
        items = list(skipped.items())
        out += f"<h3>Skipped files ({len(items)})</h3><ul>" + "".join(f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in items[:50]) + "</ul>"
        if len(items) > 50:
            out += f'<p class="muted">and {len(items) - 50} more (run.json: data.skipped_files).</p>'
    return out


def _provenance(run: "RunData") -> str:
    info = run.info
    cmd = info.get("command")
    pairs = [
        ("command", f"<code>{esc(shlex.join(cmd))}</code>" if cmd else ""),
        ("run folder", f"<code>{esc(run.display_path)}</code>"),
        ("seed", esc(info.get("seed"))),
        ("batch size", esc(info.get("batch_size"))),
        ("threshold", esc(info.get("threshold"))),
        ("variants", esc(", ".join(f"{v['variant']} {param_display(v['param'])}".strip() for v in info.get("variants") or []))),
    ]
    versions = info.get("versions") or {}
    timings = info.get("timings") or {}
    out = "<h2>How this run was made</h2>" + _kv(pairs)
    if versions:
        out += "<h3>Versions</h3>" + _kv([(k, esc(v)) for k, v in versions.items()])
    if timings:
        out += "<h3>Timings</h3><pre>" + esc(json.dumps(timings, indent=2)) + "</pre>"
    cfg = info.get("config")
    if cfg:
        out += "<h3>Configuration</h3><pre>" + esc(json.dumps(cfg, indent=2, default=str)) + "</pre>"
    extra = {k: v for k, v in info.items() if k in ("threshold_selection", "suite", "policy")}
    if extra:
        out += "<h3>More</h3><pre>" + esc(json.dumps(extra, indent=2, default=str)) + "</pre>"
    return out


def render_html(
    run: "RunData",
    *,
    policy: "PolicyReport | None" = None,
    comparison: "Sequence[RowComparison] | None" = None,
    baseline_name: str | None = None,
) -> str:
    """The whole page as a string (UTF-8 when written)."""
    from robustlab import __version__

    det = run.info.get("detector") or {}
    name = det.get("name") or run.display_path.name
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>robustlab: {esc(name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>robustlab report: {esc(name)}</h1>",
        f'<p class="muted">Run <code>{esc(run.display_path)}</code>; report by robustlab {esc(__version__)}.</p>',
    ]
    if policy is not None:
        cls = "pass" if policy.passed else "fail"
        verdict = f"Policy {esc(policy.policy.name)}: {len(policy.results)} rules passed" if policy.passed else f"Policy {esc(policy.policy.name)} FAILED: {len(policy.failed)} of {len(policy.results)} rules"
        parts.append(f'<div class="banner {cls}" id="verdict">{verdict}</div>')
    parts.append(_cards(run))
    parts.append("<h2>Summary</h2>" + _summary(run))
    if policy is not None:
        parts.append(_policy(policy))
    if comparison is not None:
        parts.append(_comparison(comparison, baseline_name or "baseline"))
    parts.append("<h2>Results</h2>")
    parts.append(f'<p class="muted">Predicted {esc(det.get("positive", "fake"))} when score &ge; {esc(run.info.get("threshold"))}. '
                 "Adversarial rows are the attacked subset; mixed rows are all clean images plus the adversarial ones. "
                 "L&infin; / L2: mean realized perturbation of the delivered uint8 images, in grey levels.</p>")
    clean_row = next((r for r in run.rows if r["set"] == "clean"), None)
    for i, (heading, group) in enumerate(group_rows(run.rows)):
        parts.append(f"<h3>{esc(heading)}</h3>" + metrics_table(group, table_id=f"table-{i}", clean=clean_row, attacked=run.info.get("attacked")))
    if run.reference_rows:
        t = run.reference_rows[0].get("threshold")
        parts.append(f"<h3>The same sets at threshold {esc(t)}</h3>" + metrics_table(run.reference_rows, table_id="table-reference"))
    parts.append(_plots(run.plots))
    parts.append(_confusion_tables(run))
    parts.append(_strip(run))
    parts.append(_image_lists(run))
    parts.append(_diagnostics(run))
    parts.append(_provenance(run))
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)
