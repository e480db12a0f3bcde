"""Plots from rows and scores: ROC and PR curves, confusion matrices, accuracy vs eps / severity (PNG).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from robustlab.reporting.tables import _param_value

# --------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_roc_pr(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    roc_path: Path,
    pr_path: Path,
    *,
    threshold: float | None = None,
    val_curve: tuple[np.ndarray, np.ndarray] | None = None,
    reference_threshold: float | None = None,
    threshold_label: str | None = None,
) -> list[Path]:
    """ROC and PR curves, one line per set (label -> (y_true, y_score)); sets with one class skipped.

    With ``threshold``, the point it gives on each curve is marked (dots). When the threshold was
    picked on validation data: ``val_curve`` (y_true, y_score) is drawn dashed with the chosen
    point as a star, ``reference_threshold`` (e.g. 0.5) is marked with crosses on every curve, and
    ``threshold_label`` (e.g. "max-f1 on validation") names the threshold in the title.
    """
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = _plt()
    written = []
    fig_roc, ax_roc = plt.subplots(figsize=(5.5, 5))
    fig_pr, ax_pr = plt.subplots(figsize=(5.5, 5))

    def mark(y: np.ndarray, s: np.ndarray, t: float, style: str, colors: tuple[Any, Any], ms: float) -> None:
        pred = s >= t
        tp = np.sum(pred & (y == 1))
        fp = np.sum(pred & (y == 0))
        fn = np.sum(~pred & (y == 1))
        tn = np.sum(~pred & (y == 0))
        ax_roc.plot([fp / max(fp + tn, 1)], [tp / max(tp + fn, 1)], style, ms=ms, color=colors[0])
        if tp + fp:
            ax_pr.plot([tp / max(tp + fn, 1)], [tp / (tp + fp)], style, ms=ms, color=colors[1])

    if val_curve is not None and threshold is not None and len(np.unique(np.asarray(val_curve[0]))) == 2:
        vy, vs = np.asarray(val_curve[0]), np.asarray(val_curve[1])
        vfpr, vtpr, _ = roc_curve(vy, vs)
        ax_roc.plot(vfpr, vtpr, "--", lw=1.2, color="0.45", label="validation (threshold picked here)")
        vprec, vrec, _ = precision_recall_curve(vy, vs)
        ax_pr.plot(vrec, vprec, "--", lw=1.2, color="0.45", label="validation (threshold picked here)")
        mark(vy, vs, threshold, "*", ("0.2", "0.2"), 11)
        if reference_threshold is not None:
            mark(vy, vs, reference_threshold, "x", ("0.2", "0.2"), 7)
    for label, (y, s) in curves.items():
        y = np.asarray(y)
        s = np.asarray(s)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax_roc.plot(fpr, tpr, lw=1.5, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
        prec, rec, _ = precision_recall_curve(y, s)
        ax_pr.plot(rec, prec, lw=1.5, label=label)
        colors = (ax_roc.lines[-1].get_color(), ax_pr.lines[-1].get_color())
        if threshold is not None:
            mark(y, s, threshold, "o", colors, 5)
        if reference_threshold is not None:
            mark(y, s, reference_threshold, "x", colors, 6)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="False positive rate (real called fake)", ylabel="True positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax_pr.set(xlabel="Recall", ylabel="Precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    suffix = f" (dots: threshold {threshold:g})" if threshold is not None else ""
    if threshold is not None and threshold_label:
        suffix = f"\nstar, dots: {threshold:.4g} ({threshold_label})" + (f"; crosses: {reference_threshold:g}" if reference_threshold is not None else "")
    ax_roc.set_title("ROC" + suffix)
    ax_pr.set_title("Precision-recall" + suffix)
    for ax in (ax_roc, ax_pr):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    for fig, path in ((fig_roc, roc_path), (fig_pr, pr_path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_vs_param(rows: Sequence[Mapping[str, Any]], plots_dir: Path) -> list[Path]:
    """``accuracy_vs_eps.png`` (adversarial rows) and ``accuracy_vs_severity.png`` (corrupted rows).

    One line per attack / corruption, starting from the clean accuracy at eps 0 / severity 0.
    Written only when there is something to plot.
    """
    written: list[Path] = []
    clean = next((r for r in rows if r["set"] == "clean"), None)
    clean_acc = None if clean is None else clean["accuracy"]
    for kind, key, fname, xlabel in (
        ("adversarial", "eps", "accuracy_vs_eps.png", "eps (grey levels, /255)"),
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
            extra = ",".join(p for p in (r["param"] or "").split(",") if not p.startswith(f"{key}="))
            if extra:
                name = f"{name} ({extra})"
            series.setdefault(name, []).append((x * 255 if key == "eps" else x, float(r["accuracy"])))
        if not series:
            continue
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, pts in sorted(series.items()):
            pts = sorted(pts)
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            if clean_acc is not None:
                xs = [0.0] + xs
                ys = [float(clean_acc)] + ys
            ax.plot(xs, ys, marker="o", label=name)
        ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02), title=f"Accuracy vs {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = plots_dir / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
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
