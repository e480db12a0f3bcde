"""robustlab.evaluation.thresholds: strategies agree with scikit-learn's curves, documented tie rules, bad
input, bootstrap, leakage checks and writing the threshold into detector specs."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import make_images, write_class_folder
from sklearn.metrics import precision_recall_curve, roc_curve

from robustlab.data import open_dataset
from robustlab.detector.spec import read_spec
from robustlab.detector.specfile import spec_target, write_threshold
from robustlab.errors import RobustlabError
from robustlab.evaluation.selection import check_leakage
from robustlab.evaluation.thresholds import (
    Strategy,
    StrategyKind,
    ThresholdUnreachable,
    bootstrap_threshold,
    parse_strategy,
    pick_threshold,
)
from robustlab.metrics import binary_scores


def noisy_scores(seed: int, n: int, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes; rounding to ``decimals`` makes many tied scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    s = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0.0, 1.0).round(decimals)
    return y, s


CASES = [(seed, n, d) for seed, n, d in ((0, 50, 1), (1, 200, 2), (2, 500, 3), (3, 1000, 6), (4, 31, 2))]


@pytest.mark.parametrize("seed,n,decimals", CASES, ids=[f"n{n}-d{d}" for _, n, d in CASES])
def test_agrees_with_sklearn_curves(seed, n, decimals):
    y, s = noisy_scores(seed, n, decimals)
    prec, rec, thr = precision_recall_curve(y, s)
    prec, rec = prec[:-1], rec[:-1]  # the last point (recall 0) has no threshold
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.where(prec + rec > 0, prec + rec, 1), 0.0)

    c = pick_threshold(y, s, "max-f1")
    assert c.threshold in thr
    assert abs(c.f1 - f1.max()) < 1e-12
    # the threshold reproduces the F1 it reports, through the metrics every row uses
    assert abs(binary_scores(y, s, threshold=c.threshold)["f1"] - c.f1) < 1e-9

    fpr, tpr, _ = roc_curve(y, s)
    j = pick_threshold(y, s, "youden")
    assert abs(j.youden - (tpr - fpr).max()) < 1e-12
    r = binary_scores(y, s, threshold=j.threshold)
    assert abs(r["recall"] - j.recall) < 1e-12

    for p in (0.6, 0.75, 0.9):
        ok = prec >= p
        if ok.any():
            c = pick_threshold(y, s, f"precision:{p}")
            assert c.precision >= p and abs(c.recall - rec[ok].max()) < 1e-12
        else:
            with pytest.raises(ThresholdUnreachable):
                pick_threshold(y, s, f"precision:{p}")
    for r_target in (0.5, 0.9, 1.0):
        c = pick_threshold(y, s, f"recall:{r_target}")
        ok = rec >= r_target
        assert c.recall >= r_target and abs(c.precision - prec[ok].max()) < 1e-12


def test_score_equal_to_threshold_is_positive_and_plateau_is_reported():
    y = np.array([0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.9])
    c = pick_threshold(y, s, "max-f1")
    assert c.threshold == 0.3 and c.tp == 3 and c.fp == 1  # the image scored exactly 0.3 counts as positive
    assert c.plateau_low == 0.2
    # every threshold in (plateau_low, threshold] gives the same validation predictions
    for t in (0.2000001, 0.25, 0.3):
        assert binary_scores(y, s, threshold=t)["f1"] == pytest.approx(c.f1, abs=1e-15)
    assert binary_scores(y, s, threshold=0.2)["f1"] != pytest.approx(c.f1)


@pytest.mark.parametrize(
    "labels,strategy,expected_index",
    [
        ([1, 0, 0, 1], "max-f1", 0),  # F1 2/3 at the top and at the bottom: the higher threshold
        ([1, 0, 1, 0], "youden", 0),  # J 0.5 at scores[0] and scores[2]: the higher threshold
        ([1, 0, 0], "precision:0.3", 0),  # recall 1 everywhere: the higher precision
        ([1, 1, 0, 1, 1, 0], "recall:0.25", 1),  # precision 1 with recall .25 and .5: the higher recall
    ],
    ids=["max-f1-tie", "youden-tie", "precision-tie", "recall-tie"],
)
def test_tie_rules(labels, strategy, expected_index):
    y = np.asarray(labels)
    s = np.linspace(0.9, 0.1, len(y))  # descending: index k is the k-th highest score
    assert pick_threshold(y, s, strategy).threshold == s[expected_index]


def test_order_of_the_images_does_not_matter():
    y, s = noisy_scores(5, 300, 2)
    perm = np.random.default_rng(0).permutation(len(y))
    for strategy in ("max-f1", "youden", "precision:0.7", "recall:0.8", "fixed:0.5"):
        assert pick_threshold(y, s, strategy) == pick_threshold(y[perm], s[perm], strategy)


def test_fixed_reports_metrics_at_the_given_threshold():
    y, s = noisy_scores(6, 100, 3)
    c = pick_threshold(y, s, "fixed:0.5")
    r = binary_scores(y, s, threshold=0.5)
    assert c.threshold == 0.5 and c.f1 == pytest.approx(r["f1"], abs=1e-12) and c.accuracy == pytest.approx(r["accuracy"])
    top = pick_threshold(y, s, "fixed:1")
    if s.max() < 1:
        assert top.precision is None and top.f1 is None and top.recall == 0.0


def test_unreachable_precision_says_the_best_reachable():
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])  # the top score is a negative: precision < 1 everywhere
    with pytest.raises(ThresholdUnreachable) as exc:
        pick_threshold(y, s, "precision:0.9", thing="val/")
    best = exc.value.best
    assert best.precision == pytest.approx(0.6)  # 3 of 5 at threshold 0.5
    line = exc.value.one_line()
    assert "\n" not in line and line.startswith("val/:") and "best reachable is precision 0.6000" in line


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]], ids=["only-negative", "only-positive"])
def test_one_class_is_refused(labels):
    with pytest.raises(RobustlabError, match="one class"):
        pick_threshold(np.asarray(labels), np.linspace(0.1, 0.9, len(labels)), "max-f1")


@pytest.mark.parametrize("text", ["bogus", "precision", "precision:", "precision:1.5", "recall:0", "fixed:abc", "youden:3", "fixed:-0.1"])
def test_bad_strategies_are_one_line_errors(text):
    with pytest.raises(RobustlabError) as exc:
        parse_strategy(text)
    assert "\n" not in exc.value.one_line() and repr(text) in exc.value.one_line()


def test_strategy_parsing():
    assert parse_strategy("precision:19/20") == Strategy(StrategyKind.PRECISION, 0.95)
    assert str(parse_strategy(" Max-F1 ")) == "max-f1"
    assert str(parse_strategy("recall:0.9")) == "recall:0.9"
    assert parse_strategy("fixed:0") == Strategy(StrategyKind.FIXED, 0.0)


def test_bootstrap_interval_is_seeded_and_narrows_with_more_data():
    y_small, s_small = noisy_scores(7, 60, 4)
    y_big, s_big = noisy_scores(8, 3000, 4)
    a = bootstrap_threshold(y_small, s_small, "max-f1", n=200, seed=3)
    b = bootstrap_threshold(y_small, s_small, "max-f1", n=200, seed=3)
    assert a == b
    low, high = a
    assert s_small.min() <= low <= high <= s_small.max()
    big = bootstrap_threshold(y_big, s_big, "max-f1", n=200, seed=3)
    assert (big.high - big.low) < (high - low)
    assert tuple(bootstrap_threshold(y_small, s_small, "fixed:0.3", n=10)) == (0.3, 0.3)


@pytest.mark.parametrize("strategy", ["max-f1", "youden", "precision:0.8", "recall:0.9"])
def test_bootstrap_picks_what_picking_on_each_resample_picks(strategy):
    """The counting shortcut gives the same picks as drawing each resample and picking on it."""
    y, s = noisy_scores(9, 80, 2)
    n = 60
    rng = np.random.default_rng([5, 0xB007])  # the generator bootstrap_threshold(seed=5) uses
    picks = []
    for _ in range(n):
        idx = rng.integers(0, len(y), size=len(y))
        try:
            picks.append(pick_threshold(y[idx], s[idx], strategy).threshold)
        except RobustlabError:
            pass
    b = bootstrap_threshold(y, s, strategy, n=n, seed=5)
    assert b.n - b.failed == len(picks)
    assert (b.low, b.high) == tuple(np.quantile(picks, [0.025, 0.975]))
    assert b.std == pytest.approx(np.std(picks), abs=1e-15)


def test_bootstrap_counts_resamples_that_cannot_pick():
    y = np.array([0, 1] + [0] * 30)
    s = np.linspace(0.0, 1.0, len(y))
    b = bootstrap_threshold(y, s, "max-f1", n=100, seed=0)
    assert b.failed > 0 and b.n == 100  # many resamples draw no positive at all


# --------------------------------------------------------------------------- leakage


def test_leakage_by_fingerprint_and_by_shared_files(tmp_path):
    x, y = make_images(6, seed=3)
    a = write_class_folder(tmp_path / "a", x[:6], y[:6])
    b = write_class_folder(tmp_path / "b", x[6:], y[6:])
    ds_a, ds_b = open_dataset(a, require_both=False), open_dataset(b, require_both=False)
    assert not check_leakage(ds_a, ds_b).leaks
    with pytest.raises(RobustlabError, match="same fingerprint"):
        check_leakage(ds_a, open_dataset(a, require_both=False))
    flagged = check_leakage(ds_a, ds_a, allow_same_data=True)
    assert flagged.same_data and flagged.allowed
    # a manifest over some of a's files: different fingerprint, shared images
    files = sorted(p for p in a.rglob("*.png"))[:3]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in files))
    with pytest.raises(RobustlabError, match="shares 3 of its 3 images"):
        check_leakage(open_dataset(manifest, require_both=False), ds_a)


# --------------------------------------------------------------------------- writing specs

SPEC = """# my detector: keep this comment
name: effatt
model: model.keras
scale: "0-255"   # trained on raw pixels
threshold: 0.5
classes: [fake, real]
"""


@pytest.fixture
def spec_dir(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"not loaded by these tests")
    (tmp_path / "detector.yaml").write_text(SPEC, encoding="utf-8")
    return tmp_path


def test_write_refuses_to_replace_a_threshold_without_force(spec_dir):
    spec = spec_dir / "detector.yaml"
    with pytest.raises(RobustlabError, match="already says threshold: 0.5"):
        write_threshold(spec, 0.734)
    assert spec.read_text() == SPEC
    write_threshold(spec, 0.5)  # the same value: nothing is overwritten
    t = 0.7341234567890123
    assert write_threshold(spec, t, force=True, comment="max-f1 on val") == spec
    text = spec.read_text()
    assert "# my detector: keep this comment" in text and "# trained on raw pixels" in text and "# max-f1 on val" in text
    new = read_spec(spec)
    assert new.threshold == t  # exactly, not rounded
    assert new.scale.value == "0-255" and new.classes == ("fake", "real") and new.name == "effatt"
    assert not [p for p in spec_dir.iterdir() if p.name.endswith(".tmp")]


def test_write_adds_a_missing_threshold_line(spec_dir):
    spec = spec_dir / "detector.yaml"
    spec.write_text(SPEC.replace("threshold: 0.5\n", ""), encoding="utf-8")
    write_threshold(spec, 0.25)
    assert read_spec(spec).threshold == 0.25 and "# my detector" in spec.read_text()


def test_write_with_overrides_needs_a_new_spec_file(spec_dir):
    spec = spec_dir / "detector.yaml"
    with pytest.raises(RobustlabError, match="scale"):
        write_threshold(spec, 0.3, overrides={"scale": "0-1"}, force=True)
    assert spec.read_text() == SPEC
    out = write_threshold(spec, 0.3, overrides={"scale": "0-1"}, out=spec_dir / "sub" / "new.yaml")
    new = read_spec(out)
    assert new.threshold == 0.3 and new.scale.value == "0-1" and new.model == (spec_dir / "model.keras").resolve()
    with pytest.raises(RobustlabError, match="already exists"):
        write_threshold(spec, 0.4, out=out)
    assert read_spec(out).threshold == 0.3


def test_bare_model_path_gets_a_spec_beside_it(spec_dir):
    model = spec_dir / "model.keras"
    target = spec_target(model)
    assert target == spec_dir / "model.yaml"
    assert write_threshold(model, 0.61, overrides={"input_size": "64x64", "scale": "0-1"}, dry_run=True) == target and not target.exists()
    written = write_threshold(model, 0.61, overrides={"input_size": "64x64", "scale": "0-1"})
    assert written == target
    spec = read_spec(target)
    assert spec.threshold == 0.61 and spec.input_size == (64, 64) and spec.model == model.resolve()
    assert yaml.safe_load(target.read_text())["model"] == "model.keras"  # relative to the spec
    assert model.read_bytes() == b"not loaded by these tests"
    with pytest.raises(RobustlabError, match="already exists"):
        write_threshold(model, 0.7)
    write_threshold(model, 0.7, force=True)
    assert read_spec(target).threshold == 0.7
    with pytest.raises(RobustlabError, match="never overwritten"):
        write_threshold(target, 0.7, out=model, force=True)
