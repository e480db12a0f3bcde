"""`robustlab corrupt` and `robustlab evaluate --corruption` end to end through Click."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, make_images, run, write_class_folder

from robustlab.data import decode_image, open_dataset


def no_temp_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".tmp-" in p.name]


def files_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "run.json"}


def test_folder_tree_copies_are_valid_data_with_the_same_layout(image_folder, tmp_path):
    # a JPEG source too: its copy is a PNG next to the others
    from PIL import Image

    Image.fromarray(make_images(1, seed=9)[0][0]).save(image_folder / "real" / "photo.jpg", quality=95)
    out = tmp_path / "c"
    res = run("corrupt", str(image_folder), "--corruption", "jpeg", "--severity", "1-5", "-c", "blur:3", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    src = open_dataset(image_folder)
    expected = sorted(p.rsplit(".", 1)[0] + ".png" for p in src.paths)
    for name, sev in [("jpeg", s) for s in range(1, 6)] + [("blur", 3)]:
        folder = out / name / f"severity-{sev}"
        ds = open_dataset(folder)
        assert sorted(ds.paths) == expected
        assert ds.counts == src.counts
        assert str(folder) in res.output
    # pixels: the corruption of the decoded source, at its own size
    from robustlab.corruptions.functions import corrupt, image_seed

    i = src.paths.index("real/photo.jpg")
    want = corrupt(decode_image(src.source(i)), "blur", 3, image_seed(0, "blur", 3, i))
    assert np.array_equal(decode_image(out / "blur" / "severity-3" / "real" / "photo.png"), want)
    info = json.loads((out / "run.json").read_text())
    assert info["complete"] is True and info["kind"] == "corrupt"
    assert [(s["corruption"], s["severity"]) for s in info["sets"]][-1] == ("blur", 3)
    assert info["sets"][0]["parameters"] == {"cifar10-c": {"quality": 80}}
    assert info["images"]["written"] == len(src)
    assert no_temp_left(tmp_path)


def test_same_seed_same_bytes_other_seed_other_noise(image_folder, tmp_path):
    args = ["corrupt", str(image_folder), "-c", "noise:2", "-c", "social:4", "-q"]
    assert run(*args, "--out", str(tmp_path / "a"), "--workers", "1").exit_code == 0
    assert run(*args, "--out", str(tmp_path / "b"), "--workers", "3").exit_code == 0
    assert run(*args, "--out", str(tmp_path / "c"), "--seed", "1").exit_code == 0
    a, b, c = (files_bytes(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 2 * 24 + 1  # + the .robustlab-run marker (constant)
    noise = [k for k in a if k.startswith("noise/")]
    assert all(a[k] != c[k] for k in noise)
    assert all(a[k] == c[k] for k in a if k.startswith("social/"))  # deterministic corruption


def test_split_root_keeps_the_split_folder(tmp_path):
    x, y = make_images(4, seed=3)
    write_class_folder(tmp_path / "cifake" / "test", x, y)
    write_class_folder(tmp_path / "cifake" / "train", x[:2], y[:2])
    out = tmp_path / "out"
    res = run("corrupt", str(tmp_path / "cifake"), "--split", "test", "-c", "resize:5", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert "--split test" in res.output
    ds = open_dataset(out / "resize" / "severity-5", split="test")
    assert len(ds) == 8 and ds.counts == {"real": 4, "fake": 4}
    assert not (out / "resize" / "severity-5" / "train").exists()
    # without --split the split root is refused, as everywhere
    assert_one_line_error(run("corrupt", str(tmp_path / "cifake"), "-c", "jpeg", "--out", str(tmp_path / "o2")), "--split")


def test_manifest_and_npz_inputs(tmp_path):
    x, y = make_images(4, seed=4)
    write_class_folder(tmp_path / "imgs", x, y, names=("authentic", "generated"), fmt="bmp")
    rows = ["path,label"] + [f"imgs/{p.parent.name}/{p.name},{'1' if p.parent.name == 'generated' else '0'}" for p in sorted((tmp_path / "imgs").rglob("*.bmp"))]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "m"
    res = run("corrupt", str(tmp_path / "test.csv"), "-c", "jpeg:2", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    csv_out = out / "jpeg" / "severity-2" / "test.csv"
    src, ds = open_dataset(tmp_path / "test.csv"), open_dataset(csv_out)
    assert [p.replace(".bmp", ".png") for p in src.paths] == ds.paths
    assert ds.labels.tolist() == src.labels.tolist()
    assert ds.load_arrays((32, 32)).x.shape == (8, 32, 32, 3)

    np.savez(tmp_path / "set.npz", x=x, y=y)
    out = tmp_path / "n"
    res = run("corrupt", str(tmp_path / "set.npz"), "-c", "blur:1,5", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    for sev in (1, 5):
        ds = open_dataset(out / "blur" / f"severity-{sev}" / "set.npz")
        got = ds.load_arrays((32, 32))
        assert got.x.dtype == np.uint8 and got.x.shape == x.shape
        assert ds.labels.tolist() == y.tolist() and not np.array_equal(got.x, x)


def test_existing_out_is_refused_without_force(image_folder, tmp_path):
    out = tmp_path / "c"
    assert run("corrupt", str(image_folder), "-c", "jpeg:1", "--out", str(out), "-q").exit_code == 0
    before = files_bytes(out)
    assert_one_line_error(run("corrupt", str(image_folder), "-c", "blur:1", "--out", str(out)), str(out), "--force")
    assert files_bytes(out) == before
    assert run("corrupt", str(image_folder), "-c", "blur:1", "--out", str(out), "--force", "-q").exit_code == 0
    assert (out / "blur" / "severity-1").is_dir() and not (out / "jpeg").exists()
    assert no_temp_left(tmp_path)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["-c", "fog"], ["unknown corruption 'fog'", "jpeg, blur, resize, noise, social"]),
        (["-c", "jpeg", "--severity", "6"], ["severity 6 is outside 1..5"]),
        (["-c", "blur:0-3"], ["outside 1..5"]),
    ],
    ids=["unknown-name", "severity-6", "severity-0"],
)
def test_bad_corruption_arguments_exit_2(image_folder, tmp_path, args, needles):
    res = run("corrupt", str(image_folder), *args, "--out", str(tmp_path / "o"))
    assert_one_line_error(res, *needles)
    assert not (tmp_path / "o").exists() and no_temp_left(tmp_path)


def test_too_small_and_unreadable_images_are_skipped_and_counted(image_folder, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((5, 40, 3), np.uint8)).save(image_folder / "fake" / "tiny.png")
    (image_folder / "real" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "c"
    res = run("corrupt", str(image_folder), "-c", "resize:1", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "tiny.png" in res.output and "broken.png" in res.output
    info = json.loads((out / "run.json").read_text())
    assert info["images"] == {"written": 24, "skipped_unreadable": 1, "skipped_too_small": 1}
    assert list(info["too_small_files"]) == ["fake/tiny.png"]
    assert len(open_dataset(out / "resize" / "severity-1")) == 24


def test_a_set_of_only_too_small_images_exits_2(tmp_path):
    x = np.full((4, 6, 6, 3), 128, np.uint8)
    np.savez(tmp_path / "tiny.npz", x=x, y=np.array([0, 1, 0, 1]))
    res = run("corrupt", str(tmp_path / "tiny.npz"), "-c", "jpeg", "--out", str(tmp_path / "o"))
    assert_one_line_error(res, "too small", "8")
    assert not (tmp_path / "o").exists() and no_temp_left(tmp_path)


def test_corrupt_help_has_examples():
    res = run("corrupt", "--help")
    assert res.exit_code == 0 and "Examples:" in res.output and "--severity 1-5" in res.output


def test_evaluate_with_corruptions_rows_plot_and_summary(trained_detector, test_images_folder, tmp_path):
    out = tmp_path / "run"
    res = run("evaluate", str(trained_detector), str(test_images_folder), "--corruption", "jpeg:1-2", "--corruption", "blur:5", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    corrupted = [(r["variant"], r["param"]) for r in rows if r["set"] == "corrupted"]
    assert corrupted == [("jpeg", "severity=1"), ("jpeg", "severity=2"), ("blur", "severity=5")]
    by = {(r["set"], r["variant"], r["param"]): r for r in rows}
    clean = by[("clean", "none", "")]
    blur5 = by[("corrupted", "blur", "severity=5")]
    assert all(r["n"] == 80 for r in rows if r["set"] == "corrupted")
    # sigma 1 px wipes out the one-pixel checkerboard the detector keys on
    assert blur5["accuracy"] < clean["accuracy"] - 0.2 and blur5["linf"] > 0
    worst = by[("worst-case", "none", "")]
    assert worst["accuracy"] <= min(r["accuracy"] for r in rows if r["set"] in ("clean", "corrupted"))
    assert (out / "plots" / "accuracy_vs_severity.png").is_file()
    info = json.loads((out / "run.json").read_text())
    summary = {e["corruption"]: e for e in info["corruption_summary"]}
    jpeg_mean = (by[("corrupted", "jpeg", "severity=1")]["accuracy"] + by[("corrupted", "jpeg", "severity=2")]["accuracy"]) / 2
    assert summary["jpeg"]["mean_accuracy"] == pytest.approx(jpeg_mean)
    assert summary["jpeg"]["drop"] == pytest.approx(clean["accuracy"] - jpeg_mean)
    assert summary["blur"]["severities"] == [5] and summary["all"]["worst_severity"] == "blur:5"
    md = (out / "metrics.md").read_text()
    assert "## Corruption summary" in md and "| blur | 5 |" in md and "JPEG Images (severity=2)" in md
    assert info["config"]["corruptions"] == ["jpeg:1", "jpeg:2", "blur:5"]


def test_evaluate_rejects_a_bad_corruption_before_loading_anything(tmp_path, test_images_folder):
    res = run("evaluate", str(tmp_path / "no-such-detector.yaml"), str(test_images_folder), "--corruption", "jpeg:9", "--out", str(tmp_path / "r"))
    assert_one_line_error(res, "--corruption jpeg:9", "outside 1..5")
    assert not (tmp_path / "r").exists()


def test_evaluate_with_noise_same_seed_same_tables(trained_detector, test_images_folder, tmp_path):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "5")):
        res = run("evaluate", str(trained_detector), str(test_images_folder), "--corruption", "noise:3", "--seed", seed, "--out", str(tmp_path / name), "-q")
        assert res.exit_code == 0, res.output
    for f in ("metrics.json", "metrics.md", "predictions.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    noise = [line for line in (tmp_path / "a" / "predictions.csv").read_text().splitlines() if ",noise," in line]
    other = [line for line in (tmp_path / "c" / "predictions.csv").read_text().splitlines() if ",noise," in line]
    assert len(noise) == 80 and noise != other  # another seed draws other noise
