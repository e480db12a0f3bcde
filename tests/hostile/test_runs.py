"""Hostile --out folders and run folders: --force aimed at inputs, an --out inside DATA, folders
robustlab did not write, unwritable and overlong outs, a disk that fills up, stale temporaries of
killed runs, incomplete and malformed baseline runs, YAML bombs in policies, suites and specs.

Every case uses real files and real commands; it checks the exit code, the one-line message and
that nothing outside --out changed (every input file hashed before and after).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, make_images, run, write_class_folder
from hostile_helpers import tree_hashes

from robustlab.errors import RobustlabError
from robustlab.runs import MARKER, OWNER, RunFolder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    x, y = make_images(12, seed=5)
    return write_class_folder(tmp_path / "data", x, y)


@pytest.fixture
def val(tmp_path: Path) -> Path:
    x, y = make_images(6, seed=6)
    return write_class_folder(tmp_path / "val", x, y)


@pytest.fixture
def detector(trained_detector: Path, tmp_path: Path) -> Path:
    """A private copy of the trained detector folder (spec + model), so a broken guard cannot
    delete the session's."""
    return shutil.copytree(trained_detector.parent, tmp_path / "det") / trained_detector.name


@pytest.fixture(scope="module")
def finished_run(trained_detector: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = make_images(12, seed=8)
    root = tmp_path_factory.mktemp("finished")
    data = write_class_folder(root / "data", x, y)
    out = root / "run"
    res = run("evaluate", str(trained_detector), str(data), "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    return out


# --------------------------------------------------------------------------- --force and inputs

FORCED_INTO_INPUTS = {
    "evaluate-out-DATA": (lambda d: ["evaluate", d["det"], d["data"], "--out", d["data"]], "is an input"),
    "evaluate-out-MODEL_DIR": (lambda d: ["evaluate", d["det"], d["data"], "--out", d["det_dir"]], "holds an input"),
    "evaluate-out-VAL": (lambda d: ["evaluate", d["det"], d["data"], "--val", d["val"], "--out", d["val"]], "is an input"),
    "evaluate-out-parent-of-DATA": (lambda d: ["evaluate", d["det"], d["data"], "--out", d["root"]], "holds an input"),
    "attack-out-DATA": (lambda d: ["attack", d["det"], d["data"], "--eps", "8/255", "--out", d["data"]], "is an input"),
    "attack-out-inside-DATA": (lambda d: ["attack", d["det"], d["data"], "--eps", "8/255", "--out", os.path.join(d["data"], "fake", "run1")], "lies inside an input"),
    "evaluate-out-inside-DATA": (lambda d: ["evaluate", d["det"], d["data"], "--out", os.path.join(d["data"], "real", "r")], "lies inside an input"),
    "corrupt-out-DATA": (lambda d: ["corrupt", d["data"], "-c", "jpeg:1", "--out", d["data"]], "is an input"),
    "corrupt-out-inside-DATA": (lambda d: ["corrupt", d["data"], "-c", "jpeg:1", "--out", os.path.join(d["data"], "c")], "lies inside an input"),
    "adv-train-out-VAL": (lambda d: ["adv-train", d["det"], d["data"], "--val", d["val"], "--eps", "8/255", "--out", d["val"]], "is an input"),
    "adv-train-out-inside-TRAIN": (lambda d: ["adv-train", d["det"], d["data"], "--val", d["val"], "--eps", "8/255", "--out", os.path.join(d["data"], "new")], "lies inside an input"),
}


@pytest.mark.parametrize("case", list(FORCED_INTO_INPUTS), ids=list(FORCED_INTO_INPUTS))
def test_force_never_replaces_or_writes_into_an_input(case, data, val, detector, tmp_path):
    make, needle = FORCED_INTO_INPUTS[case]
    names = {"det": str(detector), "det_dir": str(detector.parent), "data": str(data), "val": str(val), "root": str(tmp_path)}
    before = tree_hashes(data, val, detector.parent)
    res = run(*make(names), "--force", "-q")
    assert_one_line_error(res, needle, "--out outside the inputs")
    assert tree_hashes(data, val, detector.parent) == before


def test_force_refuses_a_folder_robustlab_did_not_write(data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    before = tree_hashes(out, data)
    res = run("corrupt", str(data), "-c", "jpeg:1", "--out", str(out), "--force", "-q")
    assert_one_line_error(res, str(out), "not a robustlab run folder", MARKER)
    assert tree_hashes(out, data) == before
    (out / MARKER).symlink_to(tmp_path / "elsewhere")  # a link named like the marker is not the marker
    assert_one_line_error(run("corrupt", str(data), "-c", "jpeg:1", "--out", str(out), "--force", "-q"), "not a robustlab run folder")


def test_force_replaces_a_robustlab_output_and_leaves_no_sibling(data, tmp_path):
    out = tmp_path / "c"
    assert run("corrupt", str(data), "-c", "jpeg:1", "--out", str(out), "-q").exit_code == 0
    assert (out / MARKER).is_file()
    before = tree_hashes(data)
    res = run("corrupt", str(data), "-c", "blur:1", "--out", str(out), "--force", "-q")
    assert res.exit_code == 0, res.output
    assert (out / "blur").is_dir() and not (out / "jpeg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "data"]
    assert tree_hashes(data) == before


# --------------------------------------------------------------------------- where --out can be written


def test_an_out_in_a_folder_that_cannot_be_written_is_exit_2_before_any_work(data, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        target = locked / "run" if not os.access(locked, os.W_OK) else Path("/sys/robustlab-hostile-test/run")
        if not target.parent.exists() and target.parent.parent == Path("/sys") and not Path("/sys").is_dir():
            pytest.skip("running as root without a read-only folder to test with")
        before = tree_hashes(data)
        t0 = time.monotonic()
        res = run("corrupt", str(data), "-c", "jpeg:1-5", "--out", str(target), "-q")
        assert_one_line_error(res, "cannot", "write")
        assert time.monotonic() - t0 < 30 and not target.exists()
        assert tree_hashes(data) == before
    finally:
        locked.chmod(0o755)


def test_an_out_whose_temporary_sibling_name_would_be_too_long_works(data, tmp_path):
    out = tmp_path / ("r" * 250)  # .r{250}.tmp-PID-XXXXXXXX is longer than 255 bytes
    res = run("corrupt", str(data), "-c", "jpeg:1", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert (out / MARKER).is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["data", out.name]


def test_an_out_name_longer_than_the_file_system_allows_is_exit_2(data, tmp_path):
    out = tmp_path / ("r" * 300)
    before = tree_hashes(data)
    assert_one_line_error(run("corrupt", str(data), "-c", "jpeg:1", "--out", str(out), "-q"), "too long", "shorter --out")
    assert tree_hashes(data) == before


def test_a_disk_that_fills_up_is_exit_2_naming_the_disk_and_leaves_nothing(trained_detector, data, tmp_path):
    """RLIMIT_FSIZE makes every write past 16 KiB fail with EFBIG, as a full disk fails with ENOSPC."""
    out = tmp_path / "run"
    before = tree_hashes(data)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
    try:
        res = run("evaluate", str(trained_detector), str(data), "--out", str(out), "-q")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert_one_line_error(res, "cannot write", "disk")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert tree_hashes(data) == before


def test_a_run_missing_a_file_it_needs_is_not_committed(tmp_path):
    with RunFolder(tmp_path / "run") as folder:
        folder.write_json("metrics.json", {"rows": []})
        with pytest.raises(RobustlabError, match="incomplete .*metrics.csv"):
            folder.commit({"command": ["test"]})
    assert not (tmp_path / "run").exists() and list(tmp_path.iterdir()) == []


def test_a_run_whose_listed_file_is_gone_is_not_reported(finished_run, tmp_path):
    copy = shutil.copytree(finished_run, tmp_path / "run")
    info = json.loads((copy / "run.json").read_text())
    assert {"report.html", "predictions.csv", "metrics.md"} <= set(info["files"])
    (copy / "notes.csv").write_text("id\n1\n")  # a data file the run lists, then lost
    info["files"].append("notes.csv")
    (copy / "run.json").write_text(json.dumps(info))
    (copy / "notes.csv").unlink()
    before = tree_hashes(copy)
    assert_one_line_error(run("report", str(copy)), str(copy), "notes.csv", "missing")
    assert tree_hashes(copy) == before
    (copy / "metrics.md").unlink()
    assert_one_line_error(run("report", str(copy)), str(copy), "missing metrics.md")


# --------------------------------------------------------------------------- stale temporaries


def _killed_run(out: Path) -> Path:
    """Start a real run folder in another process and kill -9 it: its temporary is left."""
    code = "import sys, time\nfrom robustlab.runs import RunFolder\nf = RunFolder(sys.argv[1])\nprint(f.dir, flush=True)\ntime.sleep(600)\n"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    tmp = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert tmp.is_dir() and (tmp / MARKER).is_file() and (tmp / OWNER).is_file()
    return tmp


def test_a_stale_temporary_of_a_killed_run_is_cleaned_and_others_are_left(data, tmp_path):
    out = tmp_path / "c"
    stale = _killed_run(out)
    old = time.time() - 3600
    os.utime(stale / OWNER, (old, old))
    fresh = _killed_run(out)  # killed a moment ago: could be a pid reused; left until it is old
    foreign = tmp_path / ".c.tmp-1-notours"  # no marker: someone else's files
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not robustlab's")
    before = tree_hashes(data, foreign)
    res = run("corrupt", str(data), "-c", "jpeg:1", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert not stale.exists() and fresh.exists() and (foreign / "keep.txt").read_text() == "not robustlab's"
    assert f"{foreign}" in res.output and f"{fresh}" in res.output
    assert tree_hashes(data, foreign) == before


# --------------------------------------------------------------------------- baselines


BAD_BASELINES = {
    "metrics-is-a-list": (lambda m: [], "metrics.json is a JSON list"),
    "set-null": (lambda m: {**m, "rows": [{**r, "set": None} for r in m["rows"]]}, "set: null"),
    "variant-number": (lambda m: {**m, "rows": [{**r, "variant": 3} for r in m["rows"]]}, "variant: 3"),
    "n-string": (lambda m: {**m, "rows": [{**r, "n": "24"} for r in m["rows"]]}, 'n: "24"'),
    "row-is-a-string": (lambda m: {**m, "rows": ["clean"]}, "row 0 is a JSON str"),
    "rows-null": (lambda m: {**m, "rows": None}, "without a rows list"),
    "accuracy-string": (lambda m: {**m, "rows": [{**r, "accuracy": "high"} for r in m["rows"]]}, "accuracy"),
}


@pytest.mark.parametrize("case", list(BAD_BASELINES), ids=list(BAD_BASELINES))
def test_a_malformed_baseline_is_exit_2_naming_the_file(case, finished_run, tmp_path):
    make, needle = BAD_BASELINES[case]
    base = shutil.copytree(finished_run, tmp_path / "base")
    current = shutil.copytree(finished_run, tmp_path / "current")
    metrics = json.loads((base / "metrics.json").read_text())
    (base / "metrics.json").write_text(json.dumps(make(metrics)))
    before = tree_hashes(base)
    res = run("report", str(current), "--baseline", str(base), "--format", "md")
    assert_one_line_error(res, str(base / "metrics.json"), needle, "re-run the evaluation")
    assert tree_hashes(base) == before


def test_a_run_json_that_is_not_an_object_is_exit_2(finished_run, tmp_path):
    copy = shutil.copytree(finished_run, tmp_path / "run")
    (copy / "run.json").write_text("[1, 2]")
    assert_one_line_error(run("report", str(copy)), "run.json", "not an object")


# --------------------------------------------------------------------------- YAML bombs


def billion_laughs(levels: int = 9) -> str:
    text = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, levels + 1):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


YAML_BOMBS = {
    "policy-bomb": ("policy", billion_laughs() + "rules:\n  - clean.accuracy >= 0.5\n", "alias bomb"),
    "suite-bomb": ("suite", billion_laughs() + "attacks: [fgsm:eps=8/255]\n", "alias bomb"),
    "spec-bomb": ("spec", billion_laughs() + "model: model.keras\n", "alias bomb"),
    "policy-recursive": ("policy", "rules: &r [clean.accuracy >= 0.5, *r]\n", "recursive alias"),
    "spec-recursive": ("spec", "model: model.keras\nx: &x [*x]\n", "recursive alias"),
    "policy-huge": ("policy", "rules:\n" + "  - clean.accuracy >= 0.5\n" * 60000, "larger than"),
}


@pytest.mark.parametrize("case", list(YAML_BOMBS), ids=list(YAML_BOMBS))
def test_a_yaml_bomb_is_exit_2_at_once(case, trained_detector, data, finished_run, tmp_path):
    kind, text, needle = YAML_BOMBS[case]
    if kind == "spec":
        det_dir = shutil.copytree(trained_detector.parent, tmp_path / "det")
        path = det_dir / "bomb.yaml"
        path.write_text(text)
        args = ["evaluate", str(path), str(data), "--out", str(tmp_path / "run")]
    elif kind == "suite":
        path = tmp_path / "suite.yaml"
        path.write_text(text)
        args = ["evaluate", str(trained_detector), str(data), "--suite", str(path), "--out", str(tmp_path / "run")]
    else:
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        args = ["report", str(shutil.copytree(finished_run, tmp_path / "copy")), "--policy", str(path)]
    before = tree_hashes(data, path)
    t0 = time.monotonic()
    res = run(*args, "-q")
    assert_one_line_error(res, str(path), needle)
    assert time.monotonic() - t0 < 20 and not (tmp_path / "run").exists()
    assert tree_hashes(data, path) == before
