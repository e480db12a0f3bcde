"""`robustlab compare`: a leaderboard of real run folders (tiny detector, real FGSM, real files in
tmp_path), per-row deltas, McNemar tests checked against scipy, and hostile inputs -> exit 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import make_images, write_class_folder
from scipy.stats import binomtest

from robustlab.cli import main
from robustlab.reporting.compare import mcnemar_exact


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustlab: error: "), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def evaluate_run(detector: Path, data: Path, out: Path) -> Path:
    from robustlab.attacks.variant import parse_attacks
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import evaluate

    res = evaluate(load_detector(detector), open_dataset(data), out=out, variants=parse_attacks(["fgsm:eps=8/255"]), attack_fraction=0.5, batch_size=40, bootstrap=200)
    return Path(res.run_dir)


@pytest.fixture(scope="module")
def runs(trained_detector: Path, test_images_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two detectors on the same data (the tiny CNN at thresholds 0.5 and 0.97), one on other data."""
    root = tmp_path_factory.mktemp("cmp")
    strict = trained_detector.parent / "strict.yaml"
    strict.write_text(trained_detector.read_text(encoding="utf-8").replace("threshold: 0.5", "threshold: 0.97").replace("name: tiny-cnn", "name: tiny-cnn-strict"), encoding="utf-8")
    x, y = make_images(20, seed=11)
    other = write_class_folder(root / "other", x, y)
    return {
        "a": evaluate_run(trained_detector, test_images_folder, root / "a"),
        "b": evaluate_run(strict, test_images_folder, root / "b"),
        "other": evaluate_run(trained_detector, other, root / "c"),
    }


def _right(run: Path, kind: str) -> pd.Series:
    df = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    df = df[df["set"] == kind]
    return pd.Series((df["label"] == df["pred"]).to_numpy(), index=df["id"].to_numpy())


def test_mcnemar_matches_scipy_binomtest():
    for b, c in [(0, 0), (3, 0), (5, 9), (40, 12), (100, 100)]:
        want = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(want)


def test_compare_writes_a_leaderboard_with_paired_tests(runs: dict[str, Path], tmp_path: Path):
    out = tmp_path / "cmp"
    r = run("compare", runs["a"], runs["b"], "--out", out)
    assert r.exit_code == 0, r.output
    assert {"leaderboard.md", "leaderboard.csv", "comparison.json", "comparison.html", "run.json"} <= {p.name for p in out.iterdir()}
    doc = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    rows_a = {(x["set"], x["variant"], x["param"]): x for x in json.loads((runs["a"] / "metrics.json").read_text())["rows"]}
    rows_b = {(x["set"], x["variant"], x["param"]): x for x in json.loads((runs["b"] / "metrics.json").read_text())["rows"]}
    wa, wb = rows_a[("worst-case", "none", "")]["accuracy"], rows_b[("worst-case", "none", "")]["accuracy"]
    board = doc["leaderboard"]
    assert [e["ranked_by"] for e in board] == ["worst-case accuracy"] * 2
    assert [e["value"] for e in board] == sorted([wa, wb], reverse=True)
    assert board[0]["run"] == ("a" if wa >= wb else "b")
    other = doc["runs"][1]["rows"]
    clean = next(x for x in other if x["set"] == "clean")
    assert clean["metrics"]["accuracy"]["delta"] == pytest.approx(rows_b[("clean", "none", "")]["accuracy"] - rows_a[("clean", "none", "")]["accuracy"])
    # the paired test, recomputed from predictions.csv
    ra, rb = _right(runs["a"], "clean"), _right(runs["b"], "clean")
    ra, rb = ra.sort_index(), rb.sort_index()
    b_cnt, c_cnt = int((ra & ~rb).sum()), int((~ra & rb).sum())
    t = clean["paired_test"]
    assert (t["pairs"], t["first_right_other_wrong"], t["first_wrong_other_right"]) == (len(ra), b_cnt, c_cnt)
    assert t["p_value"] == pytest.approx(mcnemar_exact(b_cnt, c_cnt)) and t["significant"] == (t["p_value"] < 0.05)
    assert b_cnt > c_cnt  # threshold 0.97 passes most fakes: worse on clean images
    mixed = next(x for x in other if x["set"] == "mixed")
    assert mixed["paired_test"]["pairs"] == rows_a[("mixed", "fgsm", mixed["param"])]["n"]  # clean + attacked images
    worst = next(x for x in other if x["set"] == "worst-case")
    assert worst["paired_test"]["pairs"] == rows_a[("worst-case", "none", "")]["n"]
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "## Leaderboard" in md and "Paired test" in md and ("worse (p = " in md or "no significant difference" in md)
    assert md in r.stdout
    csv_lines = (out / "leaderboard.csv").read_text(encoding="utf-8").splitlines()
    assert len(csv_lines) == 1 + 2 * len(doc["rows"])
    page = (out / "comparison.html").read_text(encoding="utf-8")
    assert "<table class='leaderboard'>" in page and "http" not in page


@pytest.mark.parametrize("case", ["one-run", "twice", "missing", "incomplete", "different-data", "no-common-rows", "out-inside-run"])
def test_hostile_inputs_are_one_line_errors(case: str, runs: dict[str, Path], tmp_path: Path):
    a, b = runs["a"], runs["b"]
    out = tmp_path / "cmp"
    if case == "one-run":
        r, words = run("compare", a, "--out", out), ("at least two runs",)
    elif case == "twice":
        r, words = run("compare", a, b, str(a) + "/", "--out", out), ("run given twice",)
    elif case == "missing":
        r, words = run("compare", a, tmp_path / "nope", "--out", out), ("no such run folder", "nope")
    elif case == "incomplete":
        broken = tmp_path / "broken"
        shutil.copytree(b, broken)
        (broken / "predictions.csv").unlink()
        r, words = run("compare", a, broken, "--out", out), ("predictions.csv",)
    elif case == "different-data":
        r, words = run("compare", a, runs["other"], "--out", out), ("different data", str(a), str(runs["other"]))
    elif case == "no-common-rows":
        edited = tmp_path / "edited"
        shutil.copytree(b, edited)
        m = json.loads((edited / "metrics.json").read_text(encoding="utf-8"))
        for row in m["rows"]:
            row["param"] = (row["param"] + ",k=1").lstrip(",")
        (edited / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
        r, words = run("compare", a, edited, "--out", out), ("no row in common",)
    else:
        r, words = run("compare", a, b, "--out", b / "cmp"), ("--out",)
        assert not (b / "cmp").exists()
    assert_one_line_error(r, *words)
    assert not out.exists()


def test_same_seed_same_comparison(runs: dict[str, Path], tmp_path: Path):
    for name in ("x", "y"):
        assert run("compare", runs["b"], runs["a"], "--out", tmp_path / name).exit_code == 0
    assert (tmp_path / "x" / "leaderboard.csv").read_bytes() == (tmp_path / "y" / "leaderboard.csv").read_bytes()
