"""robustlab.attacks: parsing, the bookkept entry point over real ART attacks, variants in
evaluate, the diagnostics that catch broken evaluations, and the adversarial-set layout.

The detectors are tiny real Keras models saved to ``tmp_path`` and loaded like any detector:

* ``linear``: global average pooling + Dense(sigmoid) with set weights: score = sigmoid(200 *
  (mean pixel - 0.5)). Its images sit 3 to 7.6 grey levels from the decision boundary, so the
  outcome of each attack is known exactly (eps 1/255 flips nothing, 8/255 flips everything).
* ``saturated``: the same rule through a softmax with huge weights behind a layer that hides the
  pre-activation: probabilities are exactly 0 or 1 and every input gradient is exactly zero.
* ``non_differentiable``: a Discretization layer (bucketing has no gradient).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robustlab.enums import SetKind
from robustlab.errors import RobustlabError

SIZE = 16
ROOT = Path(__file__).resolve().parents[1]
SPEC = "name: {name}\nmodel: model.keras\nscale: '0-1'\ncolor: rgb\n{output}threshold: 0.5\n"


def margin_images(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (2n, 16, 16, 3) textured mid-grey images, y (fake = 1: mean above 0.5 by 3-7.6 levels)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            tex = rng.uniform(-40, 40, (SIZE, SIZE, 3))
            tex -= tex.mean()
            offset = rng.uniform(3.2, 7.4) * (1 if label else -1)
            xs.append(np.clip(np.rint(127.5 + offset + tex), 0, 255).astype(np.uint8))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64)


def save_detector(root: Path, kind: str) -> Path:
    """A detector.yaml for a ``linear``, ``saturated`` or ``non_differentiable`` model (see above)."""
    import keras
    from keras import layers

    root.mkdir(parents=True, exist_ok=True)
    inp = keras.Input((SIZE, SIZE, 3))
    pooled = layers.GlobalAveragePooling2D()(inp)
    if kind == "linear":
        dense = layers.Dense(1, activation="sigmoid")
        model = keras.Model(inp, dense(pooled))
        dense.set_weights([np.full((3, 1), 200.0 / 3, np.float32), np.array([-100.0], np.float32)])
        output = "output: sigmoid\nclasses: [fake]\n"
    elif kind == "saturated":
        dense = layers.Dense(2, activation="softmax")
        model = keras.Model(inp, layers.Activation("linear")(dense(pooled)))
        k = 1e5 / 3
        dense.set_weights([np.tile(np.array([[-k, k]], np.float32), (3, 1)), np.array([1e5 / 2, -1e5 / 2], np.float32)])
        output = "output: softmax\nclasses: [real, fake]\n"
    elif kind == "non_differentiable":
        buckets = layers.Discretization(bin_boundaries=[0.25, 0.5, 0.75], output_mode="one_hot")(pooled)
        model = keras.Model(inp, layers.Dense(1, activation="sigmoid")(layers.Flatten()(buckets)))
        output = "output: sigmoid\nclasses: [fake]\n"
    else:
        raise ValueError(kind)
    model.save(root / "model.keras")
    (root / "detector.yaml").write_text(SPEC.format(name=kind, output=output), encoding="utf-8")
    return root / "detector.yaml"


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    from robustlab.detector.loading import load_detector

    return load_detector(save_detector(tmp_path_factory.mktemp("linear"), "linear"))


@pytest.fixture(scope="module")
def saturated(tmp_path_factory):
    from robustlab.detector.loading import load_detector

    return load_detector(save_detector(tmp_path_factory.mktemp("saturated"), "saturated"))


@pytest.fixture(scope="module")
def images():
    return margin_images(8, seed=3)


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    from robustlab.data import open_dataset

    x, y = margin_images(10, seed=4)
    path = tmp_path_factory.mktemp("npz") / "set.npz"
    np.savez(path, x=x, y=y)
    return open_dataset(path)


# --------------------------------------------------------------------------- parsing


def test_parse_attacks_gives_one_variant_per_eps():
    from robustlab.attacks.variant import AttackVariant, parse_attacks

    vs = parse_attacks(["fgsm:eps=2/255,8/255", "pgd:eps=8/255,steps=10,step=2/255,norm=inf,random_start=true"])
    assert all(isinstance(v, AttackVariant) and v.kind is SetKind.ADVERSARIAL for v in vs)
    assert [(v.variant, v.param) for v in vs] == [("fgsm", "eps=0.0078"), ("fgsm", "eps=0.0314"), ("pgd", "eps=0.0314,steps=10,step=0.0078")]
    pgd = vs[2].spec
    assert pgd.steps == 10 and pgd.random_start is True and pgd.step_size == pytest.approx(2 / 255)
    default = parse_attacks(["pgd:eps=8/255"])[0]
    assert default.param == "eps=0.0314,steps=10" and default.spec.step_size == pytest.approx(2.5 * (8 / 255) / 10)
    assert parse_attacks(["fgsm:eps=0.5,norm=2", "pgd:eps=4/255,steps=3,random_start=false"])[0].param == "eps=0.5000,norm=2"
    assert parse_attacks(["pgd:eps=4/255,steps=3,random_start=false"])[0].param == "eps=0.0157,steps=3,random_start=false"
    assert len(parse_attacks(["fgsm:eps=8/255", "FGSM:eps=0.0313725"])) == 1  # the same attack once


@pytest.mark.parametrize(
    "text, needle",
    [
        ("fgsmm:eps=8/255", "unknown attack"),
        ("fgsm:eps=0", "outside (0, 1]"),
        ("fgsm:eps=1.5", "outside (0, 1]"),
        ("fgsm:eps=-2/255", "outside (0, 1]"),
        ("fgsm:eps=abc", "not a number"),
        ("fgsm:epz=8/255", "unknown option 'epz'"),
        ("fgsm:eps=8/255,steps=3", "unknown option 'steps'"),
        ("pgd:eps=8/255,steps=ten", "not a whole number"),
        ("pgd:eps=8/255,steps=0", "outside 1.."),
        ("pgd:eps=8/255,random_start=maybe", "not true or false"),
        ("pgd:eps=8/255,norm=3", "unknown norm"),
        ("pgd:steps=10", "no eps"),
        ("pgd:eps=8/255,eps=4/255", "given twice"),
    ],
)
def test_parse_attacks_rejects_bad_specs_in_one_line(text, needle):
    from robustlab.attacks.variant import parse_attacks

    with pytest.raises(RobustlabError) as err:
        parse_attacks([text])
    assert err.value.exit_code == 2
    line = err.value.one_line()
    assert needle in line and text in line and "\n" not in line


# --------------------------------------------------------------------------- the entry point


def test_run_attack_bookkeeping_on_a_known_detector(linear, images):
    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.spec import AttackSpec

    x, y = images
    assert np.array_equal(linear.scores(x) >= 0.5, y == 1)  # clean: all right
    d = x.size // len(x)
    for eps, flipped in ((1 / 255, False), (8 / 255, True)):
        r = run_attack(linear, x, y, AttackSpec("fgsm", eps), np.random.default_rng(0))
        assert r.images.dtype == np.uint8 and r.images.shape == x.shape
        assert r.success.dtype == bool and r.success.shape == (len(x),)
        assert np.all(r.success == flipped)  # 8/255 moves the mean past every margin, 1/255 past none
        assert np.array_equal(r.success, (linear.scores(r.images) >= 0.5) != (y == 1))
        levels = round(eps * 255)
        assert np.all(r.linf == levels)  # the delivered L-inf is eps, in grey levels
        assert np.allclose(r.l2, levels * np.sqrt(d))  # every pixel moved by eps (no clipping at mid-grey)
        assert np.allclose(r.psnr, 20 * np.log10(255 / levels))
        assert np.all((r.ssim > 0) & (r.ssim < 1))
        # the attack moved every image away from its true class
        delta = r.images.astype(int) - x.astype(int)
        assert np.all(np.sign(delta.reshape(len(x), -1).mean(axis=1)) == np.where(y == 1, -1, 1))


def test_delivered_images_never_exceed_the_budget(linear, images):
    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.spec import AttackSpec

    x, y = images
    r = run_attack(linear, x, y, AttackSpec("fgsm", 0.05), np.random.default_rng(0))
    assert np.all(r.linf == 12)  # 0.05 is 12.75 grey levels: uint8 delivery keeps 12
    r = run_attack(linear, x, y, AttackSpec("pgd", 0.5, "2", steps=3), np.random.default_rng(0))
    assert np.all(r.l2 <= 0.5 * 255 + 1e-9) and np.all(r.l2 > 0.85 * 0.5 * 255)
    r = run_attack(linear, x, y, AttackSpec("fgsm", 0.5 / 255), np.random.default_rng(0))
    assert np.all(r.linf == 0) and np.array_equal(r.images, x) and np.all(np.isinf(r.psnr))


def test_deliver_keeps_every_image_within_the_budget_and_the_pixel_range():
    from robustlab.attacks.delivery import deliver
    from robustlab.attacks.spec import AttackSpec

    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    x[0] = 0
    x[1] = 255  # saturated images: clipping at 0/255 must not leave the pixel range
    x01 = x / 255.0
    for eps in (3 / 255, 0.05, 0.3):
        adv = x01 + rng.uniform(-2 * eps, 2 * eps, x.shape)  # outside the ball and [0, 1] on purpose
        adv[2, 0, 0, 0] = np.nan
        out = deliver(x, adv, AttackSpec("fgsm", eps))
        d = out.astype(int) - x.astype(int)
        assert out.dtype == np.uint8 and out.shape == x.shape
        assert np.abs(d).max() == int(np.floor(eps * 255 + 1e-6))  # whole grey levels, never above eps
        assert out[2, 0, 0, 0] == max(int(x[2, 0, 0, 0]) - int(np.floor(eps * 255 + 1e-6)), 0)  # NaN counts as 0
        # L2: the integer perturbation is inside the ball, and keeps most of a perturbation on its surface
        radius = eps * 255
        on_sphere = rng.normal(size=x[2:].shape)
        on_sphere *= 1.5 * radius / np.sqrt((on_sphere**2).sum(axis=(1, 2, 3), keepdims=True))
        out = deliver(x[2:], np.clip(x[2:] + on_sphere, 0, 255) / 255.0, AttackSpec("fgsm", eps, "2"))
        d2 = ((out.astype(np.int64) - x[2:].astype(np.int64)) ** 2).sum(axis=(1, 2, 3))
        assert np.all(d2 <= radius**2)
        assert np.all(np.sqrt(d2) > 0.5 * radius) if eps >= 0.05 else np.all(d2 == 0)  # 3/255 over 432 values: under half a level each


def test_ssim_is_tf_image_ssim(linear, images):
    import tensorflow as tf

    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.delivery import image_ssim
    from robustlab.attacks.spec import AttackSpec

    x, y = images
    r = run_attack(linear, x, y, AttackSpec("fgsm", 8 / 255), np.random.default_rng(0))
    ref = tf.image.ssim(tf.constant(x, tf.float32), tf.constant(r.images, tf.float32), 255.0).numpy()
    assert r.ssim.dtype == np.float64 and np.allclose(r.ssim, ref, atol=1e-5)
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 8, 20, 3), dtype=np.uint8)  # smaller than the 11-pixel window
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    ref = tf.image.ssim(tf.constant(a, tf.float32), tf.constant(b, tf.float32), 255.0, filter_size=8).numpy()
    assert np.allclose(image_ssim(a, b), ref, atol=1e-5) and np.allclose(image_ssim(a, a), 1.0)


def test_the_graphs_are_traced_once_and_stage_times_are_recorded(linear, images):
    from robustlab.attacks.art_backend import art_classifier, run_attack
    from robustlab.attacks.delivery import _ssim_fn
    from robustlab.attacks.spec import AttackSpec

    x, y = images
    clf = art_classifier(linear)
    results = []
    for n in (16, 5, 3, 16):  # batch sizes vary (the last batch, the attacked subset of a batch)
        results.append(run_attack(linear, x[:n], y[:n], AttackSpec("fgsm", 4 / 255), np.random.default_rng(0)))
    run_attack(linear, x, y, AttackSpec("pgd", 4 / 255, steps=2), np.random.default_rng(0))
    assert clf._gradient.experimental_get_tracing_count() == 1
    assert _ssim_fn(min(11, SIZE)).experimental_get_tracing_count() == 1
    for r in results:
        assert set(r.seconds) == {"gradient", "art_other", "deliver_and_norms", "ssim", "success_check"}
        assert all(t >= 0 for t in r.seconds.values()) and r.seconds["gradient"] > 0
        assert r.scores is not None and r.scores.shape == (len(r.images),)


def test_true_labels_are_passed_to_art(linear, images):
    """Flipped labels push the other way: ART did not replace the labels with predictions."""
    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.spec import AttackSpec

    x, y = images
    spec = AttackSpec("fgsm", 4 / 255)
    clean = linear.scores(x)
    true = linear.scores(run_attack(linear, x, y, spec, np.random.default_rng(0)).images)
    flipped = linear.scores(run_attack(linear, x, 1 - y, spec, np.random.default_rng(0)).images)
    assert np.all(np.where(y == 1, true < clean, true > clean))
    assert np.all(np.where(y == 1, flipped > clean, flipped < clean))


def test_pgd_random_start_is_seeded_by_rng_and_leaves_numpy_alone(linear, images):
    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.spec import AttackSpec

    x, y = images
    spec = AttackSpec("pgd", 8 / 255, steps=1, step=1 / 255)  # one small step: the random start shows
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = run_attack(linear, x, y, spec, np.random.default_rng(5)).images
    b = run_attack(linear, x, y, spec, np.random.default_rng(5)).images
    c = run_attack(linear, x, y, spec, np.random.default_rng(6)).images
    assert np.array_equal(np.random.get_state()[1], before)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert np.abs(a.astype(int) - x.astype(int)).max() == 8


def test_bad_batches_are_refused(linear, images):
    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.spec import AttackSpec

    x, y = images
    with pytest.raises(ValueError):
        run_attack(linear, x.astype(np.float32), y, AttackSpec("fgsm", 0.1), np.random.default_rng(0))
    with pytest.raises(ValueError):
        run_attack(linear, x, y[:-1], AttackSpec("fgsm", 0.1), np.random.default_rng(0))
    empty = run_attack(linear, x[:0], y[:0], AttackSpec("fgsm", 0.1), np.random.default_rng(0))
    assert empty.images.shape == (0, SIZE, SIZE, 3) and empty.success.shape == (0,)


def test_non_differentiable_detector_is_refused_with_the_reason(tmp_path, images):
    from robustlab.attacks.art_backend import run_attack
    from robustlab.attacks.spec import AttackSpec
    from robustlab.detector.loading import load_detector

    det = load_detector(save_detector(tmp_path, "non_differentiable"))
    x, y = images
    with pytest.raises(RobustlabError) as err:
        run_attack(det, x, y, AttackSpec("fgsm", 8 / 255), np.random.default_rng(0))
    assert "not differentiable" in err.value.one_line() and "detector.yaml" in err.value.one_line()


# --------------------------------------------------------------------------- in evaluate


def test_attack_variants_in_evaluate_give_the_table_rows(linear, npz_data):
    from robustlab.attacks.checks import attack_checks
    from robustlab.attacks.variant import parse_attacks
    from robustlab.evaluation.pipeline import evaluate

    variants = parse_attacks(["fgsm:eps=1/255,8/255", "pgd:eps=8/255,steps=3"])
    checks = attack_checks(linear, variants)
    result = evaluate(linear, npz_data, variants=variants, attack_fraction=0.5, checks=checks)
    by = {(r.set, r.variant, r.param): r for r in result.rows}
    clean = by[("clean", "none", "")]
    assert clean.n == 20 and clean.accuracy == 1.0
    weak = by[("adversarial", "fgsm", "eps=0.0039")]
    strong = by[("adversarial", "fgsm", "eps=0.0314")]
    pgd = by[("adversarial", "pgd", "eps=0.0314,steps=3")]
    assert weak.n == strong.n == pgd.n == 10  # the stratified half
    assert weak.accuracy == 1.0 and strong.accuracy == 0.0 and pgd.accuracy == 0.0
    assert weak.linf == 1.0 and strong.linf == 8.0
    mixed = by[("mixed", "fgsm", "eps=0.0314")]
    assert mixed.n == 30 and mixed.misclassified == 10
    assert by[("worst-case", "none", "")].accuracy == 0.5
    assert result.diagnostics == []
    record = result.info.attacks[1]
    assert record["param"] == "eps=0.0314" and record["images"] == 10 and record["success"] == 10
    assert record["psnr_mean_db"] == pytest.approx(20 * np.log10(255 / 8)) and record["spec"]["labels"] == "true labels"


def test_a_detector_whose_positive_class_is_real_is_attacked_the_same_way(tmp_path, npz_data):
    """Labels follow the detector's positive class: the attack still pushes away from the truth."""
    from robustlab.attacks.variant import parse_attacks
    from robustlab.detector.loading import load_detector
    from robustlab.evaluation.pipeline import evaluate

    det = load_detector(save_detector(tmp_path, "linear"), positive="real")
    result = evaluate(det, npz_data, variants=parse_attacks(["fgsm:eps=1/255,8/255"]))
    acc = {(r.set, r.param): r.accuracy for r in result.rows}
    assert acc[("clean", "")] == 1.0 and acc[("adversarial", "eps=0.0039")] == 1.0 and acc[("adversarial", "eps=0.0314")] == 0.0


def test_diagnostics_catch_broken_evaluations(linear, saturated, npz_data):
    from robustlab.attacks.checks import attack_checks
    from robustlab.attacks.variant import parse_attacks
    from robustlab.evaluation.pipeline import evaluate, run_evaluation

    # eps below one grey level, and a PGD too weak to match FGSM at the same eps
    variants = parse_attacks(["fgsm:eps=0.5/255,8/255", "pgd:eps=8/255,steps=1,step=1/255,random_start=false"])
    result = evaluate(linear, npz_data, variants=variants, checks=attack_checks(linear, variants))
    text = "\n".join(result.diagnostics)
    assert "less than one" in text and "uint8 delivery" in text
    assert "weaker than FGSM" in text
    # a saturated score: zero gradients, identical images, no accuracy drop at 8/255, failed sanity check
    variants = parse_attacks(["fgsm:eps=8/255"])
    run = run_evaluation(saturated, npz_data, attacks=variants, sanity=True)
    result = run.result
    text = "\n".join(result.diagnostics)
    assert "exactly zero loss gradient" in text
    assert "identical to the clean ones" in text
    assert "not below the clean accuracy" in text
    assert "sanity check failed" in text
    sanity = result.info.sanity
    assert sanity["passed"] is False and sanity["adversarial_accuracy"] > 0.5  # only the random start moves anything
    assert run.sanity is not None and not run.sanity.passed
    assert result.info.diagnostics == list(result.diagnostics)


def test_sanity_check_passes_on_a_working_detector(linear, npz_data):
    from robustlab.attacks.checks import sanity_check, sanity_message

    outcome = sanity_check(linear, npz_data, max_images=8)
    assert outcome.warnings() == []
    assert outcome.passed is True and outcome.images == 8 and outcome.adversarial_accuracy == 0.0
    assert outcome.to_dict()["passed"] is True
    assert "passed" in sanity_message(outcome)


# --------------------------------------------------------------------------- the saved set


def test_adversarial_layout_mirrors_paths_and_is_a_data_set(tmp_path, npz_data):
    from robustlab.attacks.variant import parse_attacks
    from robustlab.attacks.writer import AdversarialWriter
    from robustlab.data import open_dataset
    from robustlab.results import BatchRecord

    (tmp_path / "imgs").mkdir()
    (tmp_path / "list").mkdir()
    csv = tmp_path / "list" / "m.csv"
    csv.write_text("path,label\n../imgs/a.jpg,fake\n../imgs/a.png,fake\nsub/b.webp,real\n", encoding="utf-8")
    manifest = open_dataset(csv, require_both=False)
    one = parse_attacks(["fgsm:eps=8/255"])
    w = AdversarialWriter(tmp_path / "adv", manifest, one)
    assert [w.relpath(i) for i in range(3)] == ["fake/imgs/a.png", "fake/imgs/a.png", "real/sub/b.png"]
    assert AdversarialWriter(tmp_path / "adv", npz_data, one).relpath(3) == "real/x_000003.png"
    # writing: a name clash keeps both images; several attacks get one sub-folder each
    x = np.zeros((3, 4, 4, 3), np.uint8)

    def record(variant, n):
        zeros = np.zeros(n)
        return BatchRecord(variant, np.arange(n), np.zeros(n, np.int64), x[:n], x[:n], zeros, zeros, zeros)

    w(record(one[0], 3))
    saved = sorted(p.relative_to(tmp_path / "adv").as_posix() for p in (tmp_path / "adv").rglob("*.png"))
    assert saved == ["fake/imgs/a.png", "fake/imgs/a__1.png", "real/sub/b.png"] and w.summary()["images"] == 3
    two = parse_attacks(["fgsm:eps=8/255", "pgd:eps=8/255"])
    w2 = AdversarialWriter(tmp_path / "adv2", manifest, two, table=tmp_path / "t.csv")
    w2(record(two[1], 1))
    assert (tmp_path / "adv2" / "pgd_eps=0.0314_steps=10" / "fake" / "imgs" / "a.png").is_file()
    ds = open_dataset(tmp_path / "adv2" / "pgd_eps=0.0314_steps=10", require_both=False)
    assert ds.paths == ["fake/imgs/a.png"] and ds.labels.tolist() == [1]
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("id,path,adversarial_path,variant,param")


# --------------------------------------------------------------------------- module rules


def test_importing_the_attack_command_stays_light():
    code = "import sys, robustlab.cli, robustlab.attacks.art_backend, robustlab.attacks.variant, robustlab.cli.attack; print('art' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]


def test_importing_art_leaves_the_process_logging_alone():
    """``import art`` would close every existing logging handler (dictConfig); robustlab stops that."""
    code = (
        "import logging, sys\n"
        "h = logging.StreamHandler(sys.stdout)\n"
        "logging.getLogger('mine').addHandler(h)\n"
        "from robustlab.attacks.art_backend import _art\n"
        "_art()\n"
        "assert 'art' in sys.modules\n"
        "print(any(r() is h for r in logging._handlerList), logging.getLogger('mine').handlers == [h])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "True"]
