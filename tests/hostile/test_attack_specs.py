"""Hostile attack specs through the CLI: exit 2, one line, the fix, no traceback."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import assert_one_line_error, run  # noqa: E402
from test_attacks import margin_images, save_detector  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    x, y = margin_images(3, seed=2)
    np.savez(root / "set.npz", x=x, y=y)
    return save_detector(root / "lin", "linear"), save_detector(root / "nd", "non_differentiable"), root / "set.npz"


@pytest.mark.parametrize(
    "attack, needle",
    [
        ("apgd:eps=8/255,queries=10", "unknown option 'queries'"),
        ("square:eps=8/255,steps=10", "unknown option 'steps'"),
        ("square:eps=8/255,queries=0", "outside 1.."),
        ("square:eps=8/255,queries=-5", "at least 1"),
        ("hsj:queries=many", "not a whole number"),
        ("apgd:eps=8/255,loss=foo", "unknown loss 'foo'"),
        ("pgd:eps=8/255,direction=sideways", "unknown direction 'sideways'"),
        ("apgd:eps=8/255,restarts=0", "outside 1.."),
        ("auto:steps=10", "no eps"),
        ("blackbox:eps=8/255", "unknown attack"),
        ("pgd:eps=8/255,eot=webp:50-90", "unknown transform 'webp'"),
        ("pgd:eps=8/255,eot=jpeg:0-95", "outside 1..100"),
        ("pgd:eps=8/255,eot=jpeg:50-101", "outside 1..100"),
        ("pgd:eps=8/255,eot=jpeg:50.5-90", "outside 1..100"),
        ("pgd:eps=8/255,eot=resize:0-1", "outside (0, 1]"),
        ("pgd:eps=8/255,eot=resize:0.5-1.5", "outside (0, 1]"),
        ("pgd:eps=8/255,eot=resize:0.9-0.5", "reversed range"),
        ("pgd:eps=8/255,eot=jpeg:50-90+jpeg:60", "given twice"),
        ("pgd:eps=8/255,eot=jpeg", "has no range"),
        ("pgd:eps=8/255,eot=jpeg:fine", "not a number"),
        ("pgd:eps=8/255,eot=jpeg:50-95,samples=0", "outside 1.."),
        ("pgd:eps=8/255,eot=jpeg:50-95,samples=-3", "at least 1"),
        ("pgd:eps=8/255,samples=8", "needs eot="),
        ("square:eps=8/255,eot=jpeg:50-95", "unknown option 'eot'"),
        ("pgd:eps=8/255,launder=gif:1-2", "unknown transform 'gif'"),
        ("fgsm:eps=8/255,launder=resize:2", "outside (0, 1]"),
    ],
)
def test_bad_attack_specs_exit_2_in_one_line(files, attack, needle):
    det, _, data = files
    result = run("evaluate", str(det), str(data), "--attack", attack, "--out", str(data.parent / "never"))
    assert_one_line_error(result, needle, attack)
    assert not (data.parent / "never").exists()


@pytest.mark.parametrize("attack", ["pgd:eps=8/255", "apgd:eps=8/255", "auto:eps=8/255"])
def test_white_box_on_a_detector_without_gradients_names_the_black_box_attacks(files, attack):
    _, nd, data = files
    result = run("evaluate", str(nd), str(data), "--attack", attack, "--out", str(data.parent / "never2"))
    assert_one_line_error(result, "not differentiable", "square", "hsj")
