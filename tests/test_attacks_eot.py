"""Attacks that survive laundering: EOT over a JPEG + resize chain, and "attack then launder" rows.

``checker`` is a tiny real Keras model whose score reads two things: the mean pixel (as the
``linear`` detector of test_attacks.py) and, three times as strongly, a 2x2 checkerboard pattern.
Plain PGD's sign gradient is then the checkerboard, which a resize round trip erases; the gradient
averaged over resized copies (EOT) is the mean-brightness direction, which survives laundering.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_attacks import SIZE, SPEC  # noqa: E402

CHAIN = "jpeg:70-95+resize:0.5-0.6"


def smooth_images(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (2n, 16, 16, 3) lightly textured grey images; fakes 3-6 levels above mid-grey, real ones below."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            tex = rng.uniform(-6, 6, (SIZE // 4, SIZE // 4, 3)).repeat(4, 0).repeat(4, 1)  # low-frequency texture
            tex -= tex.mean()
            offset = rng.uniform(3.5, 6.0) * (1 if label else -1)
            xs.append(np.clip(np.rint(127.5 + offset + tex), 0, 255).astype(np.uint8))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64)


def save_checker(root: Path) -> Path:
    import keras
    from keras import layers

    root.mkdir(parents=True, exist_ok=True)
    inp = keras.Input((SIZE, SIZE, 3))
    conv = layers.Conv2D(1, 2, strides=2, use_bias=False)
    dense = layers.Dense(1, activation="sigmoid")
    model = keras.Model(inp, dense(layers.GlobalAveragePooling2D()(conv(inp))))
    board = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)
    kernel = (0.25 * (np.ones((2, 2)) + 3.0 * board) / 3.0)[:, :, None, None] * np.ones((1, 1, 3, 1))
    conv.set_weights([kernel.astype(np.float32)])
    dense.set_weights([np.array([[200.0]], np.float32), np.array([-100.0], np.float32)])
    model.save(root / "model.keras")
    (root / "detector.yaml").write_text(SPEC.format(name="checker", output="output: sigmoid\nclasses: [fake]\n"), encoding="utf-8")
    return root / "detector.yaml"


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    from robustlab.detector.loading import load_detector

    return load_detector(save_checker(tmp_path_factory.mktemp("checker")))


@pytest.fixture(scope="module")
def smooth():
    return smooth_images(6, seed=5)


def test_eot_and_launder_options_parse_into_rows():
    from robustlab.attacks.variant import LaunderedVariant, parse_attack

    plain, laundered = parse_attack(f"pgd:eps=8/255,eot={CHAIN},samples=4,launder=jpeg:50-95+resize:0.5-1.0")
    assert plain.variant == laundered.variant == "pgd"
    assert plain.param == "eps=0.0314,steps=10,eot=jpeg:70-95+resize:0.5-0.6,samples=4"
    assert laundered.param == plain.param + ",laundered=jpeg:50-95+resize:0.5-1"
    assert isinstance(laundered, LaunderedVariant) and laundered.attack == plain
    assert plain.spec.eot.samples == 4
    (default,) = parse_attack(f"apgd:eps=8/255,eot={CHAIN}")
    assert default.spec.eot.samples == 8
    (fgsm,) = parse_attack("fgsm:eps=4/255,eot=resize:0.5")
    assert fgsm.param == "eps=0.0157,eot=resize:0.5,samples=8"


def test_laundering_is_the_real_pillow_chain_and_seeded(smooth):
    from robustlab.attacks.eot import parse_chain
    from robustlab.corruptions.functions import jpeg_roundtrip, resize_roundtrip

    x, _ = smooth
    chain = parse_chain("jpeg:60+resize:0.5")
    out = chain.launder(x, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert np.array_equal(out[0], resize_roundtrip(jpeg_roundtrip(x[0], 60), 0.5))
    ranged = parse_chain(CHAIN)
    a = ranged.launder(x, np.random.default_rng(1))
    assert np.array_equal(a, ranged.launder(x, np.random.default_rng(1)))
    assert not np.array_equal(a, x)


def test_the_eot_gradient_is_the_mean_over_draws_and_jpeg_is_straight_through(checker, smooth):
    import tensorflow as tf

    from robustlab.attacks.eot import parse_chain

    x, _ = smooth
    x01 = tf.constant(x[:2].astype(np.float32) / 255.0)
    chain = parse_chain("jpeg:50")
    params = chain.draw_tf(np.random.default_rng(0), 2)
    with tf.GradientTape() as tape:
        tape.watch(x01)
        z = chain.tf_apply(x01, params)
        loss = tf.reduce_sum(z * 2.0)
    g = tape.gradient(loss, x01)
    assert np.allclose(g.numpy(), 2.0)  # backward pass: the identity
    from robustlab.corruptions.functions import jpeg_roundtrip

    assert np.array_equal(np.rint(z.numpy()[0] * 255).astype(np.uint8), jpeg_roundtrip(x[0], 50))  # forward: the real round trip


def test_eot_pgd_survives_laundering_where_plain_pgd_does_not(checker, smooth):
    from robustlab.attacks.eot import parse_chain
    from robustlab.attacks.variant import parse_attack
    from robustlab.metrics import predict

    x, y = smooth
    assert (predict(checker.scores(x), 0.5) == y).all()
    launder = parse_chain(CHAIN)
    accuracy = {}
    for name, text in (("plain", "pgd:eps=8/255,steps=10"), ("eot", f"pgd:eps=8/255,steps=10,eot={CHAIN},samples=6")):
        (attack,) = parse_attack(text)
        delivered = attack.apply(checker, x, y, np.random.default_rng(0)).images
        assert np.abs(delivered.astype(int) - x).max() <= 8
        laundered = launder.launder(delivered, np.random.default_rng(1))
        accuracy[name] = float(np.mean(predict(checker.scores(laundered), 0.5) == y))
    assert accuracy["eot"] <= accuracy["plain"] - 0.5, accuracy  # plain PGD's checkerboard is erased; EOT's shift is not


def test_same_seed_same_bytes_with_eot(checker, smooth):
    from robustlab.attacks.variant import parse_attack

    x, y = smooth
    (attack,) = parse_attack(f"pgd:eps=8/255,steps=3,eot={CHAIN},samples=2")
    a = attack.apply(checker, x, y, np.random.default_rng(7)).images
    b = attack.apply(checker, x, y, np.random.default_rng(7)).images
    assert np.array_equal(a, b)
    (plain,) = parse_attack("pgd:eps=8/255,steps=3")
    assert not np.array_equal(a, plain.apply(checker, x, y, np.random.default_rng(7)).images)  # the gradient did change


def test_evaluate_gives_delivered_and_laundered_rows(tmp_path, smooth):
    from conftest import run

    det = save_checker(tmp_path / "det")
    x, y = smooth
    np.savez(tmp_path / "set.npz", x=x, y=y)
    out = tmp_path / "run"
    result = run("evaluate", str(det), str(tmp_path / "set.npz"), "--attack", f"pgd:eps=8/255,launder={CHAIN}", "--attack", f"pgd:eps=8/255,eot={CHAIN},samples=4,launder={CHAIN}", "--out", str(out))
    assert result.exit_code == 0, result.output
    import json

    rows = {(r["set"], r["param"]): r for r in json.loads((out / "metrics.json").read_text())["rows"]}
    plain = rows[("adversarial", "eps=0.0314,steps=10")]
    plain_l = rows[("adversarial", "eps=0.0314,steps=10,laundered=jpeg:70-95+resize:0.5-0.6")]
    eot_l = rows[("adversarial", "eps=0.0314,steps=10,eot=jpeg:70-95+resize:0.5-0.6,samples=4,laundered=jpeg:70-95+resize:0.5-0.6")]
    assert plain["accuracy"] < plain_l["accuracy"]  # laundering undoes plain PGD here
    assert eot_l["accuracy"] < plain_l["accuracy"]
    run_json = json.loads((out / "run.json").read_text())
    assert any("success_before_laundering" in a for a in run_json["attacks"])
