"""report.html in a real headless Chromium (Debian's ``chromium``), loaded from disk.

A run is made through the CLI with a detector whose name is a script tag and an image whose file
name is an HTML tag; ``robustlab report`` adds a policy and a baseline table. A small probe script
(allowed by adding its hash to the report's Content-Security-Policy, nothing else relaxed) counts
what the browser rendered: tables with a size on screen, images decoded from their data: URIs, and
no element the user's strings could have injected. A second, unhashed script checks that the
report's CSP blocks scripts.

Skipped when no Chromium is installed, except with ROBUSTLAB_REQUIRE_BROWSER=1 (CI sets it after
``apt-get install chromium``), where a missing browser fails the test.
"""
from __future__ import annotations

import base64
import hashlib
import html as htmllib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from robustlab.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
EVIL_NAME = '<script>alert("name")</script> & "quoted"'
EVIL_FILE = "<img src=x onerror=alert(1)>.png"

PROBE = """window.addEventListener('load', function () {
  function shown(e) { var b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; }
  var imgs = Array.prototype.slice.call(document.images);
  var tables = Array.prototype.slice.call(document.querySelectorAll('table'));
  var r = {
    images: imgs.length,
    decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    shown_images: imgs.filter(shown).length,
    data_images: imgs.filter(function (i) { return i.src.indexOf('data:image/png;base64,') === 0; }).length,
    example_images: document.querySelectorAll('table.examples img').length,
    plot_images: document.querySelectorAll('img.plot').length,
    plot_names: Array.prototype.map.call(document.querySelectorAll('img.plot'), function (i) { return i.alt; }),
    cards: document.querySelectorAll('.cards .card').length,
    shown_cards: Array.prototype.filter.call(document.querySelectorAll('.cards .card'), shown).length,
    first_card_above_summary: document.querySelector('.cards').getBoundingClientRect().top < document.querySelector('h2').getBoundingClientRect().top,
    thumbs: document.querySelectorAll('table.images img.thumb').length,
    tables: tables.length,
    shown_tables: tables.filter(shown).length,
    metrics_rows: document.querySelectorAll('table.metrics tr').length,
    policy_rows: document.querySelectorAll('table.policy tr').length,
    baseline_rows: document.querySelectorAll('table.baseline tr').length,
    scripts: document.scripts.length,
    handlers: document.querySelectorAll('[onerror],[onload],[onmouseover],[onclick]').length,
    h1: document.querySelector('h1').textContent,
    body_text: document.body.textContent,
    title: document.title
  };
  var pre = document.createElement('pre');
  pre.id = 'robustlab-probe';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});"""
CANARY = "document.title = 'csp-did-not-block';"


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("ROBUSTLAB_REQUIRE_BROWSER", "").strip() in ("1", "true", "yes"):
        pytest.fail("ROBUSTLAB_REQUIRE_BROWSER=1 but no Chromium found (apt-get install -y chromium)")
    pytest.skip("no Chromium on this machine (apt-get install chromium; CI requires it)")


def chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,3000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def with_probe(report: str) -> str:
    """The report's bytes plus the probe (its hash added to the CSP) and an unhashed canary script."""
    digest = base64.b64encode(hashlib.sha256(PROBE.encode("utf-8")).digest()).decode("ascii")
    assert report.count("default-src 'none';") == 1
    page = report.replace("default-src 'none';", f"default-src 'none'; script-src 'sha256-{digest}';", 1)
    return page.replace("</body>", f"<script>{PROBE}</script><script>{CANARY}</script></body>", 1)


@pytest.fixture(scope="module")
def browser() -> str:
    return find_browser()


@pytest.fixture(scope="module")
def report_dir(trained_detector: Path, test_images_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """evaluate (CLI, a suite with FGSM and JPEG) then report with a policy and a baseline."""
    # ART binds a logging handler to the sys.stderr of the moment it is imported; imported inside
    # CliRunner, that is the runner's stream, closed afterwards. Import it here first.
    import art  # noqa: F401

    tmp = tmp_path_factory.mktemp("browser")
    det_dir = tmp / "detector"
    det_dir.mkdir()
    shutil.copy(trained_detector.parent / "model.keras", det_dir / "model.keras")
    spec = trained_detector.read_text(encoding="utf-8").replace("name: tiny-cnn", f"name: {json.dumps(EVIL_NAME)}")
    (det_dir / "detector.yaml").write_text(spec, encoding="utf-8")
    data = tmp / "data"
    for cls in ("real", "fake"):
        files = sorted((test_images_folder / cls).glob("*.png"))[:10]
        (data / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, data / cls / f.name)
    first_fake = sorted((data / "fake").iterdir())[0]
    first_fake.rename(data / "fake" / EVIL_FILE)  # sorts first: the example strip shows it
    (tmp / "policy.yaml").write_text('rules:\n  - clean.accuracy >= 0.5\n  - "fgsm[eps=8/255].accuracy >= 1.01"\n', encoding="utf-8")
    (tmp / "suite.yaml").write_text('attacks: ["fgsm:eps=8/255"]\ncorruptions: ["jpeg:3"]\nattack_fraction: 1.0\n', encoding="utf-8")
    run = tmp / "run"
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", str(det_dir / "detector.yaml"), str(data), "--suite", str(tmp / "suite.yaml"), "--out", str(run), "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = tmp / "reports"
    res = runner.invoke(main, ["report", str(run), "--policy", str(tmp / "policy.yaml"), "--baseline", str(run), "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 1, res.output  # the 1.01 rule fails
    shutil.copytree(run / "examples", out / "examples-not-needed")  # nothing is read from beside the page
    return out


def test_report_renders_in_chromium(browser: str, report_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "page" / "report.html"  # alone in its folder: nothing beside it to load
    page.parent.mkdir()
    page.write_text(with_probe((report_dir / "report.html").read_text(encoding="utf-8")), encoding="utf-8")
    res = chromium(browser, tmp_path, "--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="robustlab-probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the probe did not run: {res.stdout[:500]} {res.stderr[-1000:]}"
    r = json.loads(htmllib.unescape(m.group(1)))
    # tables: the FGSM table, corruptions, worst case, policy, baseline, confusion counts, examples...
    assert r["tables"] >= 8 and r["shown_tables"] == r["tables"]
    assert r["metrics_rows"] >= 1 + 3 + 1 + 2 + 1 + 1  # header + rows of each results table
    assert r["policy_rows"] == 3 and r["baseline_rows"] == 2 + 5  # clean, fgsm, mixed, jpeg, worst case
    # images: every one decoded from a data: URI and laid out with a size
    assert r["images"] >= 10 and r["decoded"] == r["images"] == r["shown_images"] == r["data_images"]
    assert r["example_images"] >= 2 * (1 + 2 + 1)  # clean, fgsm, its perturbation, jpeg for two images
    assert r["plot_images"] >= 4
    for name in ("roc.png", "pr.png", "scores.png", "per_class.png", "reliability.png", "accuracy_vs_eps.png", "accuracy_vs_severity.png"):
        assert name in r["plot_names"], name
    # the answer first: fakes caught, real flagged, clean accuracy, EER, TPR@1%FPR, lowest adversarial / corrupted, worst case
    assert r["cards"] == 8 and r["shown_cards"] == 8 and r["first_card_above_summary"]
    assert r["thumbs"] >= 1  # the flipped / misclassified lists have thumbnails
    # user strings came through as text, not markup; the CSP blocked the unhashed script
    assert r["scripts"] == 2 and r["handlers"] == 0
    assert EVIL_NAME in r["h1"] and EVIL_NAME in r["title"] and r["title"] != "csp-did-not-block"
    assert EVIL_FILE in r["body_text"]


def test_report_screenshot_shows_content(browser: str, report_dir: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    res = chromium(browser, tmp_path, "--hide-scrollbars", f"--screenshot={shot}", (report_dir / "report.html").as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] >= 1000 and img.shape[1] == 1280
    colors = len(np.unique(img.reshape(-1, 3)[:: 7], axis=0))
    assert colors > 200  # text, tables, plots and photos, not a blank or error page
