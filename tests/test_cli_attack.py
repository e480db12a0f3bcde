"""`robustlab attack` and `robustlab evaluate --attack` end to end through Click: the table, the
saved adversarial set (itself a DATA folder), same seed -> same bytes, diagnostics, bad input."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_class_folder
from test_attacks import margin_images, save_detector

from robustlab.cli import main


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def rows_of(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "metrics.json").read_text())["rows"]


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("robustlab: error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for n in needles:
        assert n in lines[0], lines[0]


def digest(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    out = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}
    pngs = hashlib.sha256()
    for p in sorted((folder / "adversarial").rglob("*.png")):
        pngs.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    out["adversarial/*.png"] = pngs.hexdigest()
    return out


@pytest.fixture(scope="module")
def margin_folder(tmp_path_factory) -> Path:
    x, y = margin_images(6, seed=11)
    return write_class_folder(tmp_path_factory.mktemp("margin") / "data", x, y)


def test_attack_writes_the_table_and_a_reusable_adversarial_set(trained_detector, test_images_folder, tmp_path):
    out = tmp_path / "run"
    res = run("attack", trained_detector, test_images_folder, "--method", "fgsm", "--eps", "8/255", "--fraction", "0.5", "--out", out, "-q")
    assert res.exit_code == 0, res.output
    rows = rows_of(out)
    assert [(r["set"], r["variant"], r["param"]) for r in rows] == [
        ("clean", "none", ""),
        ("adversarial", "fgsm", "eps=0.0314"),
        ("mixed", "fgsm", "eps=0.0314"),
        ("worst-case", "none", ""),
    ]
    clean, adv, mixed, _ = rows
    assert clean["n"] == 80 and adv["n"] == 40 and mixed["n"] == 120
    assert adv["accuracy"] < clean["accuracy"]  # the attack hurts
    assert adv["linf"] == 8.0
    for title in ("| Original Images |", "| FGSM Adversarial Images (eps=8/255) |", "| (Original + Adversarial) Images |"):
        assert title in res.output
    # the attacked subset: stratified, recorded in predictions.csv
    preds = list(csv.DictReader(io.StringIO((out / "predictions.csv").read_text())))
    attacked = [p for p in preds if p["set"] == "adversarial"]
    assert len({p["id"] for p in attacked}) == 40 and sum(p["label"] == "1" for p in attacked) == 20
    # every attacked image saved as PNG under the same relative path, and a per-image table
    for p in attacked:
        assert (out / "adversarial" / p["path"]).is_file(), p["path"]
    assert len(list((out / "adversarial").rglob("*.png"))) == 40
    table = list(csv.DictReader(io.StringIO((out / "attacks.csv").read_text())))
    assert len(table) == 40 and {t["linf"] for t in table} == {"8"} and all(0 < float(t["ssim"]) < 1 for t in table)
    assert sum(int(t["success"]) for t in table) == adv["misclassified"]
    info = json.loads((out / "run.json").read_text())
    assert info["attack_fraction"] == 0.5 and info["adversarial_images"]["images"] == 40
    assert info["attacks"][0]["spec"]["labels"] == "true labels" and info["attacks"][0]["images"] == 40
    # the saved folder is a DATA argument, and evaluating it reproduces the adversarial row
    again = tmp_path / "again"
    res = run("evaluate", trained_detector, out / "adversarial", "--out", again, "-q")
    assert res.exit_code == 0, res.output
    re_clean = rows_of(again)[0]
    for key in ("n", "accuracy", "precision", "recall", "misclassified"):
        assert re_clean[key] == adv[key], key
    assert re_clean["auc"] == pytest.approx(adv["auc"], abs=1e-6)


def test_same_seed_gives_identical_bytes_and_another_seed_another_subset(trained_detector, test_images_folder, tmp_path):
    args = ("attack", trained_detector, test_images_folder, "--method", "pgd", "--eps", "8/255", "--steps", "2", "--fraction", "0.25", "-q")
    names = ("metrics.json", "metrics.csv", "metrics.md", "predictions.csv", "attacks.csv")
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert run(*args, "--seed", seed, "--out", tmp_path / name).exit_code == 0
    a, b, c = (digest(tmp_path / n, names) for n in ("a", "b", "c"))
    assert a == b
    assert a["predictions.csv"] != c["predictions.csv"]


def test_several_attacks_get_one_folder_each_a_worst_case_row_and_a_plot(trained_detector, test_images_folder, tmp_path):
    out = tmp_path / "run"
    res = run("attack", trained_detector, test_images_folder, "--method", "fgsm", "--method", "pgd", "--eps", "2/255,8/255", "--steps", "3", "--fraction", "0.25", "--out", out, "-q")
    assert res.exit_code == 0, res.output
    rows = rows_of(out)
    adv = {(r["variant"], r["param"]): r for r in rows if r["set"] == "adversarial"}
    assert set(adv) == {("fgsm", "eps=0.0078"), ("fgsm", "eps=0.0314"), ("pgd", "eps=0.0078,steps=3"), ("pgd", "eps=0.0314,steps=3")}
    assert [r["set"] for r in rows].count("worst-case") == 1
    worst = rows[-1]
    assert worst["set"] == "worst-case" and worst["accuracy"] <= min(r["accuracy"] for r in rows if r["set"] == "clean")
    folders = sorted(p.name for p in (out / "adversarial").iterdir())
    assert folders == ["fgsm_eps=0.0078", "fgsm_eps=0.0314", "pgd_eps=0.0078_steps=3", "pgd_eps=0.0314_steps=3"]
    for f in folders:
        assert len(list((out / "adversarial" / f).rglob("*.png"))) == 20
    assert (out / "plots" / "accuracy_vs_eps.png").is_file()


def test_evaluate_attack_adds_rows_a_plot_and_the_sanity_check(trained_detector, test_images_folder, tmp_path):
    out = tmp_path / "run"
    res = run(
        "evaluate", trained_detector, test_images_folder,
        "--attack", "fgsm:eps=2/255,8/255", "--attack", "pgd:eps=8/255,steps=3", "--attack-fraction", "0.5", "--sanity",
        "--out", out, "--format", "md", "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = rows_of(out)
    adv = [(r["variant"], r["param"], r["n"]) for r in rows if r["set"] == "adversarial"]
    assert adv == [("fgsm", "eps=0.0078", 40), ("fgsm", "eps=0.0314", 40), ("pgd", "eps=0.0314,steps=3", 40)]
    assert len([r for r in rows if r["set"] == "mixed"]) == 3
    assert (out / "plots" / "accuracy_vs_eps.png").is_file()
    info = json.loads((out / "run.json").read_text())
    assert info["sanity"]["passed"] is True and info["sanity"]["adversarial_accuracy"] <= 0.05
    assert [a["param"] for a in info["attacks"]] == ["eps=0.0078", "eps=0.0314", "eps=0.0314,steps=3"]


def test_a_saturated_detector_is_flagged_and_fails_the_sanity_check(tmp_path, margin_folder):
    det = save_detector(tmp_path / "det", "saturated")
    out = tmp_path / "run"
    res = run("attack", det, margin_folder, "--eps", "8/255", "--sanity", "--out", out)
    assert res.exit_code == 0, res.output  # diagnostics warn; they do not fail the run (policies do)
    assert "robustlab: warning: sanity check failed" in res.output
    assert "robustlab: sanity check FAILED" in res.output
    assert "exactly zero loss gradient" in res.output
    info = json.loads((out / "run.json").read_text())
    assert info["sanity"]["passed"] is False
    assert any("not below the clean accuracy" in d for d in info["diagnostics"])
    assert "diagnostic: sanity check failed" in (out / "metrics.md").read_text()


def test_a_non_differentiable_detector_is_refused_with_the_reason(tmp_path, margin_folder):
    det = save_detector(tmp_path / "det", "non_differentiable")
    for args in (("attack", det, margin_folder), ("evaluate", det, margin_folder, "--attack", "fgsm:eps=8/255")):
        out = tmp_path / f"run-{args[0]}"
        assert_one_line_error(run(*args, "--out", out), "not differentiable", "detector.yaml")
        assert not out.exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (("--eps", "0"), ("eps=0 is outside (0, 1]",)),
        (("--eps", "2"), ("eps=2 is outside (0, 1]",)),
        (("--eps", "8/255,nope"), ("not a number",)),
        (("--fraction", "0"), ("--fraction=0 is outside (0, 1]",)),
        (("--fraction", "1.5"), ("--fraction=1.5 is outside (0, 1]",)),
        (("--method", "cw"), ("unknown attack 'cw'", "fgsm, pgd")),
        (("--norm", "3"), ("unknown norm",)),
        (("--steps", "5"), ("--steps is an option of", "pgd")),
        (("--loss", "margin"), ("--loss is an option of apgd only",)),
        (("--method", "sideways"), ("unknown attack 'sideways'", "apgd")),
        (("--method", "pgd", "--step", "0"), ("step=0 is outside (0, 1]",)),
    ],
    ids=["eps-0", "eps-2", "eps-text", "fraction-0", "fraction-1.5", "method", "norm", "steps-fgsm", "loss-fgsm", "method-unknown", "step-0"],
)
def test_attack_bad_input_is_one_line_exit_2(args, needles, tmp_path, margin_folder):
    det = tmp_path / "missing.yaml"  # never read: options are checked first
    out = tmp_path / "run"
    assert_one_line_error(run("attack", det, margin_folder, *args, "--out", out), *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (("--attack", "pgd:eps=8/255,stepz=3"), ("unknown option 'stepz'", "steps")),
        (("--attack", "deepfool:eps=8/255"), ("unknown attack 'deepfool'",)),
        (("--attack", "fgsm:eps=0"), ("outside (0, 1]",)),
        (("--attack", "fgsm:eps=8/255", "--attack-fraction", "0"), ("--attack-fraction=0 is outside (0, 1]",)),
    ],
    ids=["option", "attack", "eps", "fraction"],
)
def test_evaluate_attack_bad_input_is_one_line_exit_2(args, needles, tmp_path, margin_folder):
    out = tmp_path / "run"
    assert_one_line_error(run("evaluate", tmp_path / "missing.yaml", margin_folder, *args, "--out", out), *needles)
    assert not out.exists()


def test_an_existing_run_folder_is_not_overwritten(tmp_path, margin_folder):
    det = save_detector(tmp_path / "det", "linear")
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(run("attack", det, margin_folder, "--out", out), "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"
    assert_one_line_error(run("attack", det, margin_folder, "--out", out, "--force", "-q"), "not a robustlab run folder")  # --force replaces only robustlab's folders
    (out / ".robustlab-run").write_text("robustlab run folder\n")
    res = run("attack", det, margin_folder, "--out", out, "--force", "-q")
    assert res.exit_code == 0 and (out / "adversarial").is_dir() and not (out / "keep.txt").exists()


def test_attack_runs_the_strong_methods_with_their_options_and_a_direction(trained_detector, test_images_folder, tmp_path):
    """`robustlab attack --method apgd|square` with per-method options; --direction evade attacks fakes only."""
    out = tmp_path / "run"
    res = run(
        "attack", trained_detector, test_images_folder, "--method", "apgd", "--method", "square", "--eps", "8/255",
        "--steps", "3", "--loss", "margin", "--queries", "20", "--direction", "evade", "--fraction", "0.5", "--out", out, "-q",
    )
    assert res.exit_code == 0, res.output
    adv = {r["variant"]: r for r in rows_of(out) if r["set"] == "adversarial"}
    assert set(adv) == {"apgd", "square"}
    assert "loss=margin" in adv["apgd"]["param"] and "direction=evade" in adv["apgd"]["param"] and "queries=20" in adv["square"]["param"]
    with (out / "predictions.csv").open(newline="") as fh:
        attacked = [r for r in csv.DictReader(fh) if r["set"] == "adversarial"]
    assert attacked and all(r["label"] == "1" for r in attacked)  # evade: only fakes (positive class) were attacked
    assert adv["apgd"]["n"] == adv["square"]["n"] == len(attacked) // 2
    saved = [p.relative_to(out / "adversarial").parts[1] for p in (out / "adversarial").rglob("*.png")]
    assert saved and set(saved) == {"fake"}  # one sub-folder per attack, then the class folder
    assert all(r["linf"] <= 8.0 for r in adv.values())
