"""The library call behind `robustlab evaluate`, as a notebook user makes it."""
from __future__ import annotations

import json

import pytest

from robustlab.errors import RobustlabError
from robustlab.evaluation.pipeline import run_evaluation


def test_run_evaluation_composes_attacks_corruptions_threshold_and_policy(trained_detector, test_images_folder, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - clean.accuracy >= 0.5\n  - fgsm[eps=8/255].accuracy >= 0.999\n")
    messages: list[str] = []
    run = run_evaluation(
        str(trained_detector),
        str(test_images_folder),
        out=tmp_path / "run",
        attacks=["fgsm:eps=8/255"],
        corruptions=["jpeg:3"],
        attack_fraction="0.5",
        val=str(test_images_folder),
        allow_same_data=True,
        policy=policy,
        log=messages.append,
    )
    rows = {(r.set, r.variant): r for r in run.result.rows}
    assert {("clean", "none"), ("adversarial", "fgsm"), ("mixed", "fgsm"), ("corrupted", "jpeg"), ("worst-case", "none")} <= set(rows)
    assert rows[("adversarial", "fgsm")].n == 40  # half of 80, stratified
    assert rows[("adversarial", "fgsm")].accuracy < rows[("clean", "none")].accuracy
    assert any("threshold" in m and "picked" in m for m in messages)
    assert run.passed is False and (tmp_path / "run" / "junit.xml").is_file()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["attack_fraction"] == 0.5 and info["config"]["corruptions"] == ["jpeg:3"]


def test_run_evaluation_checks_cheap_things_before_loading(tmp_path):
    with pytest.raises(RobustlabError, match="unknown attack|pgdd"):
        run_evaluation(tmp_path / "missing.keras", tmp_path / "missing", attacks=["pgdd:eps=8/255"])
