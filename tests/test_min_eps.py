"""Minimal perturbation per image (``robustlab attack --min-eps``): bisection over eps on the
``linear`` detector of test_attacks.py, whose images sit 3.2 to 7.4 grey levels from the decision
boundary, so each image's minimal L-inf eps is known: the first whole grey level above its margin.
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_attacks import margin_images, save_detector  # noqa: E402


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    from robustlab.detector.loading import load_detector

    return load_detector(save_detector(tmp_path_factory.mktemp("linear"), "linear"))


@pytest.fixture(scope="module")
def images():
    return margin_images(8, seed=3)


def margins(x: np.ndarray) -> np.ndarray:
    """Grey levels between each image's mean pixel and the linear detector's boundary (127.5)."""
    return np.abs(x.reshape(len(x), -1).mean(axis=1).astype(np.float64) - 127.5)


def test_minimal_eps_is_the_first_grey_level_past_the_margin(linear, images):
    from robustlab.attacks.min_eps import minimal_eps
    from robustlab.attacks.spec import AttackMethod, AttackSpec

    x, y = images
    spec = AttackSpec(AttackMethod.PGD, 8 / 255)
    r = minimal_eps(linear, x, y, spec, np.random.default_rng(0))
    assert r.eps.dtype == np.float64 and r.eps.shape == (len(x),)
    assert ((r.eps > 0) & (r.eps <= 8 + 1e-9)).all()
    need = np.ceil(margins(x))  # whole grey levels that push the mean past the boundary
    resolution = 8 / 2**8
    assert (r.eps >= need - 1e-9).all() and (r.eps < need + resolution + 1e-9).all(), (r.eps, need)
    # at its minimal eps each image is misclassified, within that budget
    scores = linear.scores(r.images)
    assert ((scores >= 0.5).astype(int) != y).all()
    assert (r.linf <= np.floor(r.eps + 1e-6)).all()


def test_images_the_largest_eps_does_not_flip_are_inf_and_wrong_ones_are_zero(linear, images):
    from robustlab.attacks.min_eps import minimal_eps
    from robustlab.attacks.spec import AttackMethod, AttackSpec

    x, y = images
    small = margins(x) < 4
    assert small.any() and (~small).any()
    r = minimal_eps(linear, x, y, AttackSpec(AttackMethod.PGD, 4 / 255), np.random.default_rng(0))
    assert np.isinf(r.eps[~small]).all()  # 4 levels do not reach their boundary
    assert np.array_equal(r.images[np.isinf(r.eps)], x[np.isinf(r.eps)])
    assert np.isfinite(r.eps[small]).all() and (r.eps[small] <= 4).all()
    wrong = minimal_eps(linear, x, 1 - y, AttackSpec(AttackMethod.PGD, 4 / 255), np.random.default_rng(0))
    assert (wrong.eps == 0).all()  # already misclassified clean: broken at any eps


def test_same_seed_same_values_and_a_non_increasing_curve(linear, images):
    from robustlab.attacks.min_eps import median_eps, minimal_eps, robust_curve
    from robustlab.attacks.spec import AttackMethod, AttackSpec

    x, y = images
    spec = AttackSpec(AttackMethod.PGD, 6 / 255, steps=3)
    a = minimal_eps(linear, x, y, spec, np.random.default_rng(3), bisections=4)
    b = minimal_eps(linear, x, y, spec, np.random.default_rng(3), bisections=4)
    assert np.array_equal(a.eps, b.eps) and np.array_equal(a.images, b.images)
    xs, ys = robust_curve(a.eps, 6.0)
    assert xs[0] == 0 and xs[-1] == 6.0 and np.all(np.diff(xs) > 0)
    assert ys[0] == 1.0 and np.all(np.diff(ys) <= 0)
    assert ys[-1] == pytest.approx(np.mean(np.isinf(a.eps)))
    assert median_eps(np.array([1.0, 2.0, math.inf])) == 2.0
    assert median_eps(np.array([1.0, math.inf, math.inf])) == math.inf


def test_attack_min_eps_writes_csv_plot_and_markdown(tmp_path):
    from conftest import run

    det = save_detector(tmp_path / "det", "linear")
    x, y = margin_images(4, seed=6)
    np.savez(tmp_path / "set.npz", x=x, y=y)
    out = tmp_path / "run"
    result = run("attack", str(det), str(tmp_path / "set.npz"), "--method", "pgd", "--eps", "2/255,8/255", "--min-eps", "--no-save-images", "--out", str(out))
    assert result.exit_code == 0, result.output
    with open(out / "min_eps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(x)
    assert {r["param"] for r in rows} == {"eps=0.0314,steps=10"}  # the largest eps is bisected
    values = np.array([float(r["min_eps"]) for r in rows])
    assert ((values > 0) & (values <= 8)).all()
    assert (out / "plots" / "min_eps.png").stat().st_size > 0
    md = (out / "metrics.md").read_text()
    assert "## Minimal perturbation" in md and "| PGD (" in md
    for cls in ("real", "fake"):
        assert any(line.split("|")[2].strip() == cls for line in md.splitlines() if line.startswith("| PGD ("))


def test_min_eps_refuses_methods_without_a_bisectable_eps(tmp_path):
    from conftest import assert_one_line_error, run

    det = save_detector(tmp_path / "det", "linear")
    x, y = margin_images(2, seed=6)
    np.savez(tmp_path / "set.npz", x=x, y=y)
    result = run("attack", str(det), str(tmp_path / "set.npz"), "--method", "auto", "--min-eps", "--out", str(tmp_path / "never"))
    assert_one_line_error(result, "--min-eps does not run auto")
    assert not (tmp_path / "never").exists()
