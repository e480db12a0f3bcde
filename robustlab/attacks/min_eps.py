"""Minimal perturbation per image (``robustlab attack --min-eps``): the smallest eps that flips
each image, found by bisection over (0, eps], and the robust-accuracy-vs-eps curve it gives.

Every attack at every tested eps goes through :func:`robustlab.attacks.art_backend.run_attack`
(delivered uint8, success checked on the delivered image), on the sub-batch of images still being
bisected at that eps.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from robustlab.attacks.art_backend import run_attack
from robustlab.attacks.spec import AttackMethod, AttackSpec, Norm
from robustlab.errors import RobustlabError

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.data import Dataset
    from robustlab.detector.model import Detector
    from robustlab.results import BatchRecord
    from robustlab.runs import RunFolder

BISECTIONS = 8  # bisection steps in (0, eps]: resolution eps / 256
MIN_EPS_METHODS = (AttackMethod.FGSM, AttackMethod.PGD, AttackMethod.APGD, AttackMethod.SQUARE)


class MinEpsResult(NamedTuple):
    """Per image of the batch: ``eps`` float64 (N,) the smallest tested eps (in /255 units) whose
    delivered image is misclassified, 0 for an image already misclassified clean, inf when the
    largest eps does not flip it; ``images`` uint8 (N, H, W, 3) the delivered image at that eps
    (the clean image when 0 or inf); ``linf`` float64 (N,) its realized L-inf in /255 units."""

    eps: np.ndarray
    images: np.ndarray
    linf: np.ndarray


def check_min_eps_method(method: AttackMethod) -> None:
    """A RobustlabError (exit 2) for a method the bisection cannot run (no eps, or a cascade)."""
    if method not in MIN_EPS_METHODS:
        raise RobustlabError(f"--min-eps does not run {method.value}", thing="--min-eps", fix=f"use --method {' / '.join(m.value for m in MIN_EPS_METHODS)} with --min-eps")


def minimal_eps(detector: "Detector", x: np.ndarray, y: np.ndarray, spec: AttackSpec, rng: np.random.Generator, *, bisections: int = BISECTIONS) -> MinEpsResult:
    """Bisect each image's minimal eps in (0, ``spec.eps``] with ``bisections`` steps.

    ``x`` uint8 (N, H, W, 3) clean images at the detector's input size, ``y`` int (N,) true
    positive-class labels; ``rng`` seeds every attack run (same seed, same values). The attack is
    run at ``spec.eps`` on the images the detector gets right, then at each step on the images
    still bisecting, grouped by their current midpoint. An L-inf eps below one grey level is not
    run: uint8 delivery rounds it away, so it flips nothing.
    """
    from robustlab.metrics import predict

    x = np.asarray(x, np.uint8)
    labels = np.asarray(y, np.int64).reshape(-1)
    check_min_eps_method(spec.method)
    if not 1 <= int(bisections) <= 32:
        raise ValueError(f"bisections={bisections} is outside 1..32")
    n = len(x)
    eps = np.full(n, math.inf)
    images = x.copy()
    if n == 0:
        return MinEpsResult(eps, images, np.zeros(0))
    wrong = predict(detector.scores(x), detector.threshold) != labels
    eps[wrong] = 0.0

    def attack(idx: np.ndarray, value: float) -> np.ndarray:
        """Run at ``value`` on ``idx``; store the images that flipped; bool mask of those."""
        if spec.norm is Norm.LINF and math.floor(value * 255.0 + 1e-6) == 0:
            return np.zeros(len(idx), bool)
        r = run_attack(detector, x[idx], labels[idx], replace(spec, eps=float(value)), rng)
        images[idx[r.success]] = r.images[r.success]
        return np.asarray(r.success, bool)

    todo = np.flatnonzero(~wrong)
    flipped = attack(todo, float(spec.eps))
    todo = todo[flipped]  # the images that flip at spec.eps: bisected; the others stay inf
    lo = np.zeros(n)
    hi = np.full(n, float(spec.eps))
    for _ in range(int(bisections)):
        mid = (lo[todo] + hi[todo]) / 2.0
        for value in np.unique(mid):
            idx = todo[mid == value]
            ok = attack(idx, float(value))
            hi[idx[ok]] = value
            lo[idx[~ok]] = value
    eps[todo] = hi[todo] * 255.0
    linf = np.abs(images.astype(np.int16) - x.astype(np.int16)).reshape(n, -1).max(axis=1).astype(np.float64)
    return MinEpsResult(eps, images, linf)


def robust_curve(min_eps: np.ndarray, eps_max: float) -> tuple[np.ndarray, np.ndarray]:
    """The robust accuracy at each measured eps from per-image minimal eps (/255 units, inf = never
    flipped): ``x`` float64 (K,) 0, each distinct minimal eps found and ``eps_max`` (/255 units);
    ``y`` float64 (K,) the share of images whose minimal eps exceeds ``x`` (an image flipping at
    exactly ``x`` counts as broken there). Non-increasing."""
    m = np.asarray(min_eps, np.float64)
    xs = np.unique(np.concatenate([[0.0], m[np.isfinite(m) & (m > 0)], [float(eps_max)]]))
    ys = np.array([float(np.mean(m > e)) if len(m) else math.nan for e in xs])
    return xs, ys


def median_eps(values: np.ndarray) -> float:
    """The median minimal eps (/255 units); inf when at least half the images never flipped; nan for none."""
    v = np.sort(np.asarray(values, np.float64))
    if not len(v):
        return math.nan
    return float(np.median(v)) if np.isfinite(v[(len(v) - 1) // 2 : len(v) // 2 + 1]).all() else math.inf


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else ("n/a" if math.isnan(value) else f"{value:.3g}")


class MinEpsHook:
    """An engine hook: for each batch of each attack in ``targets`` (the largest-eps attack of each
    method), the minimal eps of every image it attacked (:func:`minimal_eps`, seeded from
    ``[seed, batch's first image index]``); :meth:`write` puts ``min_eps.csv`` and
    ``plots/min_eps.png`` in the run folder and returns the metrics.md section."""

    FIELDS = ("id", "path", "label", "variant", "param", "eps_max", "min_eps", "linf")

    def __init__(self, detector: "Detector", targets: Sequence[Any], *, seed: int, bisections: int = BISECTIONS):
        self.detector = detector
        self.targets = list(targets)
        self.seed = int(seed)
        self.bisections = int(bisections)
        self.found: dict[int, list[tuple[np.ndarray, np.ndarray, MinEpsResult]]] = {i: [] for i in range(len(self.targets))}

    @staticmethod
    def largest_per_method(variants: Sequence[Any]) -> list[Any]:
        """The attack variant with the largest eps of each method, in order of first appearance."""
        from robustlab.attacks.variant import AttackVariant

        best: dict[str, Any] = {}
        for v in variants:
            if not isinstance(v, AttackVariant):
                continue
            spec = v.spec
            check_min_eps_method(spec.method)
            if spec.method.value not in best or spec.eps > best[spec.method.value].spec.eps:
                best[spec.method.value] = v
        return list(best.values())

    def __call__(self, record: "BatchRecord") -> None:
        for i, v in enumerate(self.targets):
            if record.variant is v and len(record.idx):
                rng = np.random.default_rng([self.seed, 104729, i, int(record.idx[0])])
                r = minimal_eps(self.detector, record.clean, record.y, v.spec, rng, bisections=self.bisections)
                self.found[i].append((np.asarray(record.idx), np.asarray(record.y), r))

    def per_target(self) -> list[tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(variant, idx int64 (M,), y (M,), min eps float64 (M,) /255, linf float64 (M,)) per target, by index."""
        out = []
        for i, v in enumerate(self.targets):
            parts = self.found[i]
            idx = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
            y = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
            e = np.concatenate([p[2].eps for p in parts]) if parts else np.zeros(0)
            linf = np.concatenate([p[2].linf for p in parts]) if parts else np.zeros(0)
            order = np.argsort(idx, kind="stable")
            out.append((v, idx[order], y[order], e[order], linf[order]))
        return out

    def write(self, folder: "RunFolder", data: "Dataset") -> str:
        """min_eps.csv, plots/min_eps.png and the metrics.md section (returned)."""
        from robustlab.reporting.plots import plot_min_eps

        positive = self.detector.positive
        other = "real" if positive == "fake" else "fake"
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.FIELDS)
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        lines = [
            "",
            f"## Minimal perturbation ({self.bisections} bisection steps in (0, eps])",
            "",
            "The smallest eps (in /255 grey levels) that flips each attacked image: 0 when it is already wrong clean, inf when "
            "the largest eps does not flip it. Per image: min_eps.csv; robust accuracy vs eps: plots/min_eps.png.",
            "",
            "| Attack | Class | Images | Flipped within eps | Median minimal eps (/255) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for v, idx, y, e, linf in self.per_target():
            spec = v.spec
            eps_max = spec.eps * 255.0
            for i, yi, ei, li in zip(idx, y, e, linf):
                path = data.paths[int(i)] if getattr(data, "paths", None) is not None else ""
                w.writerow([int(i), path, positive if yi == 1 else other, v.variant, v.param, f"{eps_max:.4g}", "inf" if math.isinf(ei) else f"{ei:.4g}", f"{li:g}"])
            curves[spec.title()] = robust_curve(e, eps_max)
            for name, mask in ((other, y == 0), (positive, y == 1)):
                if mask.any():
                    flipped = int(np.isfinite(e[mask]).sum())
                    lines.append(f"| {spec.title()} | {name} | {int(mask.sum())} | {flipped}/{int(mask.sum())} | {_fmt(median_eps(e[mask]))} |")
        folder.write_text("min_eps.csv", buf.getvalue())
        if any(len(c[0]) for c in curves.values()):
            plot_min_eps(curves, folder.path("plots") / "min_eps.png")
        return "\n".join(lines) + "\n"
