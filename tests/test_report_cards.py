"""report.html leads with the answer (cards, chance marker, EER / TPR@1%FPR from the rows), every
set is plotted, the worst-case row says over how many images, lists get thumbnails; --json on
evaluate / attack / report; the policy printed once; progress lines off a terminal."""
from __future__ import annotations

import html
import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from robustlab.cli import main
from robustlab.reporting.tables import param_display


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def card(page: str, ident: str) -> str:
    """The text of one card (tags stripped, whitespace collapsed)."""
    m = re.search(rf'<div class="card[^"]*" id="card-{ident}">(.*?)</div>(?:<span class="chance"[^>]*>[^<]*</span>)?</div>', page, re.S)
    assert m, f"no card {ident}"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", m.group(0))).split())


@pytest.fixture(scope="module")
def wide_run(trained_detector: Path, test_images_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two FGSM eps on a stratified half, JPEG and blur at severities 1-5 (ten corrupted sets)."""
    out = tmp_path_factory.mktemp("cards") / "run"
    res = run("evaluate", trained_detector, test_images_folder, "--attack", "fgsm:eps=2/255,8/255", "--attack-fraction", "0.5", "--corruption", "jpeg:1-5", "--corruption", "blur:1-5", "--threshold", "0.7", "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def wide_copy(wide_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(wide_run, tmp_path / "run"))


def predictions(run_dir: Path):
    import pandas as pd

    return pd.read_csv(run_dir / "predictions.csv", keep_default_na=False, dtype={"param": str})


def test_cards_answer_the_deployment_questions(wide_run: Path) -> None:
    page = (wide_run / "report.html").read_text(encoding="utf-8")
    df = predictions(wide_run)
    adv = df[(df["set"] == "adversarial") & (df["label"] == 1)]
    caught = adv.groupby("param")["pred"].mean()
    worst_param = caught.idxmin()
    text = card(page, "fakes-caught")
    assert f"{100 * caught.min():.2f}%" in text and f"fgsm {param_display(worst_param)}:" in text
    n_fake = int((adv["param"] == worst_param).sum())
    assert f"{int(round(n_fake * (1 - caught.min())))} of {n_fake} fakes let through" in text
    clean_real = df[(df["set"] == "clean") & (df["label"] == 0)]
    assert f"{100 * clean_real['pred'].mean():.2f}%" in card(page, "real-flagged")
    assert f"of {len(clean_real)} real images" in card(page, "real-flagged")
    clean_row = next(r for r in json.loads((wide_run / "metrics.json").read_text())["rows"] if r["set"] == "clean")
    for name, field in (("eer", "eer"), ("tpr-at-fpr", "tpr_at_fpr_0.01")):  # the clean row's operating-point fields
        value = clean_row[field]
        assert ("n/a" if value is None else f"{100 * value:.2f}%") in card(page, name)
    assert page.index('id="card-fakes-caught"') < page.index("<h2>Summary</h2>")  # the answer first


def test_cards_use_the_rows_operating_point_fields_and_mark_chance(wide_copy: Path) -> None:
    metrics = json.loads((wide_copy / "metrics.json").read_text())
    clean = metrics["rows"][0]
    clean.update({"eer": 0.0625, "tpr_at_fpr_0.01": 0.8125, "tpr_at_fpr_0.01_ci": [0.7, 0.9], "balanced_accuracy": 0.5, "accuracy_ci": [0.45, 0.55]})
    (wide_copy / "metrics.json").write_text(json.dumps(metrics))
    assert run("report", wide_copy, "--format", "html", "-q").exit_code == 0
    page = (wide_copy / "report.html").read_text(encoding="utf-8")
    assert "6.25%" in card(page, "eer")
    assert "81.25%" in card(page, "tpr-at-fpr") and "70.00% to 90.00%" in card(page, "tpr-at-fpr")
    assert "at or below chance" in card(page, "clean-accuracy") and "45.00% to 55.00%" in card(page, "clean-accuracy")
    clean["balanced_accuracy"] = 0.9
    (wide_copy / "metrics.json").write_text(json.dumps(metrics))
    assert run("report", wide_copy, "--format", "html", "-q").exit_code == 0
    assert "at or below chance" not in card((wide_copy / "report.html").read_text(encoding="utf-8"), "clean-accuracy")


def test_worst_case_says_over_how_many_images(wide_run: Path) -> None:
    page = (wide_run / "report.html").read_text(encoding="utf-8")
    wc = next(r for r in json.loads((wide_run / "metrics.json").read_text())["rows"] if r["set"] == "worst-case")
    said = f"over {wc['n']} images; the attacks ran on 40 of them" if wc["n"] == 80 else f"over {wc['n']} of 80 images (the attacked subset)"
    assert said in card(page, "worst-case")
    assert page.count(said) == 2  # the card and the table row


def test_every_set_is_plotted_in_small_multiples(wide_run: Path) -> None:
    from robustlab.reporting.plots import ScoreSet, curve_panels

    df = predictions(wide_run)
    sets = [ScoreSet("clean", "none", "", np.zeros(1), np.zeros(1))]
    keys = [k for k in df[df["set"].isin(["adversarial", "corrupted"])][["set", "variant", "param"]].drop_duplicates().itertuples(index=False)]
    sets += [ScoreSet(s, v, p, np.zeros(1), np.zeros(1)) for s, v, p in keys]
    panels = curve_panels(sets)
    drawn = [m for _, members in panels for m in members if m.kind != "clean"]
    assert sorted(m.label for m in drawn) == sorted(m.label for m in sets[1:]) and len(drawn) == 12
    assert all(members[0].kind == "clean" for _, members in panels)
    assert [t for t, _ in panels] == ["attacks", "corruptions: jpeg", "corruptions: blur"]  # 10 corrupted sets > 8: one panel per variant
    with Image.open(wide_run / "plots" / "roc.png") as roc, Image.open(wide_run / "plots" / "confusion_clean.png") as one:
        assert roc.size[0] > 2.5 * one.size[0]  # three panels side by side
    for name in ("scores.png", "reliability.png", "per_class.png", "accuracy_vs_eps.png", "accuracy_vs_severity.png"):
        assert (wide_run / "plots" / name).is_file(), name
        assert f'alt="{name}"' in (wide_run / "report.html").read_text(encoding="utf-8")


def test_plot_labels_read_grey_levels() -> None:
    from robustlab.reporting.plots import ScoreSet, _grey_levels

    assert ScoreSet("adversarial", "fgsm", "eps=0.03137254901960784", np.zeros(1), np.zeros(1)).label == "fgsm eps=8/255"
    assert _grey_levels(8.0) == "8/255" and _grey_levels(2.55) == "0.01"


def test_reliability_bins_match_a_direct_count() -> None:
    from robustlab.reporting.plots import reliability_bins

    rng = np.random.default_rng(0)
    s = rng.random(500)
    y = (rng.random(500) < s).astype(int)
    conf, frac, count = reliability_bins(y, np.append(s[:-1], 1.0))
    assert count.sum() == 500 and count[-1] >= 1  # 1.0 falls in the last bin
    k = 3
    inside = (s[:-1] >= k / 15) & (s[:-1] < (k + 1) / 15)
    assert count[k] == inside.sum() and frac[k] == pytest.approx(y[:-1][inside].mean()) and conf[k] == pytest.approx(s[:-1][inside].mean())


def test_lists_have_thumbnails(wide_run: Path) -> None:
    page = (wide_run / "report.html").read_text(encoding="utf-8")
    index = json.loads((wide_run / "examples" / "index.json").read_text())
    df = predictions(wide_run)
    wrong = df[(df["set"] == "clean") & (df["label"] != df["pred"])]
    assert len(wrong), "the 0.7 threshold should leave some clean mistakes"
    table = page[page.index('id="misclassified"'):]
    table = table[: table.index("</table>")]
    assert table.count('<img class="thumb"') == min(len(wrong), 20)
    for th in index["thumbs"]:
        with Image.open(wide_run / "examples" / th["file"]) as im:
            assert max(im.size) <= 64
    flips = page[page.index('id="flipped"'):]
    assert '<img class="thumb"' in flips[: flips.index("</table>")]


def test_evaluate_json_and_the_policy_printed_once(trained_detector: Path, test_images_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "gate.yaml").write_text('rules:\n  - "clean.accuracy >= 0.5"\n  - "fgsm[eps=8/255].accuracy >= 0"\n', encoding="utf-8")
    (tmp_path / "suite.yaml").write_text('attacks: ["fgsm:eps=8/255"]\nattack_fraction: 0.25\npolicy: gate.yaml\n', encoding="utf-8")
    res = run("evaluate", trained_detector, test_images_folder, "--suite", tmp_path / "suite.yaml", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert res.stdout.count("PASS  clean.accuracy >= 0.5") == 1 and "## Policy" not in res.stdout
    assert "Original Images" in res.stdout
    assert "robustlab: policy passed: 2 of 2 rules" in res.stderr
    assert "## Policy" in (tmp_path / "a" / "metrics.md").read_text(encoding="utf-8")  # the file keeps it

    res = run("evaluate", trained_detector, test_images_folder, "--suite", tmp_path / "suite.yaml", "--out", tmp_path / "b", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "pass" and doc["run"] == str((tmp_path / "b").resolve())
    assert [r["set"] for r in doc["rows"]] == ["clean", "adversarial", "mixed", "worst-case"]
    assert doc["rows"] == json.loads((tmp_path / "b" / "metrics.json").read_text())["rows"]
    assert "PASS  clean.accuracy >= 0.5" in res.stderr


def test_report_and_attack_json(trained_detector: Path, test_images_folder: Path, wide_copy: Path, tmp_path: Path) -> None:
    (tmp_path / "strict.yaml").write_text('rules:\n  - "clean.accuracy >= 1.01"\n', encoding="utf-8")
    res = run("report", wide_copy, "--policy", tmp_path / "strict.yaml", "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "fail" and doc["policy"]["failed"] == 1 and len(doc["rows"]) == 16
    assert "FAIL  clean.accuracy >= 1.01" in res.stderr and "policy failed: 1 of 1 rules" in res.stderr

    res = run("attack", trained_detector, test_images_folder, "--fraction", "0.25", "--no-save-images", "--out", tmp_path / "atk", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["verdict"] is None and [r["set"] for r in doc["rows"]][:3] == ["clean", "adversarial", "mixed"]


def test_progress_lines_off_a_terminal_name_the_stage() -> None:
    from robustlab.progress import Progress, batch_progress, set_stage

    buf = io.StringIO()
    with Progress(100, "evaluating 100 images", stream=buf, interval=0.05) as p:
        set_stage("pgd eps=8/255, steps=10")
        p.update(40)
        time.sleep(0.3)  # one long step: the lines keep coming while it runs
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) >= 2 and all(line.startswith("robustlab: evaluating 100 images: 40/100 (40%) [pgd eps=8/255, steps=10], ") for line in lines)
    assert "s left" in lines[0]
    quiet = io.StringIO()
    with Progress(100, "x", stream=quiet) as p:  # the default interval: nothing within 10 s
        p.update(100)
    assert quiet.getvalue() == ""
    from types import SimpleNamespace

    from robustlab.progress import set_variant_stage

    buf = io.StringIO()
    with Progress(10, "evaluating 10 images", stream=buf, interval=0.05) as p:
        set_variant_stage(SimpleNamespace(variant="fgsm", param="eps=0.03137254901960784"))
        p.update(1)
        time.sleep(0.2)
    assert "[fgsm eps=8/255]" in buf.getvalue()
    set_stage("no progress running: ignored")
    batches = [(np.zeros(3), 0), (np.zeros(2), 1)]
    assert list(batch_progress(iter(batches), 5, "x", False)) == batches
