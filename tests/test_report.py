"""`robustlab report` and `evaluate --suite/--policy/--baseline` end to end: real tiny detector, real
FGSM (ART) and JPEG variants, real run folders in tmp_path; exit codes 0 / 1 / 2 through Click."""
from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from robustlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustlab: error: "), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def evaluate_run(detector: Path, data: Path, out: Path, *, attacks=("fgsm:eps=8/255",), corruptions=("jpeg:3",), threshold=None) -> Path:
    from robustlab.attacks.variant import parse_attacks
    from robustlab.corruptions.variant import parse_corruptions
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import evaluate

    det = load_detector(detector)
    variants = parse_attacks(list(attacks)) + parse_corruptions(list(corruptions))
    res = evaluate(det, open_dataset(data), out=out, variants=variants, attack_fraction=0.5, threshold=threshold, batch_size=40)
    return Path(res.run_dir)


@pytest.fixture(scope="module")
def run_dir(trained_detector: Path, test_images_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: clean, FGSM 8/255 on a stratified half, JPEG severity 3 (80 images, 32x32)."""
    return evaluate_run(trained_detector, test_images_folder, tmp_path_factory.mktemp("runs") / "run")


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def rows_of(run: Path) -> list[dict]:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))["rows"]


def row(run: Path, kind: str, variant: str = "none") -> dict:
    return next(r for r in rows_of(run) if r["set"] == kind and r["variant"] == variant)


def write_policy(path: Path, *rules: str) -> Path:
    path.write_text("rules:\n" + "".join(f"  - {json.dumps(r)}\n" for r in rules), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- what evaluate leaves


def test_run_has_report_html_and_example_strip(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in html
    index = json.loads((run_dir / "examples" / "index.json").read_text(encoding="utf-8"))
    images = index["images"]
    n_files = len(list((run_dir / "examples").glob("*.png")))
    assert n_files == 2 * (1 + 2 + 1) and html.count('<img class="example"') == n_files  # the strip is in evaluate's page
    assert f"<code>{run_dir}</code>" in html and ".tmp-" not in html  # shows the final path, not the temporary one
    assert sorted(im["label"] for im in images) == [0, 1]  # one real, one fake
    preds = {(int(l.split(",")[0]), l.split(",")[4]): float(l.split(",")[6]) for l in (run_dir / "predictions.csv").read_text().splitlines()[1:]}
    for im in images:
        clean = np.asarray(Image.open(run_dir / "examples" / im["clean"]["file"]))
        assert clean.dtype == np.uint8 and clean.shape == (32, 32, 3)
        assert abs(im["clean"]["score"] - preds[(im["id"], "none")]) < 1e-6
        assert [v["variant"] for v in im["variants"]] == ["fgsm", "jpeg"]
        for v in im["variants"]:
            img = np.asarray(Image.open(run_dir / "examples" / v["file"]))
            assert img.shape == clean.shape and 0.0 <= v["score"] <= 1.0
            assert abs(v["score"] - preds[(im["id"], v["variant"])]) < 1e-6
            linf = int(np.abs(img.astype(int) - clean.astype(int)).max())
            assert linf == v["linf"]
        fgsm = im["variants"][0]
        assert 0 < fgsm["linf"] <= 8  # delivered within eps = 8 grey levels
        diff = np.asarray(Image.open(run_dir / "examples" / fgsm["perturbation"]))
        assert diff.shape == clean.shape and diff.min() < 128 < diff.max()  # magnified around mid grey
        assert "perturbation" not in im["variants"][1]


# --------------------------------------------------------------------------- robustlab report


def test_report_from_the_run_folder_alone(run_copy: Path) -> None:
    # the model is not needed: point run.json at a detector that does not exist
    info = json.loads((run_copy / "run.json").read_text())
    info["detector"]["spec_file"] = "/nonexistent/detector.yaml"
    info["config"]["detector"] = "/nonexistent/detector.yaml"
    (run_copy / "run.json").write_text(json.dumps(info))
    (run_copy / "report.html").unlink()
    res = run("report", run_copy)
    assert res.exit_code == 0, res.output
    for f in ("report.html", "metrics.md", "report.json"):
        assert (run_copy / f).is_file(), f
    assert not (run_copy / "junit.xml").exists()  # no policy, no junit
    html = (run_copy / "report.html").read_text(encoding="utf-8")
    imgs = re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)
    assert len(imgs) >= 8 and all(s.startswith("data:image/png;base64,") for s in imgs)  # self-contained
    assert html.count('<table class="metrics"') == 3  # FGSM table, corruptions, worst case
    for title in ("Original Images", "FGSM Adversarial Images (eps=8/255)", "(Original + Adversarial) Images", "JPEG Images (severity=3)"):
        assert title in html
    for plot in ("accuracy_vs_eps.png", "accuracy_vs_severity.png", "roc.png", "pr.png", "confusion_clean.png"):
        assert f'alt="{plot}"' in html
    doc = json.loads((run_copy / "report.json").read_text())
    assert doc["rows"] == rows_of(run_copy) and doc["policy"] is None and doc["baseline"] is None
    assert isinstance(doc["rows"][0]["accuracy"], float)


def test_report_rebuilds_missing_plots_from_predictions(run_copy: Path) -> None:
    shutil.rmtree(run_copy / "plots")
    res = run("report", run_copy, "--format", "html")
    assert res.exit_code == 0, res.output
    html = (run_copy / "report.html").read_text(encoding="utf-8")
    for plot in ("roc.png", "pr.png", "confusion_clean.png", "accuracy_vs_eps.png"):
        assert f'alt="{plot}"' in html
    assert not (run_copy / "plots").exists()  # drawn for the page, the run folder is left alone


def test_policy_pass_and_fail(run_copy: Path, tmp_path: Path) -> None:
    clean = row(run_copy, "clean")["accuracy"]
    fgsm = row(run_copy, "adversarial", "fgsm")["accuracy"]
    ok = write_policy(tmp_path / "ok.yaml", f"clean.accuracy >= {clean - 0.01:.4f}", "fgsm[eps=8/255].accuracy >= 0", "drop(jpeg[severity=3].accuracy) <= 1")
    res = run("report", run_copy, "--policy", ok)  # 0.01 below the value, inside its bootstrap interval
    assert res.exit_code == 1 and "INCONCLUSIVE  clean.accuracy" in res.stdout, res.output
    res = run("report", run_copy, "--policy", ok, "--inconclusive", "pass")
    assert res.exit_code == 0, res.output
    assert res.stdout.count("PASS  ") == 2 and res.stdout.count("INCONCLUSIVE  ") == 1
    root = ET.parse(run_copy / "junit.xml").getroot()
    assert root.get("tests") == "3" and root.get("failures") == "0"

    limit = round(row(run_copy, "adversarial", "fgsm")["accuracy_ci"][1] + 0.01, 4)  # above the whole interval
    bad = write_policy(tmp_path / "bad.yaml", "clean.accuracy >= 0", f"fgsm[eps=8/255].accuracy >= {limit}", "worst-case.accuracy >= 0")
    for _ in range(2):  # reporting twice does not pile up sections in metrics.md
        res = run("report", run_copy, "--policy", bad)
        assert res.exit_code == 1, res.output
    assert f"FAIL  fgsm[eps=8/255].accuracy >= {limit}" in res.stdout
    assert f"short by {limit - fgsm:.4f}" in res.stdout
    assert "policy failed: 1 of 3 rules" in res.stderr
    cases = ET.parse(run_copy / "junit.xml").getroot().findall("testsuite/testcase")
    assert [c.find("failure") is not None for c in cases] == [False, True, False]
    md = (run_copy / "metrics.md").read_text(encoding="utf-8")
    assert md.count("<!-- robustlab report -->") == 1 and "## Policy `bad.yaml`: FAILED (1 of 3 rules)" in md
    assert "FAILED: 1 of 3 rules" in (run_copy / "report.html").read_text(encoding="utf-8")
    assert json.loads((run_copy / "report.json").read_text())["policy"]["failed"] == 1


def test_rule_naming_a_missing_row_fails(run_copy: Path, tmp_path: Path) -> None:
    pol = write_policy(tmp_path / "p.yaml", "clean.accuracy >= 0", "pgd[eps=8/255].accuracy >= 0", "fgsm[eps=2/255].accuracy >= 0")
    res = run("report", run_copy, "--policy", pol, "--format", "junit")
    assert res.exit_code == 1, res.output
    assert "FAIL  pgd[eps=8/255].accuracy >= 0: no row pgd[eps=8/255] in this run" in res.stdout
    assert "FAIL  fgsm[eps=2/255].accuracy >= 0: no row fgsm[eps=2/255]" in res.stdout
    assert "policy failed: 2 of 3 rules" in res.stderr


def test_policy_syntax_error_is_exit_2_with_line_and_column(run_copy: Path, tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("rules:\n  - clean.accuracy >= 0.9\n  - drop(jpeg[severity=3].f1 <= 0.05\n", encoding="utf-8")
    assert_one_line_error(run("report", run_copy, "--policy", pol), "p.yaml: line 3, column 30", "expected ')'")
    assert not (run_copy / "junit.xml").exists()


@pytest.mark.parametrize("damage, words", [
    ("predictions", "incomplete run folder: missing predictions.csv"),
    ("run_json", "incomplete run folder: missing run.json"),
    ("not_complete", "does not mark the run complete"),
    ("interrupted", "left by a run that is still going or was interrupted"),
    ("metrics", "unreadable run files"),
], ids=["no-predictions", "no-run-json", "not-complete", "interrupted", "bad-metrics"])
def test_incomplete_run_folder_is_exit_2(run_copy: Path, damage: str, words: str) -> None:
    target = run_copy
    if damage == "predictions":
        (run_copy / "predictions.csv").unlink()
    elif damage == "run_json":
        (run_copy / "run.json").unlink()
    elif damage == "not_complete":
        info = json.loads((run_copy / "run.json").read_text())
        info["complete"] = False
        (run_copy / "run.json").write_text(json.dumps(info))
    elif damage == "interrupted":  # what an interrupted evaluate leaves: only the hidden temporary folder
        (run_copy / "run.json").unlink()
        run_copy.rename(run_copy.parent / f".{run_copy.name}.tmp-4242-abcd")
    elif damage == "metrics":
        (run_copy / "metrics.json").write_text('{"rows": [', encoding="utf-8")
    assert_one_line_error(run("report", target), words)


def test_format_errors_are_exit_2(run_copy: Path, tmp_path: Path) -> None:
    assert_one_line_error(run("report", run_copy, "--format", "html,pdf"), "unknown report format 'pdf'")
    assert_one_line_error(run("report", run_copy, "--format", "junit"), "junit format needs a policy")
    reg = write_policy(tmp_path / "r.yaml", "regression(*.auc) <= 0.01")
    assert_one_line_error(run("report", run_copy, "--policy", reg), "need a baseline run")


# --------------------------------------------------------------------------- baselines


@pytest.fixture(scope="module")
def strict_run(trained_detector: Path, test_images_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same suite and data at threshold 0.99: fewer images called fake, so accuracy drops."""
    return evaluate_run(trained_detector, test_images_folder, tmp_path_factory.mktemp("runs") / "strict", threshold=0.99)


def test_baseline_identical_run_has_no_regressions(run_dir: Path, tmp_path: Path) -> None:
    reg = write_policy(tmp_path / "r.yaml", "regression(*.auc) <= 0", "regression(*.accuracy) <= 0")
    out = tmp_path / "reports"
    res = run("report", run_dir, "--baseline", run_dir, "--policy", reg, "--out", out)
    assert res.exit_code == 0, res.output
    assert "no row worse" in res.stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["baseline"]["regressed"] == 0 and all(m["delta"] in (0.0, None) for r in doc["baseline"]["rows"] for m in r["metrics"].values())
    assert not (run_dir / "report.json").exists()  # --out: the run folder is left alone


def test_regression_against_baseline_fails_and_is_marked(run_dir: Path, strict_run: Path, tmp_path: Path) -> None:
    base_acc, acc = row(run_dir, "clean")["accuracy"], row(strict_run, "clean")["accuracy"]
    assert acc < base_acc, "threshold 0.99 should cost the tiny detector clean accuracy"
    reg = write_policy(tmp_path / "r.yaml", "regression(clean.accuracy) <= 0", "regression(*.auc) <= 0.0001")
    out = tmp_path / "reports"
    res = run("report", strict_run, "--baseline", run_dir, "--policy", reg, "--out", out)
    assert res.exit_code == 1, res.output
    assert f"regression(clean.accuracy) = {base_acc - acc:.4f}, needs <= 0.0000 (over by {base_acc - acc:.4f})" in res.stdout
    assert "PASS  regression(*.auc)" in res.stdout  # AUC does not depend on the threshold
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<tr class="regressed"><td>Original Images</td>' in html and "&#9660;" in html
    md = (out / "metrics.md").read_text(encoding="utf-8")
    assert re.search(r"\| Original Images \| [0-9.]+ \(-[0-9.]+\) 🔴", md)


def test_baseline_with_different_sets_is_exit_2(run_dir: Path, trained_detector: Path, test_images_folder: Path, tmp_path: Path) -> None:
    other = evaluate_run(trained_detector, test_images_folder, tmp_path / "jpeg-only", attacks=())
    assert_one_line_error(run("report", run_dir, "--baseline", other), "baseline has different sets", "only in this run: fgsm[eps=0.0314]")
    assert_one_line_error(run("report", run_dir, "--baseline", tmp_path / "nope"), "no such run folder")


# --------------------------------------------------------------------------- escaping


def test_user_strings_are_escaped_in_html(run_copy: Path) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    info = json.loads((run_copy / "run.json").read_text())
    info["detector"]["name"] = evil
    info["data"]["root"] = f"/data/{evil}"
    info["diagnostics"] = [evil]
    info["command"] = ["robustlab", "evaluate", evil]
    (run_copy / "run.json").write_text(json.dumps(info))
    lines = (run_copy / "predictions.csv").read_text().splitlines()
    first = lines[1].split(",")
    first[1] = '"fake/<b onmouseover=alert(1)>x.png"'
    lines[1] = ",".join(first)
    (run_copy / "predictions.csv").write_text("\n".join(lines) + "\n")
    assert run("report", run_copy, "--format", "html").exit_code == 0
    html = (run_copy / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html and "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
    assert "<b onmouseover" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


# --------------------------------------------------------------------------- suites and evaluate


def test_ready_configs_parse() -> None:
    from robustlab.evaluation.suites import load_suite
    from robustlab.reporting.policy import load_policy

    suites = sorted((ROOT / "configs" / "suites").glob("*.yaml"))
    assert {p.stem for p in suites} >= {"ci-quick", "nightly"}
    for p in suites:
        s = load_suite(p)
        variants = s.variants()
        assert variants and s.policy is not None and s.policy.is_file()
        assert any(str(v.kind) == "adversarial" for v in variants) and any(str(v.kind) == "corrupted" for v in variants)
        load_policy(s.policy)
    for p in sorted((ROOT / "configs" / "policies").glob("*.yaml")):
        assert load_policy(p).rules


@pytest.mark.parametrize("text, words", [
    ("attacks: [fgsm:eps=8/255]\nsteps: 3\n", "line 2: unknown key 'steps'"),
    ("attacks:\n  - fgsm:eps=8/255\n  - fgsm:eps=2\n", "line 3"),
    ("corruptions:\n  - snow:3\n", "line 2"),
    ("attacks: [fgsm:eps=8/255]\nattack_fraction: 1.5\n", "not a number in (0, 1]"),
    ("attacks: [fgsm:eps=8/255]\npolicy: missing.yaml\n", "policy file 'missing.yaml' not found"),
    ("name: empty\n", "runs nothing"),
], ids=["unknown-key", "bad-attack", "bad-corruption", "fraction", "policy-missing", "empty"])
def test_bad_suites(tmp_path: Path, text: str, words: str) -> None:
    from robustlab.errors import RobustlabError
    from robustlab.evaluation.suites import load_suite

    p = tmp_path / "s.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(RobustlabError) as err:
        load_suite(p).variants()
    assert words in err.value.one_line()


def test_evaluate_with_a_suite_gates_on_its_policy(trained_detector: Path, test_images_folder: Path, tmp_path: Path) -> None:
    write_policy(tmp_path / "gate.yaml", "clean.accuracy >= 0.5", "fgsm[eps=8/255].accuracy >= 1.01", "drop(jpeg[severity=3].accuracy) <= 1")
    suite = tmp_path / "suite.yaml"
    suite.write_text('attacks: ["fgsm:eps=8/255"]\ncorruptions: ["jpeg:3"]\nattack_fraction: 0.25\npolicy: gate.yaml\n', encoding="utf-8")
    out = tmp_path / "run"
    res = run("evaluate", trained_detector, test_images_folder, "--suite", suite, "--out", out, "--format", "html,md,junit", "-q")
    assert res.exit_code == 1, res.output
    assert "FAIL  fgsm[eps=8/255].accuracy >= 1.01" in res.stdout and "policy failed: 1 of 3 rules" in res.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["attack_fraction"] == 0.25 and info["attacked"] == 20
    assert info["config"]["suite"]["attacks"] == ["fgsm:eps=8/255"]
    assert [(r["set"], r["variant"]) for r in rows_of(out)] == [("clean", "none"), ("adversarial", "fgsm"), ("mixed", "fgsm"), ("corrupted", "jpeg"), ("worst-case", "none")]
    assert len(ET.parse(out / "junit.xml").getroot().findall("testsuite/testcase")) == 3
    assert not (out / "report.json").exists()  # not in --format
    assert "FAILED: 1 of 3 rules" in (out / "report.html").read_text(encoding="utf-8")


def test_evaluate_refuses_bad_policy_and_baseline_before_running(trained_detector: Path, test_images_folder: Path, run_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - clean.accuracy >> 0.9\n", encoding="utf-8")
    out = tmp_path / "run"
    assert_one_line_error(run("evaluate", trained_detector, test_images_folder, "--policy", bad, "--out", out), "line 2, column 21")
    other_data = tmp_path / "other"
    shutil.copytree(test_images_folder, other_data)
    next((other_data / "fake").iterdir()).unlink()
    assert_one_line_error(run("evaluate", trained_detector, other_data, "--baseline", run_dir, "--out", out), "different data set")
    assert not out.exists()


def test_a_page_that_cannot_be_rendered_does_not_cost_the_run(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from robustlab.reporting.publish import write_run_html

    info = json.loads((run_copy / "run.json").read_text())
    (run_copy / "report.html").unlink()
    (run_copy / "predictions.csv").write_text("id,path\n1,x\n", encoding="utf-8")  # lacks columns
    assert write_run_html(run_copy, info) is None
    assert not (run_copy / "report.html").exists()
    err = capsys.readouterr().err
    assert "report.html not written" in err and "robustlab report" in err


def test_readme_examples_are_valid(tmp_path: Path) -> None:
    """The README's policy and suite examples load; its CI snippets are valid YAML."""
    import yaml

    from robustlab.evaluation.suites import load_suite
    from robustlab.reporting.policy import load_policy

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Reports, policies and CI") : readme.index("## Command reference")]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) >= 5
    (tmp_path / "p.yaml").write_text(blocks[0], encoding="utf-8")
    assert len(load_policy(tmp_path / "p.yaml").rules) == 6
    suite = tmp_path / "suites" / "s.yaml"
    suite.parent.mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "ci-quick.yaml").write_text(blocks[0], encoding="utf-8")
    suite.write_text(blocks[1], encoding="utf-8")
    assert len(load_suite(suite).variants()) == 6
    workflow = yaml.safe_load(blocks[2])
    steps = workflow["jobs"]["robustness"]["steps"]
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") for s in steps)
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    assert isinstance(yaml.safe_load(blocks[3]), list)
    gitlab = yaml.safe_load(blocks[4])["robustness"]
    assert gitlab["artifacts"]["reports"]["junit"].endswith("junit.xml")
