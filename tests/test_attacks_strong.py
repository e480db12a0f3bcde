"""The strong attacks: APGD (ce / margin, L-inf / L2), Square (scores only), HopSkipJump
(decisions only), the ``auto`` cascade and threat directions, on the tiny real detectors of
``tests/test_attacks.py`` (``linear``: images 3 to 7.6 grey levels from the boundary)."""
from __future__ import annotations

import numpy as np
import pytest
from test_attacks import margin_images, save_detector

from robustlab.errors import RobustlabError


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    from robustlab.detector.loading import load_detector

    return load_detector(save_detector(tmp_path_factory.mktemp("linear"), "linear"))


@pytest.fixture(scope="module")
def no_gradient(tmp_path_factory):
    """The linear rule behind a Discretization layer with 64 buckets: scores without any gradient."""
    import keras
    from keras import layers

    from robustlab.detector.loading import load_detector

    root = tmp_path_factory.mktemp("nograd")
    inp = keras.Input((16, 16, 3))
    pooled = layers.GlobalAveragePooling2D()(inp)
    mean = layers.Dense(1, use_bias=False)(pooled)
    bounds = list(np.linspace(0.45, 0.55, 63))
    buckets = layers.Discretization(bin_boundaries=bounds, output_mode="one_hot")(mean)
    out = layers.Dense(1, activation="sigmoid")(buckets)
    model = keras.Model(inp, out)
    model.layers[2].set_weights([np.full((3, 1), 1 / 3, np.float32)])
    centres = np.concatenate([[0.449], (np.array(bounds[:-1]) + np.array(bounds[1:])) / 2, [0.551]])
    model.layers[-1].set_weights([(200.0 * (centres - 0.5)).reshape(-1, 1).astype(np.float32), np.zeros(1, np.float32)])
    model.save(root / "model.keras")
    (root / "detector.yaml").write_text("name: nograd\nmodel: model.keras\nscale: '0-1'\ncolor: rgb\noutput: sigmoid\nclasses: [fake]\nthreshold: 0.5\n", encoding="utf-8")
    return load_detector(root / "detector.yaml")


@pytest.fixture(scope="module")
def images():
    return margin_images(6, seed=3)


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    from robustlab.data import open_dataset

    x, y = margin_images(8, seed=4)
    path = tmp_path_factory.mktemp("npz") / "set.npz"
    np.savez(path, x=x, y=y)
    return open_dataset(path)


def _spec(text):
    from robustlab.attacks.variant import parse_attacks

    return parse_attacks([text])[0].spec


@pytest.mark.parametrize(
    "text, broken",
    [("apgd:eps=8/255,steps=10", 0.75), ("apgd:eps=8/255,steps=10,loss=margin", 0.75), ("square:eps=8/255,queries=300", 0.5)],
    ids=["apgd-ce", "apgd-margin", "square"],
)
def test_each_new_attack_breaks_the_linear_detector_within_eps_and_is_seeded(linear, images, text, broken):
    from robustlab.attacks.art_backend import run_attack

    x, y = images
    assert np.array_equal(linear.scores(x) >= 0.5, y == 1)
    spec = _spec(text)
    a = run_attack(linear, x, y, spec, np.random.default_rng(1))
    b = run_attack(linear, x, y, spec, np.random.default_rng(1))
    assert a.images.dtype == np.uint8 and a.images.tobytes() == b.images.tobytes()
    assert a.linf.max() <= 8  # never beyond eps, in grey levels
    assert a.success.mean() >= broken  # accuracy falls from 100% (random search needs more queries than 300 for all)
    assert np.array_equal(a.success, (linear.scores(a.images) >= 0.5) != (y == 1))


def test_apgd_l2_stays_inside_the_ball(linear, images):
    from robustlab.attacks.art_backend import run_attack

    x, y = images
    r = run_attack(linear, x, y, _spec("apgd:eps=1.0,norm=2,steps=10"), np.random.default_rng(0))
    assert np.all(r.l2 <= 255.0 + 1e-9) and r.success.mean() >= 0.75


def test_margin_loss_keeps_a_gradient_where_cross_entropy_underflows(tmp_path, images):
    """A detector 1000x more confident: CE's gradient is exactly zero in float32, the margin's is not."""
    import keras
    from keras import layers

    from robustlab.attacks.art_backend import run_attack
    from robustlab.detector.loading import load_detector

    inp = keras.Input((16, 16, 3))
    dense = layers.Dense(1)
    model = keras.Model(inp, dense(layers.GlobalAveragePooling2D()(inp)))
    dense.set_weights([np.full((3, 1), 2e5 / 3, np.float32), np.array([-1e5], np.float32)])
    model.save(tmp_path / "model.keras")
    (tmp_path / "d.yaml").write_text("model: model.keras\nscale: '0-1'\noutput: logits\nclasses: [fake]\n", encoding="utf-8")
    det = load_detector(tmp_path / "d.yaml")
    x, y = images
    ce = run_attack(det, x, y, _spec("apgd:eps=8/255,steps=5,loss=ce"), np.random.default_rng(0))
    margin = run_attack(det, x, y, _spec("apgd:eps=8/255,steps=5,loss=margin"), np.random.default_rng(0))
    assert ce.zero_gradient.all() and not margin.zero_gradient.any()
    assert margin.success.all() and ce.success.mean() < margin.success.mean()


def test_black_box_attacks_work_without_gradients(no_gradient, images):
    from robustlab.attacks.art_backend import run_attack

    x, y = images
    assert np.array_equal(no_gradient.scores(x) >= 0.5, y == 1)
    with pytest.raises(RobustlabError) as err:
        run_attack(no_gradient, x, y, _spec("pgd:eps=8/255"), np.random.default_rng(0))
    assert "not differentiable" in err.value.one_line() and "square" in err.value.one_line() and "hsj" in err.value.one_line()
    # piecewise-constant scores leave random search few improvements to accept: a larger eps
    sq = run_attack(no_gradient, x, y, _spec("square:eps=16/255,queries=300"), np.random.default_rng(0))
    assert sq.linf.max() <= 16 and sq.success.mean() >= 0.5 and sq.zero_gradient is None
    hsj = run_attack(no_gradient, x[:4], y[:4], _spec("hsj:queries=400"), np.random.default_rng(0))
    again = run_attack(no_gradient, x[:4], y[:4], _spec("hsj:queries=400"), np.random.default_rng(0))
    assert hsj.images.tobytes() == again.images.tobytes()
    assert hsj.success.all()  # unbounded: a decision-based attack always ends on the other side
    assert hsj.queries is not None and np.all(hsj.queries > 0) and np.all(hsj.queries <= 600)
    assert np.all(hsj.l2 > 0)  # the realized perturbation is reported


def test_auto_is_the_per_image_worst_case_of_its_stages(linear, npz_data):
    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.cascade import AutoVariant, stage_specs
    from robustlab.attacks.variant import parse_attacks
    from robustlab.evaluation.pipeline import evaluate

    auto = parse_attacks(["auto:eps=4/255,steps=10,queries=100"])[0]
    assert isinstance(auto, AutoVariant) and auto.param == "eps=0.0157,steps=10,queries=100" and not auto.standard
    result = evaluate(linear, npz_data, variants=[auto])
    o = result.outcome("auto")
    by = o.extras["broken_by"]
    wrong = (o.scores >= 0.5) != (o.y == 1)
    assert np.array_equal(wrong, by > 0)  # robust only where every stage failed
    assert 0 < wrong.sum() < o.n and o.linf.max() <= 4  # 4/255 flips the images within 4 levels of the boundary
    record = result.info.attacks[0]
    assert record["spec"]["protocol"] == "auto-v1" and [s["stage"] for s in record["spec"]["stages"]] == ["apgd-ce", "apgd-margin", "square"]
    assert sum(record["cascade"]["broken"].values()) + record["cascade"]["robust"] == o.n
    assert record["cascade"]["line"].startswith("AUTO (")
    # no stage alone, with the cascade's budget, breaks more images than the cascade
    x = np.load(npz_data.root)["x"][o.idx] if str(npz_data.root).endswith(".npz") else None
    assert x is not None
    for _, spec in stage_specs(auto.spec):
        single = run_attack(linear, x, o.y, spec, np.random.default_rng(9))
        assert single.success.sum() <= wrong.sum()


def test_evade_attacks_only_fakes_and_frame_only_real_images(linear, npz_data):
    from robustlab.attacks.variant import parse_attacks
    from robustlab.evaluation.pipeline import evaluate

    variants = parse_attacks(["fgsm:eps=8/255,direction=evade", "apgd:eps=8/255,steps=5,direction=frame", "fgsm:eps=8/255"])
    assert [v.param for v in variants] == ["eps=0.0314,direction=evade", "eps=0.0314,steps=5,loss=ce,direction=frame", "eps=0.0314"]
    result = evaluate(linear, npz_data, variants=variants)
    evade, frame, both = (result.outcome(v.variant, v.param) for v in variants)
    labels = npz_data.labels
    assert evade.n == 8 and np.all(labels[evade.idx] == 1)
    assert frame.n == 8 and np.all(labels[frame.idx] == 0)
    assert both.n == 16
    rows = {(r.set, r.variant, r.param): r for r in result.rows}
    assert rows[("adversarial", "fgsm", "eps=0.0314,direction=evade")].n == 8
    assert rows[("adversarial", "fgsm", "eps=0.0314,direction=evade")].recall == 0.0  # no fake is caught under attack


def test_a_real_positive_detector_still_evades_with_fakes(tmp_path, npz_data):
    from robustlab.attacks.variant import parse_attacks
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import evaluate

    det = load_detector(save_detector(tmp_path, "linear"), positive="real")
    v = parse_attacks(["fgsm:eps=8/255,direction=evade"])[0]
    o = evaluate(det, npz_data, variants=[v]).outcome("fgsm")
    assert np.all(npz_data.labels[o.idx] == 1) and np.all(o.y == 0)  # fakes, the detector's negative class


def test_cross_attack_checks_flag_a_square_weaker_than_fgsm(linear, npz_data):
    from robustlab.attacks.checks import attack_checks
    from robustlab.attacks.variant import parse_attacks
    from robustlab.evaluation.pipeline import evaluate

    variants = parse_attacks(["pgd:eps=8/255,steps=5", "apgd:eps=8/255,steps=1", "square:eps=8/255,queries=2", "fgsm:eps=8/255"])
    result = evaluate(linear, npz_data, variants=variants, checks=attack_checks(linear, variants))
    text = "\n".join(result.diagnostics)
    assert "APGD (" not in text  # one APGD step of 2 * eps, projected, is FGSM: as strong as PGD here
    assert "SQUARE (" in text and "is weaker than FGSM" in text


def test_black_box_only_runs_need_no_gradient(no_gradient, npz_data):
    from robustlab.attacks.checks import attack_checks
    from robustlab.attacks.variant import parse_attacks

    assert attack_checks(no_gradient, parse_attacks(["square:eps=8/255,queries=10"]))  # no refusal
    with pytest.raises(RobustlabError) as err:
        attack_checks(no_gradient, parse_attacks(["auto:eps=8/255"]))
    assert "square" in err.value.one_line()
