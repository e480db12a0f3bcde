"""Hostile file names for ``robustlab corrupt`` (issue 12): two valid 255-byte names whose PNG copies
collide or would exceed the name limit, and a name that is not UTF-8. Each is handled (never a
crash): collisions resolved and long names shortened deterministically, odd names kept and listed
in run.json; the input files are unchanged."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import make_images, run, write_class_folder

from robustlab.corruptions.writer import NAME_MAX, _png_names
from robustlab.data import open_dataset


def snapshot(root: Path) -> dict[bytes, str]:
    """sha256 of every file under ``root`` (raw relative path bytes -> hex)."""
    out = {}
    for dirpath, _dirs, files in os.walk(os.fsencode(root)):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, os.fsencode(root))] = hashlib.sha256(fh.read()).hexdigest()
    return out


def out_names(folder: Path) -> list[bytes]:
    return sorted(os.path.relpath(os.path.join(d, f), os.fsencode(folder)) for d, _s, fs in os.walk(os.fsencode(folder)) for f in fs)


@pytest.fixture
def hostile_names(tmp_path: Path) -> Path:
    """A real/ fake/ tree plus ``x*251.jpg`` and ``x*251.png`` (255 bytes each, same stem),
    ``y*252.jp`` (255 bytes; ``.png`` would make 256) and a fake named ``\\xff\\xfeodd.png``."""
    from PIL import Image

    x, y = make_images(4, seed=2)
    root = write_class_folder(tmp_path / "data", x, y)
    Image.fromarray(x[0]).save(root / "real" / ("x" * 251 + ".jpg"), format="JPEG", quality=95)
    Image.fromarray(x[1]).save(root / "real" / ("x" * 251 + ".png"), format="PNG")
    Image.fromarray(x[2]).save(root / "real" / ("y" * 252 + ".jp"), format="PNG")
    Image.fromarray(x[3]).save(os.path.join(os.fsencode(root / "fake"), b"\xff\xfeodd.png"), format="PNG")
    return root


def test_colliding_long_and_odd_names_are_all_written(hostile_names, tmp_path):
    before = snapshot(hostile_names)
    n = len(open_dataset(hostile_names))
    out = tmp_path / "c"
    res = run("corrupt", str(hostile_names), "-c", "jpeg:2", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert snapshot(hostile_names) == before
    folder = out / "jpeg" / "severity-2"
    names = [p for p in out_names(folder)]
    assert len(names) == n  # one copy per input, none lost to a collision
    assert all(len(os.path.basename(p)) <= NAME_MAX for p in names)
    assert b"real/" + b"x" * 251 + b".png" in names  # the input already named .png keeps its name
    assert b"fake/\xff\xfeodd.png" in names  # odd bytes kept as they are
    assert len(open_dataset(folder)) == n  # the copies are a valid data set
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    renamed = info["renamed"]
    assert renamed["fake/\\xff\\xfeodd.png"] == "fake/\\xff\\xfeodd.png"
    assert renamed[f"real/{'x' * 251}.jpg"].startswith(f"real/{'x' * 200}") and "~" in renamed[f"real/{'x' * 251}.jpg"]
    assert renamed[f"real/{'y' * 252}.jp"].endswith(".png")


def test_the_same_inputs_get_the_same_names_in_any_order():
    paths = ["real/" + "x" * 251 + ".jpg", "real/" + "x" * 251 + ".png", "real/a.jpg", "real/a.png", "real/a.jpg.png", "real/" + "é" * 126 + ".jpeg"]
    names = _png_names(paths)
    assert dict(zip(paths, names)) == dict(zip(paths[::-1], _png_names(paths[::-1])))
    assert len({n.lower() for n in names}) == len(paths)
    assert all(len(os.fsencode(n.split("/")[-1])) <= NAME_MAX for n in names)
    assert names[2].startswith("real/a.jpg~") and names[3:5] == ["real/a.png", "real/a.jpg.png"]  # inputs keep their own names


def test_corrupting_the_hostile_tree_twice_gives_the_same_files(hostile_names, tmp_path):
    for name in ("a", "b"):
        assert run("corrupt", str(hostile_names), "-c", "blur:1", "--out", str(tmp_path / name), "-q").exit_code == 0
    a, b = (snapshot(tmp_path / name / "blur") for name in ("a", "b"))
    assert a == b
