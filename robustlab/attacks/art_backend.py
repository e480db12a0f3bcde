"""The ART backend: the detector as a differentiable TensorFlowV2Classifier over [0, 1] RGB, and run_attack, the one entry point every evaluation attack goes through.

This and robustlab.attacks.tf_backend are the only modules that run attacks; only this one imports ART (lazily).
"""
from __future__ import annotations

import functools
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from robustlab.attacks.delivery import (
    AttackResult,
    _measure,
    deliver,
    image_ssim,
)
from robustlab.attacks.spec import BLACK_BOX, AttackMethod, AttackSpec, Loss
from robustlab.errors import RobustlabError

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.attacks.eot import EOT
    from robustlab.detector.model import Detector

# --------------------------------------------------------------------------- ART plumbing


class DetectorLogits:
    """The detector's differentiable wrapper, callable the way ART calls a Keras model.

    ``model(x, training=False)``: ``x`` float32 (N, H, W, 3) RGB in [0, 1] -> float32 (N, 2)
    logits [negative, positive]; the detector's own preprocessing happens inside.
    """

    def __init__(self, detector: "Detector"):
        self.detector = detector

    def __call__(self, x: Any, training: bool = False) -> Any:
        return self.detector.class_logits(x, training=bool(training))


class DecisionLogits:
    """Two logits whose argmax is the detector's decision at its threshold, centred on zero.

    ``model(x)``: float32 (N, H, W, 3) RGB in [0, 1] -> float32 (N, 2) ``[-d/2, d/2]`` with
    ``d = logit(positive) - logit(negative) - log(t / (1 - t))``: ART's APGD, Square and
    HopSkipJump decide "still right" by argmax, which is then ``score >= threshold``; the margin
    ``d`` and cross-entropy over these logits are the binary margin / CE at the threshold. The
    two logits never look like probabilities (they sum to 0), which APGD would refuse.
    """

    def __init__(self, detector: "Detector"):
        self.detector = detector
        t = min(max(float(detector.threshold), 1e-6), 1 - 1e-6)
        self.offset = float(np.log(t / (1.0 - t)))

    def __call__(self, x: Any, training: bool = False) -> Any:
        import tensorflow as tf

        z = self.detector.class_logits(x, training=bool(training))
        d = (z[:, 1] - z[:, 0] - self.offset) / 2.0
        return tf.stack([-d, d], axis=1)


class BinaryLoss:
    """APGD's loss over two logits (a Keras-style loss object ART's ``compute_loss`` can re-reduce).

    ``(y_true one-hot (N, 2), logits (N, 2)) -> loss``, to be maximised: ``ce`` is the softmax
    cross-entropy ``softplus(-margin)``, ``margin`` is ``logit(other) - logit(true)`` (unbounded,
    so its gradient never vanishes). ``reduction``: ``sum`` (gradients), ``none`` (per image, which
    APGD's step-size rule compares), or ``sum_over_batch_size``.
    """

    def __init__(self, loss: Loss):
        self.loss = loss
        self.reduction: Any = "sum"

    def __call__(self, y_true: Any, logits: Any) -> Any:
        import tensorflow as tf

        y = tf.cast(y_true, tf.float32)
        margin = tf.reduce_sum(y * logits, axis=1) - tf.reduce_sum((1.0 - y) * logits, axis=1)
        per_image = tf.nn.softplus(-margin) if self.loss is Loss.CE else -margin
        reduction = str(getattr(self.reduction, "value", self.reduction)).lower()
        if reduction == "none":
            return per_image
        if reduction in ("sum_over_batch_size", "mean", "auto"):
            return tf.reduce_mean(per_image)
        return tf.reduce_sum(per_image)


@functools.lru_cache(maxsize=None)
def _art() -> dict[str, Any]:
    """ART's classes, imported once, without its import-time side effects.

    ``import art`` warns about missing frameworks (PyTorch...) and calls
    ``logging.config.dictConfig``, which closes every logging handler the process already has (a
    notebook's, pytest's) and binds a handler to whatever ``sys.stderr`` is at that moment. Neither
    is robustlab's to allow: the warnings are silenced and ART's logger only gets a NullHandler.
    """
    import logging.config

    from robustlab._tf import import_tf

    import_tf()
    dict_config = logging.config.dictConfig

    def art_logging_only(config: dict[str, Any]) -> None:
        logging.getLogger("art").addHandler(logging.NullHandler())

    logging.config.dictConfig = art_logging_only  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from art.attacks.evasion import AutoProjectedGradientDescent, FastGradientMethod, HopSkipJump, ProjectedGradientDescent, SquareAttack
            from art.estimators.classification import BlackBoxClassifierNeuralNetwork, TensorFlowV2Classifier
    finally:
        logging.config.dictConfig = dict_config  # type: ignore[assignment]
    return {
        "FGSM": FastGradientMethod,
        "PGD": ProjectedGradientDescent,
        "APGD": AutoProjectedGradientDescent,
        "Square": SquareAttack,
        "HSJ": HopSkipJump,
        "TensorFlowV2Classifier": TensorFlowV2Classifier,
        "BlackBox": BlackBoxClassifierNeuralNetwork,
        "Compiled": _compiled_class(TensorFlowV2Classifier),
    }


def _compiled_class(base: type) -> type:
    import tensorflow as tf

    class CompiledTensorFlowV2Classifier(base):  # type: ignore[misc, valid-type]
        """ART's TensorFlowV2Classifier with ``loss_gradient`` compiled as one ``tf.function``.

        Same model, loss and labels as ART's eager path; also notes, per image of the current
        attack, whether every gradient it got was exactly zero (a saturated score).
        """

        def __init__(self, model: Any, *, input_shape: tuple[int, int, int], loss_object: Any):
            super().__init__(model=model, nb_classes=2, input_shape=input_shape, loss_object=loss_object, clip_values=(0.0, 1.0), preprocessing=None)
            h, w, c = input_shape
            signature = [tf.TensorSpec((None, h, w, c), tf.float32), tf.TensorSpec((None, 2), tf.float32)]

            @tf.function(input_signature=signature, reduce_retracing=True, autograph=False)
            def gradient(x: Any, y: Any) -> tuple[Any, Any]:
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = loss_object(y, model(x, training=False))
                g = tape.gradient(loss, x)
                if g is None:
                    raise _NoGradient("no gradient flows from the detector's output back to the input image")
                return g, tf.reduce_all(tf.equal(g, 0.0), axis=[1, 2, 3])

            self._gradient = gradient
            self._model = model
            self._loss_object = loss_object
            self._signature = signature
            self._eot_gradients: dict[Any, Any] = {}
            self.zero_gradient: np.ndarray | None = None
            self.eot: "tuple[EOT, np.random.Generator] | None" = None  # set by run_attack for an EOT attack
            self.gradient_seconds = 0.0  # time spent in the compiled gradient (for the stage timings)

        def _expected_gradient(self, x: Any, y: Any) -> tuple[Any, Any]:
            """EOT: the mean over ``samples`` seeded draws of the chain of the loss gradient
            (float32 (N, H, W, 3)), and per image whether it is exactly zero."""
            eot, rng = self.eot
            fn = self._eot_gradients.get(eot.chain)
            if fn is None:
                fn = self._eot_gradients[eot.chain] = _chain_gradient(self._model, self._loss_object, self._signature, eot.chain)
            n = int(x.shape[0])
            total = None
            for _ in range(int(eot.samples)):
                params = [tf.constant(p) for p in eot.chain.draw_tf(rng, n)]
                g = fn(x, y, *params)
                total = g if total is None else total + g
            g = total / float(eot.samples)
            return g, tf.reduce_all(tf.equal(g, 0.0), axis=[1, 2, 3])

        def loss_gradient(self, x: Any, y: Any, training_mode: bool = False, **kwargs: Any) -> Any:
            if training_mode:
                return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
            t = time.perf_counter()
            if self.eot is not None:
                g, zero = self._expected_gradient(tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32))
            else:
                g, zero = self._gradient(tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32))
            if self.zero_gradient is not None:
                z = zero.numpy()
                if z.shape == self.zero_gradient.shape:
                    self.zero_gradient &= z
                else:  # ART split the batch: per-image tracking is off for this attack
                    self.zero_gradient = None
            out = g.numpy() if isinstance(x, np.ndarray) else g
            self.gradient_seconds += time.perf_counter() - t
            return out

    return CompiledTensorFlowV2Classifier


def _chain_gradient(model: Any, loss_object: Any, signature: list[Any], chain: Any) -> Any:
    """The compiled gradient of ``loss_object(y, model(chain(x)))`` for one draw of the chain's
    parameters: ``(x float32 (N, H, W, 3), y one-hot (N, 2), *params) -> float32 (N, H, W, 3)``."""
    import tensorflow as tf

    def gradient(x: Any, y: Any, *params: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_object(y, model(chain.tf_apply(x, params), training=False))
        g = tape.gradient(loss, x)
        if g is None:
            raise _NoGradient("no gradient flows from the detector's output back to the input image")
        return g

    return tf.function(gradient, input_signature=[*signature, *chain.tf_signature()], reduce_retracing=True, autograph=False)


class _NoGradient(Exception):
    pass


BLACK_BOX_FIX = (
    "white-box attacks (fgsm, pgd, apgd, auto) need gradients: use a black-box attack ("
    + ", ".join(BLACK_BOX)
    + ", e.g. square:eps=8/255,queries=5000 or hsj:queries=1000), or remove layers without a gradient (argmax, rounding, "
    "thresholds, stop_gradient, lookups) from the model, or attack a differentiable copy of it"
)


NO_GRADIENT_FIX = "use a black-box attack, which needs only scores: square (e.g. --attack square:eps=8/255,queries=5000) or hsj (e.g. --attack hsj:queries=1000)"


def check_differentiable(detector: "Detector") -> None:
    """Raise a one-line RobustlabError saying why when the detector has no usable input gradient
    (an ONNX or Python-scorer detector has none by construction: the line names square and hsj)."""
    import tensorflow as tf

    h, w = detector.input_size
    thing = str(detector.spec.source or detector.spec.model)
    if not detector.differentiable:
        runs = {"onnx": "an ONNX model run by ONNX Runtime", "python": "a Python scorer"}.get(str(detector.info.get("format")), "a model run outside TensorFlow")
        raise RobustlabError(f"white-box attacks (fgsm, pgd, apgd, auto) need input gradients, and this detector is {runs}, which has none", thing=thing, fix=NO_GRADIENT_FIX)
    from robustlab._tf import gradient_kernel_hazard

    hazard = gradient_kernel_hazard(detector.model)
    if hazard:  # TensorFlow 2.21's oneDNN gradient kernel kills the process on this layer
        raise RobustlabError(f"{hazard}: TensorFlow's oneDNN CPU kernels crash on its gradient", thing=thing, fix="rerun with the environment variable TF_ENABLE_ONEDNN_OPTS=0")
    x = tf.constant(np.random.default_rng(0).random((2, h, w, 3), dtype=np.float32))
    fix = BLACK_BOX_FIX
    try:
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = detector.class_logits(x)
            loss = tf.reduce_sum(z[:, 1] - z[:, 0])
        g = tape.gradient(loss, x)
    except LookupError as exc:  # "No gradient defined for operation ..."
        text = " ".join(str(exc).split())[:200]
        raise RobustlabError(f"the detector is not differentiable: {text}", thing=thing, fix=fix) from None
    if g is None:
        raise RobustlabError("the detector is not differentiable: no gradient flows from its output back to the input image", thing=thing, fix=fix)
    if not bool(tf.reduce_all(tf.math.is_finite(g))):
        raise RobustlabError("the detector's input gradient is NaN or infinite", thing=thing, fix="check the model's numerics (a log of 0, a division by 0) and the spec's scale")


def art_classifier(detector: "Detector", *, compiled: bool = True) -> Any:
    """An ART ``TensorFlowV2Classifier`` over ``detector.class_logits``.

    Two logits, softmax cross-entropy from logits (summed over the batch, so per-image gradients
    are not scaled by 1/N), ``clip_values=(0, 1)``, input float32 (N, H, W, 3) RGB in [0, 1].
    ``compiled=True`` (cached on the detector) uses the ``tf.function`` gradient, traced and run
    once here (with the SSIM graph); ``compiled=False`` is ART's plain eager ``loss_gradient``.
    Raises RobustlabError for a non-differentiable detector.
    """
    import tensorflow as tf

    cache_name = "_robustlab_art_classifier"
    if compiled:
        cached = detector.__dict__.get(cache_name)  # lives as long as the detector does
        if cached is not None:
            return cached
    art = _art()
    check_differentiable(detector)
    h, w = detector.input_size
    loss = tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction="sum")
    model = DetectorLogits(detector)
    if not compiled:
        return art["TensorFlowV2Classifier"](model=model, nb_classes=2, input_shape=(h, w, 3), loss_object=loss, clip_values=(0.0, 1.0), preprocessing=None)
    try:
        clf = art["Compiled"](model, input_shape=(h, w, 3), loss_object=loss)
        clf._gradient.get_concrete_function()  # trace now: a missing gradient shows up here
    except _NoGradient as exc:
        raise RobustlabError(f"the detector is not differentiable: {exc}", thing=str(detector.spec.source or detector.spec.model), fix=BLACK_BOX_FIX) from None
    # run the graphs once on two tiny images: their first call (graph optimisation, ~0.1-0.2 s) is
    # set-up, paid here rather than by the first attacked batch
    warm = np.full((2, h, w, 3), 128, np.uint8)
    clf._gradient(tf.constant(warm, tf.float32) / 255.0, tf.constant([[1.0, 0.0], [0.0, 1.0]]))
    image_ssim(warm, warm)
    detector.__dict__[cache_name] = clf
    return clf


def apgd_classifier(detector: "Detector", loss: Loss) -> Any:
    """The compiled ART classifier APGD attacks: :class:`DecisionLogits` (argmax = the decision
    at the detector's threshold) with :class:`BinaryLoss` ``loss``; cached on the detector.
    Raises RobustlabError for a non-differentiable detector (naming the black-box attacks)."""
    cache_name = f"_robustlab_art_apgd_{loss.value}"
    cached = detector.__dict__.get(cache_name)
    if cached is not None:
        return cached
    art_classifier(detector)  # the differentiability checks and the warm-up
    h, w = detector.input_size
    clf = _art()["Compiled"](DecisionLogits(detector), input_shape=(h, w, 3), loss_object=BinaryLoss(loss))
    try:
        clf._gradient.get_concrete_function()
    except _NoGradient as exc:
        raise RobustlabError(f"the detector is not differentiable: {exc}", thing=str(detector.spec.source or detector.spec.model), fix=BLACK_BOX_FIX) from None
    detector.__dict__[cache_name] = clf
    return clf


class QueryCounter:
    """The detector as a black box: ``(x float32 (N, H, W, 3) in [0, 1]) -> numpy (N, 2)``
    :class:`DecisionLogits`, one compiled forward pass (no gradient is needed or taken), counting
    the images it was asked about (``images``)."""

    def __init__(self, detector: "Detector"):
        import tensorflow as tf

        h, w = detector.input_size
        logits = DecisionLogits(detector)
        forward = lambda x: logits(x, False)  # noqa: E731
        # numpy underneath (ONNX, a Python scorer): eager, so that its errors stay one-line RobustlabErrors
        self.forward = forward if not detector.differentiable else tf.function(forward, input_signature=[tf.TensorSpec((None, h, w, 3), tf.float32)], reduce_retracing=True, autograph=False)
        self.images = 0
        self.seconds = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        t = time.perf_counter()
        out = self.forward(tf.constant(np.asarray(x, np.float32))).numpy()
        self.images += len(x)
        self.seconds += time.perf_counter() - t
        return out


def blackbox_classifier(detector: "Detector") -> Any:
    """An ART ``BlackBoxClassifierNeuralNetwork`` over the detector's outputs only (scores, or
    decisions by their argmax), for Square and HopSkipJump; works on detectors without gradients.
    Cached on the detector; its :class:`QueryCounter` is ``clf.counter``."""
    cache_name = "_robustlab_art_blackbox"
    cached = detector.__dict__.get(cache_name)
    if cached is not None:
        return cached
    h, w = detector.input_size
    counter = QueryCounter(detector)
    counter(np.full((2, h, w, 3), 0.5, np.float32))  # trace once, here
    clf = _art()["BlackBox"](counter, input_shape=(h, w, 3), nb_classes=2, channels_first=False, clip_values=(0.0, 1.0))
    clf.counter = counter
    detector.__dict__[cache_name] = clf
    return clf


def _art_attack(clf: Any, spec: AttackSpec, batch_size: int) -> Any:
    """ART's attack for ``spec``, with the whole batch as one ART batch.

    FGSM gets eps as a float32 0-d array (ART accepts arrays): with a Python float ART's numpy
    projection and step broadcast eps to a float64 array and compute in float64 (a quarter of its
    numpy time, same result after delivery). PGD runs ART's TensorFlow implementation (tf ops).
    APGD runs ART's ``AutoProjectedGradientDescent`` with the estimator's own loss (``BinaryLoss``),
    initial step ``2 * eps``, ``restarts`` random starts; Square ART's ``SquareAttack`` with
    ``queries`` iterations (one candidate per image each, margin loss on the decision logits).
    """
    art = _art()
    if spec.method is AttackMethod.FGSM:
        eps = np.asarray(spec.eps, dtype=np.float32)
        return art["FGSM"](clf, norm=spec.norm.order, eps=eps, eps_step=eps, targeted=False, num_random_init=0, batch_size=batch_size, minimal=False)
    if spec.method is AttackMethod.APGD:
        return art["APGD"](
            clf,
            norm=spec.norm.order,
            eps=float(spec.eps),
            eps_step=float(spec.step_size),
            max_iter=int(spec.steps),
            targeted=False,
            nb_random_init=int(spec.restarts),
            batch_size=batch_size,
            loss_type=None,
            verbose=False,
        )
    if spec.method is AttackMethod.SQUARE:
        return art["Square"](clf, norm=spec.norm.order, max_iter=int(spec.queries), eps=float(spec.eps), p_init=0.8, nb_restarts=1, batch_size=batch_size, verbose=False)
    return art["PGD"](
        clf,
        norm=spec.norm.order,
        eps=spec.eps,
        eps_step=spec.step_size,
        max_iter=spec.steps,
        targeted=False,
        num_random_init=1 if spec.random_start else 0,
        batch_size=batch_size,
        verbose=False,
    )


def _hsj_budget(queries: int) -> tuple[int, int, int]:
    """(max_iter, init_eval, max_eval) of HopSkipJump whose expected decisions per image fit
    ``queries``: each iteration estimates the gradient from ``min(init_eval * sqrt(i + 1),
    max_eval)`` decisions plus about 25 for the binary and step-size searches."""
    init_eval = max(5, min(100, queries // 20))
    max_eval = max(init_eval, queries // 5)
    used, iterations = 25, 0
    while iterations < MAX_HSJ_ITERATIONS:
        cost = min(int(init_eval * np.sqrt(iterations + 1)), max_eval) + 25
        if used + cost > queries:
            break
        used += cost
        iterations += 1
    return max(1, iterations), init_eval, max_eval


MAX_HSJ_ITERATIONS = 200
HSJ_INIT_TRIALS = 100  # random uniform images tried per image for a starting point (as ART's init_size)
HSJ_SCALES = (1.0, 1.05, 1.1, 1.25, 1.5, 2.0)  # after uint8 rounding: the first scale of the perturbation that stays adversarial


def _hsj(clf: Any, x01: np.ndarray, labels: np.ndarray, x: np.ndarray, spec: AttackSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """HopSkipJump, one image at a time -> (delivered uint8 (N, H, W, 3), decisions per image int64 (N,)).

    Only images the detector gets right are attacked (ART's HSJ attacks the prediction, which for
    them is the true label); the others are delivered unchanged. The starting point is a seeded
    uniform random image the detector misclassifies (ART would draw it from an unseeded generator);
    without one within 100 tries the image is delivered unchanged. After uint8 delivery the
    perturbation is scaled up by the first of 1, 1.05 ... 2 that keeps the image adversarial
    (within eps when one is given). Every decision is counted.
    """
    art = _art()
    counter = clf.counter
    max_iter, init_eval, max_eval = _hsj_budget(int(spec.queries))
    norm: Any = 2 if spec.norm.order == 2 else np.inf
    attack = art["HSJ"](clf, batch_size=64, targeted=False, norm=norm, max_iter=max_iter, max_eval=max_eval, init_eval=init_eval, init_size=HSJ_INIT_TRIALS, verbose=False)
    images = x.copy()
    queries = np.zeros(len(x), np.int64)
    for i in range(len(x)):
        start = counter.images
        xi = x01[i : i + 1]
        if int(np.argmax(clf.predict(xi), axis=1)[0]) != int(labels[i]):
            queries[i] = counter.images - start
            continue  # already wrong: nothing to attack
        init = None
        for _ in range(HSJ_INIT_TRIALS // 10):
            trial = rng.uniform(0.0, 1.0, (10, *xi.shape[1:])).astype(np.float32)
            wrong = np.flatnonzero(np.argmax(clf.predict(trial), axis=1) != labels[i])
            if len(wrong):
                init = trial[wrong[:1]]
                break
        if init is None:
            queries[i] = counter.images - start
            continue
        adv = np.asarray(attack.generate(xi, x_adv_init=init), np.float32)
        for scale in HSJ_SCALES:
            candidate = deliver(x[i : i + 1], np.clip(xi + scale * (adv - xi), 0.0, 1.0), spec)
            if int(np.argmax(clf.predict(candidate.astype(np.float32) / 255.0), axis=1)[0]) != int(labels[i]):
                images[i] = candidate[0]
                break
        else:
            images[i] = deliver(x[i : i + 1], adv, spec)[0]
        queries[i] = counter.images - start
    return images, queries


def run_attack(detector: "Detector", x_uint8: np.ndarray, y: np.ndarray, spec: AttackSpec, rng: np.random.Generator) -> AttackResult:
    """Attack a batch with ART and do the bookkeeping every attack gets.

    ``x_uint8`` uint8 (N, H, W, 3) at the detector's input size; ``y`` int (N,) **true** labels,
    1 for the detector's positive class (passed to ART: never replaced by predictions); ``rng``
    seeds the attack's randomness (PGD's and APGD's random start, Square's squares: ART draws them
    from numpy's and Python's global generators, which are seeded from ``rng`` for the call and
    restored afterwards; HopSkipJump's starting points come from ``rng`` itself), so the same seed
    gives the same bytes. White-box attacks (fgsm, pgd, apgd) use the compiled gradient (with
    ``spec.eot``: its mean over seeded draws of the laundering chain, from ``rng``); square
    and hsj only the detector's outputs (their queries are counted).
    Returns an :class:`AttackResult` (with the success check's scores and the time per stage).
    """
    import random

    from robustlab.metrics import predict

    x = np.asarray(x_uint8)
    h, w = detector.input_size
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, 3):
        raise ValueError(f"expected uint8 (N, {h}, {w}, 3) images, got {x.dtype} {x.shape}")
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    if labels.shape[0] != x.shape[0] or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"expected {x.shape[0]} labels in {{0, 1}}, got {labels.shape[0]}")
    if spec.method is AttackMethod.AUTO:
        raise ValueError("auto is a cascade of attacks: run it through robustlab.attacks.cascade.AutoVariant")
    if len(x) == 0:
        empty = np.zeros((0,), np.float64)
        return AttackResult(x.copy(), np.zeros((0,), bool), empty, empty, empty, empty)
    white = spec.white_box
    if spec.method is AttackMethod.APGD:
        clf = apgd_classifier(detector, spec.loss)
    elif white:
        clf = art_classifier(detector)
    else:
        clf = blackbox_classifier(detector)
    x01 = np.divide(x, np.float32(255.0), dtype=np.float32)  # as x.astype(float32) / 255, one pass
    onehot = np.eye(2, dtype=np.float32)[labels]
    state = np.random.get_state()
    py_state = random.getstate()
    np.random.seed(int(rng.integers(0, 2**32, dtype=np.uint64)))
    random.seed(int(rng.integers(0, 2**32, dtype=np.uint64)))
    queries = None
    if white:
        clf.zero_gradient = np.ones(len(x), dtype=bool)
        clf.gradient_seconds = 0.0
        if spec.eot is not None:  # the EOT draws: their own stream of the attack's rng
            clf.eot = (spec.eot, np.random.default_rng(int(rng.integers(0, 2**63, dtype=np.uint64))))
    else:
        clf.counter.seconds = 0.0
    t0 = time.perf_counter()
    try:
        if spec.method is AttackMethod.HSJ:
            images, queries = _hsj(clf, x01, labels, x, spec, rng)
            x_adv = None
        else:
            x_adv = np.asarray(_art_attack(clf, spec, batch_size=len(x)).generate(x01, y=onehot))
        zero = clf.zero_gradient if white else None
    finally:
        if white:
            clf.zero_gradient = None
            clf.eot = None
        np.random.set_state(state)
        random.setstate(py_state)
    t1 = time.perf_counter()
    if x_adv is not None:
        images = deliver(x, x_adv, spec)
    linf, l2, psnr = _measure(x, images)
    t2 = time.perf_counter()
    ssim = image_ssim(x, images)
    t3 = time.perf_counter()
    scores = detector.scores(images)  # the success check; evaluate reuses these scores
    success = predict(scores, detector.threshold) != labels
    t4 = time.perf_counter()
    inner = min(clf.gradient_seconds if white else clf.counter.seconds, t1 - t0)
    seconds = {"gradient" if white else "queries": inner, "art_other": t1 - t0 - inner, "deliver_and_norms": t2 - t1, "ssim": t3 - t2, "success_check": t4 - t3}
    return AttackResult(images, success, linf, l2, psnr, ssim, scores, None if zero is None else np.asarray(zero, bool), seconds, queries)
