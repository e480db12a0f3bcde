"""`robustlab demo` builds its data set and detector offline and evaluates them."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.demo import generator_upsample, make_images


def test_generated_images_carry_a_periodic_trace():
    x, y = make_images(20, size=64, seed=0)
    assert x.dtype == np.uint8 and x.shape == (40, 64, 64, 3)
    # energy at the Nyquist frequency (the checkerboard of stride-2 upsampling) is higher for fakes
    def nyquist(img):
        g = img.astype(np.float64).mean(axis=2)
        f = np.abs(np.fft.fft2(g - g.mean()))
        return f[32, :].sum() + f[:, 32].sum()

    fake = np.mean([nyquist(i) for i in x[y == 1]])
    real = np.mean([nyquist(i) for i in x[y == 0]])
    assert fake > 1.25 * real  # measured ~1.4x with the default taps; ~1.0x without the trace
    rng = np.random.default_rng(0)
    out = generator_upsample(x[0], rng)
    assert out.shape == x[0].shape and out.dtype == np.uint8


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--n-train", "60", "--n-test", "20", "--epochs", "2", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (out / "detector" / "model.keras").is_file() and (out / "detector" / "detector.yaml").is_file()
    for split in ("train", "val", "test"):
        assert len(list((out / "data" / split / "fake").glob("*.png"))) > 0
    info = json.loads((out / "run" / "run.json").read_text())
    assert info["complete"] and info["data"]["n"] == 40
    assert "| Original Images |" in res.output
    # a second run replaces the previous demo; a foreign folder is refused
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--n-train", "20", "--n-test", "10", "--epochs", "1", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "x.txt").write_text("keep")
    res = CliRunner().invoke(main, ["demo", "--out", str(foreign), "-q"])
    assert res.exit_code == 2 and "not a robustlab demo folder" in res.output
    assert (foreign / "x.txt").read_text() == "keep"
