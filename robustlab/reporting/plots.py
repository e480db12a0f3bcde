"""Plots from rows and scores (PNG): ROC and PR curves as small multiples per family, score
histograms per class, a reliability diagram, accuracy per class, confusion matrices, accuracy vs
eps / severity.

Every figure shows every set it is given: nothing is cut silently. eps is labelled in grey levels
(``8/255``) through :func:`robustlab.reporting.tables.param_display`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from robustlab.reporting.tables import _param_value, param_display

MAX_LINES_PER_PANEL = 8  # a family with more sets than this gets one panel per variant
PANEL_COLUMNS = 3
RELIABILITY_BINS = 15


class ScoreSet(NamedTuple):
    """One scored set: ``y`` int (N,) positive-class labels, ``s`` float (N,) P(positive) in [0, 1]."""

    kind: str  # clean | adversarial | corrupted
    variant: str
    param: str
    y: np.ndarray
    s: np.ndarray

    @property
    def label(self) -> str:
        """``clean`` or ``fgsm eps=8/255``: the name a plot shows."""
        return "clean" if self.kind == "clean" else f"{self.variant} {param_display(self.param)}".strip()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_panels(sets: Sequence[ScoreSet]) -> list[tuple[str, list[ScoreSet]]]:
    """Small multiples: ``[(title, sets)]``, one panel per family (attacks, corruptions), each with
    the clean set first; a family with more than :data:`MAX_LINES_PER_PANEL` sets is split into one
    panel per variant (``corruptions: jpeg``). Every non-clean set is in exactly one panel."""
    clean = [s for s in sets if s.kind == "clean"]
    panels: list[tuple[str, list[ScoreSet]]] = []
    for kind, title in (("adversarial", "attacks"), ("corrupted", "corruptions")):
        fam = [s for s in sets if s.kind == kind]
        if not fam:
            continue
        if len(fam) <= MAX_LINES_PER_PANEL:
            panels.append((title, clean + fam))
            continue
        for variant in dict.fromkeys(s.variant for s in fam):
            panels.append((f"{title}: {variant}", clean + [s for s in fam if s.variant == variant]))
    other = [s for s in sets if s.kind not in ("clean", "adversarial", "corrupted")]
    if other:
        panels.append(("other sets", clean + other))
    return panels or [("clean", clean)]


def _grid(n: int, width: float = 4.6, height: float = 4.2) -> tuple[Any, list[Any]]:
    plt = _plt()
    cols = min(PANEL_COLUMNS, max(n, 1))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _rates(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float, float | None]:
    """(fpr, tpr, precision or None) at threshold ``t`` (predict positive when ``s >= t``)."""
    pred = s >= t
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    pos = float(np.sum(y == 1))
    neg = float(np.sum(y == 0))
    return fp / max(neg, 1.0), tp / max(pos, 1.0), (tp / (tp + fp) if tp + fp else None)


def plot_roc_pr(
    sets: Sequence[ScoreSet],
    roc_path: Path,
    pr_path: Path,
    *,
    threshold: float | None = None,
    val_curve: tuple[np.ndarray, np.ndarray] | None = None,
    reference_threshold: float | None = None,
    threshold_label: str | None = None,
) -> list[Path]:
    """ROC (log-FPR axis) and PR curves as small multiples (:func:`curve_panels`); sets with one
    class present are listed under the panel as not drawn.

    The FPR axis is logarithmic from half of one false positive (``0.5 / n_real``) to 1, so the
    low-FPR region where detectors are deployed is readable; FPR 0 is drawn at that floor. With
    ``threshold``, its point on each curve is a dot. When the threshold was picked on validation
    data, ``val_curve`` (y_true, y_score) is drawn dashed with the chosen point as a star,
    ``reference_threshold`` (e.g. 0.5) is marked with crosses, and ``threshold_label`` (e.g.
    "max-f1 on validation") names the threshold in the title.
    """
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    panels = curve_panels(sets)
    fig_roc, axes_roc = _grid(len(panels))
    fig_pr, axes_pr = _grid(len(panels))
    n_neg = [int(np.sum(np.asarray(s.y) == 0)) for s in sets if len(np.unique(np.asarray(s.y))) == 2]
    floor = 0.5 / max(max(n_neg, default=1), 1)
    suffix = f" (dots: threshold {threshold:g})" if threshold is not None else ""
    if threshold is not None and threshold_label:
        suffix = f"\nstar, dots: {threshold:.4g} ({threshold_label})" + (f"; crosses: {reference_threshold:g}" if reference_threshold is not None else "")
    for (title, members), ax_roc, ax_pr in zip(panels, axes_roc, axes_pr):
        skipped = []

        def mark(y: np.ndarray, s: np.ndarray, t: float, style: str, color: Any, ms: float) -> None:
            fpr_t, tpr_t, prec_t = _rates(y, s, t)
            ax_roc.plot([max(fpr_t, floor)], [tpr_t], style, ms=ms, color=color)
            if prec_t is not None:
                ax_pr.plot([tpr_t], [prec_t], style, ms=ms, color=color)

        if val_curve is not None and threshold is not None and len(np.unique(np.asarray(val_curve[0]))) == 2:
            vy, vs = np.asarray(val_curve[0]), np.asarray(val_curve[1])
            vfpr, vtpr, _ = roc_curve(vy, vs)
            ax_roc.plot(np.maximum(vfpr, floor), vtpr, "--", lw=1.2, color="0.45", label="validation (threshold picked here)")
            vprec, vrec, _ = precision_recall_curve(vy, vs)
            ax_pr.plot(vrec, vprec, "--", lw=1.2, color="0.45", label="validation (threshold picked here)")
            mark(vy, vs, threshold, "*", "0.2", 11)
            if reference_threshold is not None:
                mark(vy, vs, reference_threshold, "x", "0.2", 7)
        for m in members:
            y, s = np.asarray(m.y), np.asarray(m.s)
            if len(np.unique(y)) < 2:
                skipped.append(m.label)
                continue
            fpr, tpr, _ = roc_curve(y, s)
            style = {"color": "k", "ls": "--"} if m.kind == "clean" else {}
            ax_roc.plot(np.maximum(fpr, floor), tpr, lw=1.5, label=f"{m.label} (AUC {auc(fpr, tpr):.3f})", **style)
            color = ax_roc.lines[-1].get_color()
            prec, rec, _ = precision_recall_curve(y, s)
            ax_pr.plot(rec, prec, lw=1.5, label=m.label, color=color, ls=style.get("ls", "-"))
            if threshold is not None:
                mark(y, s, threshold, "o", color, 5)
            if reference_threshold is not None:
                mark(y, s, reference_threshold, "x", color, 6)
        grid = np.geomspace(floor, 1.0, 64)
        ax_roc.plot(grid, grid, "k:", lw=0.8)
        ax_roc.set_xscale("log")
        ax_roc.set(xlabel="False positive rate (real called fake), log scale", ylabel="True positive rate", xlim=(floor, 1.0), ylim=(0, 1.01))
        ax_roc.axvline(0.01, color="0.6", lw=0.8, ls=":")
        ax_pr.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01))
        ax_roc.set_title(f"ROC: {title}{suffix}", fontsize=10)
        ax_pr.set_title(f"Precision-recall: {title}{suffix}", fontsize=10)
        for ax in (ax_roc, ax_pr):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
            ax.grid(alpha=0.3)
            if skipped:
                ax.text(0.02, 0.98, "not drawn (one class only): " + ", ".join(skipped), transform=ax.transAxes, fontsize=7, va="top")
    return [_save(fig_roc, roc_path), _save(fig_pr, pr_path)]


def plot_score_histograms(sets: Sequence[ScoreSet], path: Path, *, threshold: float, labels: Sequence[str] = ("real", "fake")) -> Path:
    """``scores.png``: one panel per set (clean, then each attack), the score distribution of each
    class (``labels[0]`` = label 0, ``labels[1]`` = label 1) over 25 bins of [0, 1], the threshold
    as a vertical line. Counts, not densities, so the attacked subset's size shows."""
    fig, axes = _grid(len(sets), 4.2, 3.2)
    bins = np.linspace(0.0, 1.0, 26)
    for m, ax in zip(sets, axes):
        y, s = np.asarray(m.y), np.asarray(m.s, dtype=np.float64)
        for cls, color in ((0, "tab:blue"), (1, "tab:red")):
            part = s[y == cls]
            if len(part):
                ax.hist(part, bins=bins, alpha=0.55, color=color, label=f"{labels[cls]} (n={len(part)})")
        ax.axvline(threshold, color="k", lw=1, ls="--")
        ax.set(xlim=(0, 1), xlabel=f"score = P({labels[1]})", ylabel="images", title=m.label)
        ax.title.set_fontsize(10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper center")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def reliability_bins(y: np.ndarray, s: np.ndarray, bins: int = RELIABILITY_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean score, fraction positive, count)`` per equal-width bin of [0, 1] (float64, float64,
    int64; each (bins,)); empty bins have NaN means. The last bin includes 1.0."""
    y = np.asarray(y, dtype=np.float64)
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
    which = np.minimum((s * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=s, minlength=bins) / count
        frac = np.bincount(which, weights=y, minlength=bins) / count
    return conf, frac, count


def plot_reliability(y: np.ndarray, s: np.ndarray, path: Path, *, title: str = "clean", ece: float | None = None, positive: str = "fake") -> Path:
    """``reliability.png``: fraction of positives against mean score per bin (15 bins), with the
    diagonal of a calibrated detector and the bin counts underneath; ``ece`` (from the row) in the title."""
    plt = _plt()
    conf, frac, count = reliability_bins(y, s)
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(4.8, 5.4), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ok = count > 0
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="calibrated")
    ax.plot(conf[ok], frac[ok], "o", color="tab:purple", label="bins with images")
    centers = (np.arange(RELIABILITY_BINS) + 0.5) / RELIABILITY_BINS
    ax_n.bar(centers, count, width=1.0 / RELIABILITY_BINS, color="0.6")
    ax.set(ylabel=f"fraction {positive}", xlim=(0, 1), ylim=(0, 1.02), title=f"Reliability ({title})" + (f", ECE {ece:.3f}" if ece is not None else ""))
    ax_n.set(xlabel=f"mean score = P({positive})", ylabel="images")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def class_accuracy(y: np.ndarray, s: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    """``(accuracy on label 0, accuracy on label 1)`` at ``threshold``; None for an absent class."""
    y = np.asarray(y)
    pred = np.asarray(s) >= threshold
    out = []
    for cls in (0, 1):
        mask = y == cls
        out.append(float(np.mean(pred[mask] == bool(cls))) if mask.any() else None)
    return out[0], out[1]


def plot_class_accuracy(sets: Sequence[ScoreSet], path: Path, *, threshold: float, labels: Sequence[str] = ("real", "fake")) -> Path:
    """``per_class.png``: accuracy on each class (bars ``labels[0]``, ``labels[1]``) per set (clean,
    then each attack and corruption) at ``threshold``; chance (0.5) dotted; a missing class is "n/a"."""
    plt = _plt()
    names = [m.label for m in sets]
    acc = [class_accuracy(m.y, m.s, threshold) for m in sets]
    x = np.arange(len(sets))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(sets) + 2.0), 4.2))
    for k, (color, off) in enumerate((("tab:blue", -0.2), ("tab:red", 0.2))):
        vals = [a[k] for a in acc]
        ax.bar(x + off, [0.0 if v is None else v for v in vals], width=0.4, color=color, label=f"{labels[k]} images")
        for xi, v in zip(x, vals):
            ax.text(xi + off, (v or 0.0) + 0.01, "n/a" if v is None else f"{100 * v:.0f}", ha="center", fontsize=7)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.1), ylabel="accuracy", title=f"Accuracy per class (threshold {threshold:g})")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, path: Path, *, title: str, labels: Sequence[str] = ("real", "fake")) -> Path:
    """2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` as a PNG."""
    plt = _plt()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(m, cmap="Blues")
    total = max(int(m.sum()), 1)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, f"{v}\n({100 * v / total:.1f}%)", ha="center", va="center", color="white" if v > m.max() / 2 else "black", fontsize=10)
    ax.set_xticks([0, 1], [f"pred {labels[0]}", f"pred {labels[1]}"])
    ax.set_yticks([0, 1], [f"true {labels[0]}", f"true {labels[1]}"])
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _grey_levels(x: float) -> str:
    """An eps in /255 units as a tick label: ``8`` -> ``8/255``, ``2.55`` -> ``0.01``."""
    return f"{int(round(x))}/255" if abs(x - round(x)) < 0.02 else f"{x / 255:.3g}"


def plot_accuracy_vs_param(rows: Sequence[Mapping[str, Any]], plots_dir: Path) -> list[Path]:
    """``accuracy_vs_eps.png`` (adversarial rows) and ``accuracy_vs_severity.png`` (corrupted rows).

    Measured points only (markers, no lines between them: nothing was measured in between), one
    marker style per attack / corruption, the clean accuracy as a marker at eps 0 / severity 0 and a
    dotted line across. eps ticks read ``8/255``. Written only when there is something to plot.
    """
    written: list[Path] = []
    clean = next((r for r in rows if r["set"] == "clean"), None)
    clean_acc = None if clean is None else clean["accuracy"]
    markers = "osD^v<>pPX*h"
    for kind, key, fname, xlabel in (
        ("adversarial", "eps", "accuracy_vs_eps.png", "eps (grey levels of 255)"),
        ("corrupted", "severity", "accuracy_vs_severity.png", "severity"),
    ):
        series: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            if r["set"] != kind or r["accuracy"] is None:
                continue
            x = _param_value(r["param"], key)
            if x is None:
                continue
            name = r["variant"]
            extra = param_display(",".join(p for p in (r["param"] or "").split(",") if not p.startswith(f"{key}=")))
            if extra:
                name = f"{name} ({extra})"
            series.setdefault(name, []).append((x * 255 if key == "eps" else x, float(r["accuracy"])))
        if not series:
            continue
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 4))
        xs_all: set[float] = set()
        for k, (name, pts) in enumerate(sorted(series.items())):
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="none", marker=markers[k % len(markers)], ms=7, label=name)
            xs_all.update(p[0] for p in pts)
        if clean_acc is not None:
            ax.plot([0.0], [float(clean_acc)], ls="none", marker="o", ms=8, color="k", label="clean")
            ax.axhline(float(clean_acc), color="k", lw=0.8, ls=":")
            xs_all.add(0.0)
        ticks = sorted(xs_all)
        if key == "eps":
            ax.set_xticks(ticks, ["0" if t == 0 else _grey_levels(t) for t in ticks], fontsize=8)
        else:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02), title=f"Accuracy vs {key} (measured points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, plots_dir / fname))
    return written


def plot_score_sets(
    sets: Sequence[ScoreSet],
    plots_dir: Path,
    *,
    threshold: float,
    labels: Sequence[str] = ("real", "fake"),
    clean_ece: float | None = None,
    **roc_options: Any,
) -> list[Path]:
    """Every plot drawn from scores, into ``plots_dir``: ``roc.png`` / ``pr.png`` (all sets, small
    multiples per family), ``scores.png`` (clean and each attack), ``reliability.png`` (clean) and
    ``per_class.png`` (clean, every attack and corruption). ``sets[0]`` is the clean set;
    ``roc_options`` go to :func:`plot_roc_pr`."""
    written = plot_roc_pr(sets, plots_dir / "roc.png", plots_dir / "pr.png", threshold=threshold, **roc_options)
    hist_sets = [m for m in sets if m.kind in ("clean", "adversarial")]
    written.append(plot_score_histograms(hist_sets, plots_dir / "scores.png", threshold=threshold, labels=labels))
    clean = next((m for m in sets if m.kind == "clean"), None)
    if clean is not None and len(clean.y):
        written.append(plot_reliability(clean.y, clean.s, plots_dir / "reliability.png", ece=clean_ece, positive=labels[1]))
    if len(sets) > 1:
        written.append(plot_class_accuracy(sets, plots_dir / "per_class.png", threshold=threshold, labels=labels))
    return written


def plot_min_eps(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """``min_eps.png``: robust accuracy vs eps from per-image minimal eps (``robustlab attack
    --min-eps``), one marker series per attack (label -> (eps /255 float (K,), accuracy (K,))).
    Only the measured points are drawn, no lines between them: between two points the accuracy is
    not known to change linearly."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in sorted(curves.items()):
        ax.plot(xs, ys, linestyle="none", marker="o", ms=4, label=name)
    ax.set(xlabel="eps (grey levels, /255)", ylabel="robust accuracy (minimal eps > eps)", ylim=(0, 1.02), title="Robust accuracy vs eps (minimal perturbation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
