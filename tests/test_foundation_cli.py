"""`robustlab evaluate` end to end through Click, bad input, run folder rules, README and CI."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import (
    assert_one_line_error,
    make_images,
    run,
    tiny_cnn,
    write_class_folder,
)

from robustlab.cli import main

RUN_FILES = ("run.json", "metrics.json", "metrics.csv", "metrics.md", "predictions.csv", "plots/roc.png", "plots/pr.png", "plots/confusion_clean.png")
ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_writes_the_run_folder(trained_detector, test_images_folder, tmp_path):
    out = tmp_path / "run"
    res = run("evaluate", str(trained_detector), str(test_images_folder), "--out", str(out), "--quiet")
    assert res.exit_code == 0, res.output
    for f in RUN_FILES:
        assert (out / f).is_file(), f
    info = json.loads((out / "run.json").read_text())
    assert info["complete"] is True and info["seed"] == 0
    assert info["data"]["n"] == 80 and len(info["data"]["fingerprint"]) == 64
    assert info["detector"]["spec"]["scale"] == "0-1" and info["versions"]["tensorflow"]
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert [r["set"] for r in rows] == ["clean"]
    clean = rows[0]
    assert clean["n"] == 80 and clean["accuracy"] > 0.8 and isinstance(clean["auc"], float)
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == "id,path,label,set,variant,param,score,pred" and len(lines) == 81
    # the table printed on stdout is metrics.md
    assert "| Original Images |" in res.output
    # no temporary folders left behind
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_same_seed_gives_identical_tables(trained_detector, test_images_folder, tmp_path):
    for name in ("a", "b"):
        assert run("evaluate", str(trained_detector), str(test_images_folder), "--out", str(tmp_path / name), "-q", "--batch-size", "16").exit_code == 0
    for f in ("metrics.json", "metrics.csv", "metrics.md", "predictions.csv"):
        a = (tmp_path / "a" / f).read_bytes()
        b = (tmp_path / "b" / f).read_bytes()
        if f == "metrics.md":  # the data path is the same; nothing else varies
            assert a == b
        assert a == b, f


def test_existing_run_folder_is_not_overwritten(trained_detector, test_images_folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run("evaluate", str(trained_detector), str(test_images_folder), "--out", str(out))
    assert_one_line_error(res, "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces only a folder robustlab wrote: this one is the user's
    res = run("evaluate", str(trained_detector), str(test_images_folder), "--out", str(out), "--force", "-q")
    assert_one_line_error(res, "not a robustlab run folder", ".robustlab-run")
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert run("evaluate", str(trained_detector), str(test_images_folder), "--out", str(out), "-q").exit_code == 0
    first = (out / "run.json").read_text()
    res = run("evaluate", str(trained_detector), str(test_images_folder), "--out", str(out), "--force", "-q")
    assert res.exit_code == 0 and (out / "run.json").read_text() != first and (out / ".robustlab-run").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary or old sibling left


def test_bad_input_is_one_line_exit_2(trained_detector, tmp_path):
    det = str(trained_detector)
    assert_one_line_error(run("evaluate", det, str(tmp_path / "missing")), "missing", "no such file")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("evaluate", det, str(tmp_path / "empty")), "empty")
    x, y = make_images(3, seed=3)
    one = write_class_folder(tmp_path / "one", x[y == 1], y[y == 1])
    assert_one_line_error(run("evaluate", det, str(one)), "only one class")
    both = write_class_folder(tmp_path / "both", x, y)
    assert_one_line_error(run("evaluate", str(tmp_path / "nope.yaml"), str(both)), "nope.yaml")
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text(f"model: {trained_detector.parent / 'model.keras'}\nthreshhold: 0.4\n")
    assert_one_line_error(run("evaluate", str(bad_spec), str(both)), "unknown key", "threshhold")
    tiny_cnn(32, units=3, activation="softmax").save(tmp_path / "three.keras")
    assert_one_line_error(run("evaluate", str(tmp_path / "three.keras"), str(both)), "3 units")
    res = run("evaluate", det, str(both), "--scale", "0-9")
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_corrupt_file_is_skipped_named_and_counted(trained_detector, tmp_path):
    x, y = make_images(4, seed=4)
    data = write_class_folder(tmp_path / "d", x, y)
    (data / "real" / "zzz_corrupt.png").write_bytes(b"garbage")
    res = run("evaluate", str(trained_detector), str(data), "--out", str(tmp_path / "r"), "-q")
    assert res.exit_code == 0
    assert "zzz_corrupt.png" in res.output  # named on stderr (CliRunner mixes the streams)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["data"]["skipped"] == 1 and "real/zzz_corrupt.png" in info["data"]["skipped_files"]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["rows"][0]["n"] == 8


def test_bare_model_path_and_positive_real(trained_detector, test_images_folder, tmp_path):
    model = trained_detector.parent / "model.keras"
    res = run("evaluate", str(model), str(test_images_folder), "--scale", "0-1", "--out", str(tmp_path / "r"), "-q")
    assert res.exit_code == 0
    a = json.loads((tmp_path / "r" / "metrics.json").read_text())["rows"][0]
    # the same unit read as P(real) with positive real: labels and scores both flip, accuracy stays
    res = run("evaluate", str(model), str(test_images_folder), "--scale", "0-1", "--model-classes", "fake", "--positive", "real", "--out", str(tmp_path / "r2"), "-q")
    assert res.exit_code == 0
    b = json.loads((tmp_path / "r2" / "metrics.json").read_text())["rows"][0]
    assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.03) and a["auc"] == pytest.approx(b["auc"])


def test_help_is_instant_and_light():
    code = "import sys; from robustlab.cli import main; assert 'tensorflow' not in sys.modules and 'art' not in sys.modules, sorted(m for m in sys.modules if m.startswith(('tensorflow','art')))"
    subprocess.run([sys.executable, "-c", code], check=True)
    for cmd in main.commands:
        res = run(cmd, "--help")
        assert res.exit_code == 0 and "--seed" in res.output and "--batch-size" in res.output, cmd
        assert "\n  Examples:\n    robustlab " in res.output and "\\b" not in res.output, cmd


def test_environment_variables_set_options(trained_detector, test_images_folder, tmp_path):
    res = CliRunner(env={"ROBUSTLAB_SEED": "7", "ROBUSTLAB_EVALUATE_OUT": str(tmp_path / "envrun")}).invoke(main, ["evaluate", str(trained_detector), str(test_images_folder), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "envrun" / "run.json").read_text())["seed"] == 7


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block and readme.index(block.group(0)) < 40
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert "robustlab demo" in lines[0] and "pip install" in lines[0]
    assert "pytest" in lines[1] and "[test]" in lines[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert lines[1] in ci.splitlines()
