"""Hostile DATA: symlink loops, files reached twice, FIFOs, undecodable names, bad manifests and
.npz files. Every case builds real files, runs the real command and checks the exit code, the
one-line message and that no input changed (hashes of every input file before and after).
"""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, make_images, run, write_class_folder
from hostile_helpers import fails_instead_of_hanging, tree_hashes

from robustlab.data import open_dataset
from robustlab.errors import RobustlabError


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """real/ and fake/ with 12 PNGs each (24 images)."""
    x, y = make_images(12, seed=3)
    return write_class_folder(tmp_path / "data", x, y)


def evaluate(detector: Path, data: Path, out: Path, *extra: str):
    return run("evaluate", str(detector), str(data), "--out", str(out), "-q", *extra)


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- links


def test_a_symlink_loop_is_read_once_with_the_right_labels(data, trained_detector, tmp_path):
    (data / "real" / "loop").symlink_to("..", target_is_directory=True)  # real/loop -> data/
    (data / "fake" / "deeper").mkdir()
    (data / "fake" / "deeper" / "up").symlink_to("../..", target_is_directory=True)
    before = tree_hashes(data)
    ds = open_dataset(data)
    assert len(ds) == 24 and ds.counts == {"real": 12, "fake": 12}
    assert not any("loop" in p or "/up/" in p for p in ds.paths)
    out = tmp_path / "run"
    res = evaluate(trained_detector, data, out)
    assert res.exit_code == 0, res.output
    assert run_json(out)["data"]["n"] == 24
    assert "lead back to folders already read" in res.output
    assert tree_hashes(data) == before


def test_a_file_reached_twice_through_links_is_counted_once(data):
    first = sorted((data / "real").iterdir())[0]
    (data / "real" / "again.png").symlink_to(first.name)
    os.link(first, data / "real" / "hardlink.png")
    outside = data.parent / "more"
    outside.mkdir()
    (outside / "extra.png").write_bytes(first.read_bytes())
    (data / "real" / "linked").symlink_to(outside, target_is_directory=True)  # a link out of the tree: followed once
    before = tree_hashes(data, outside)
    ds = open_dataset(data)
    assert ds.counts == {"real": 13, "fake": 12}  # 12 + extra.png; the link and hard link are the same file
    assert tree_hashes(data, outside) == before


def test_a_file_under_both_class_folders_is_refused_naming_both(data, trained_detector, tmp_path):
    real = sorted((data / "real").iterdir())[0]
    (data / "fake" / "stolen.png").symlink_to(Path("..") / "real" / real.name)
    before = tree_hashes(data)
    res = evaluate(trained_detector, data, tmp_path / "run")
    assert_one_line_error(res, "both a real and a fake folder", f"real/{real.name}", "fake/stolen.png")
    assert tree_hashes(data) == before and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- special files


def test_a_fifo_named_like_an_image_is_skipped_and_counted_not_read(data, trained_detector, tmp_path):
    os.mkfifo(data / "real" / "pipe.png")
    before = tree_hashes(data)
    out = tmp_path / "run"
    with fails_instead_of_hanging(120):
        res = evaluate(trained_detector, data, out)
    assert res.exit_code == 0, res.output
    assert res.output.count("pipe.png") == 1 and "FIFO" in res.output
    info = run_json(out)["data"]
    assert info["n"] == 24 and info["skipped"] == 1 and "real/pipe.png" in info["skipped_files"]
    assert tree_hashes(data) == before


def test_a_fifo_listed_in_a_manifest_is_skipped(data, trained_detector, tmp_path):
    os.mkfifo(data / "pipe.png")
    manifest = data / "list.csv"
    rows = [("pipe.png", "fake")] + [(f"{p.parent.name}/{p.name}", p.parent.name) for p in sorted(data.glob("*/*.png"))]
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("path", "label"), *rows])
    before = tree_hashes(data)
    out = tmp_path / "run"
    with fails_instead_of_hanging(120):
        res = evaluate(trained_detector, manifest, out)
    assert res.exit_code == 0, res.output
    assert run_json(out)["data"]["skipped_files"] == {"pipe.png": "a FIFO, not a regular file"}
    assert tree_hashes(data) == before


def test_data_that_is_a_fifo_is_exit_2(tmp_path, trained_detector):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    with fails_instead_of_hanging(60):
        res = evaluate(trained_detector, fifo, tmp_path / "run")
    assert_one_line_error(res, str(fifo), "FIFO")


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_a_file_name_that_is_not_utf8_is_kept_and_written_escaped(data, trained_detector, tmp_path):
    src = sorted((data / "fake").iterdir())[0]
    odd = os.fsencode(data / "fake") + b"/caf\xe9-\xff.png"
    os.rename(src, odd)
    before = tree_hashes(data)
    ds = open_dataset(data)
    assert len(ds) == 24 and "fake/caf\\xe9-\\xff.png" in ds.paths
    out = tmp_path / "run"
    res = evaluate(trained_detector, data, out, "--attack", "fgsm:eps=8/255")
    assert res.exit_code == 0, res.output
    preds = (out / "predictions.csv").read_bytes().decode("utf-8")  # valid UTF-8
    assert preds.count("fake/caf\\xe9-\\xff.png") == 1 + int("fake/caf\\xe9-\\xff.png" in _attacked(out))
    assert (out / "report.html").read_bytes().decode("utf-8")
    assert tree_hashes(data) == before


def _attacked(out: Path) -> str:
    lines = (out / "predictions.csv").read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if ",adversarial," in line)


# --------------------------------------------------------------------------- manifests


def write_manifest(folder: Path, rows: list[tuple[str, str]]) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("path", "label"), *rows])
    return path


def class_rows(data: Path) -> list[tuple[str, str]]:
    return [(f"{p.parent.name}/{p.name}", p.parent.name) for p in sorted(data.glob("*/*.png"))]


def test_repeated_manifest_rows_are_dropped_and_reported(data, trained_detector, tmp_path):
    rows = class_rows(data)
    manifest = write_manifest(data, rows + rows[:3] + [(f"./{rows[5][0]}", rows[5][1])])
    before = tree_hashes(data)
    out = tmp_path / "run"
    res = evaluate(trained_detector, manifest, out)
    assert res.exit_code == 0, res.output
    assert "4 repeated row(s) dropped" in res.output
    info = run_json(out)["data"]
    assert info["n"] == 24 and info["duplicates_dropped"] == 4
    assert tree_hashes(data) == before


def test_a_file_listed_as_real_and_as_fake_is_refused_naming_both_rows(data, trained_detector, tmp_path):
    rows = class_rows(data)
    path, label = rows[0]
    manifest = write_manifest(data, rows + [(f"./{path}", "fake" if label == "real" else "real")])
    before = tree_hashes(data)
    res = evaluate(trained_detector, manifest, tmp_path / "run")
    assert_one_line_error(res, str(manifest), "line 2", f"line {len(rows) + 2}", path)
    assert tree_hashes(data) == before and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- .npz


NPZ_CASES = {
    "empty-images": (lambda x, y: (np.zeros((16, 0, 0, 3), np.uint8), y[:16]), "empty images"),
    "float-images": (lambda x, y: (x.astype(np.float32), y), "not uint8"),
    "labels-not-0-1": (lambda x, y: (x, y * 2), "other than 0 and 1"),
    "nan-labels": (lambda x, y: (x, np.where(np.arange(len(y)) == 3, np.nan, y.astype(np.float64))), "non-finite"),
    "length-mismatch": (lambda x, y: (x, y[:-1]), "labels"),
    "string-labels": (lambda x, y: (x, np.asarray(["real", "fake"] * (len(y) // 2))), "not integer labels"),
    "one-hot-labels": (lambda x, y: (x, np.eye(2, dtype=np.int64)[y]), "not (N,)"),
    "two-channel": (lambda x, y: (x[..., :2], y), "shape"),
}


@pytest.mark.parametrize("case", list(NPZ_CASES), ids=list(NPZ_CASES))
def test_a_bad_npz_is_exit_2_with_the_reason(case, tmp_path, trained_detector):
    make, needle = NPZ_CASES[case]
    x, y = make_images(8, seed=4)
    bad_x, bad_y = make(x, y)
    path = tmp_path / "set.npz"
    np.savez(path, x=bad_x, y=bad_y)
    before = tree_hashes(path)
    res = evaluate(trained_detector, path, tmp_path / "run")
    assert_one_line_error(res, str(path), needle)
    assert tree_hashes(path) == before and not (tmp_path / "run").exists()
    with pytest.raises(RobustlabError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        open_dataset(path)


def test_force_never_replaces_the_folder_of_a_manifest_or_its_images(data, trained_detector, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = write_manifest(lists, [(f"../data/{p}", label) for p, label in class_rows(data)])
    before = tree_hashes(data, lists)
    assert_one_line_error(evaluate(trained_detector, manifest, lists, "--force"), "holds an input")
    assert_one_line_error(evaluate(trained_detector, manifest, data / "real", "--force"), "holds an input")
    assert tree_hashes(data, lists) == before
