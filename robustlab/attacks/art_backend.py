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
from robustlab.attacks.spec import AttackMethod, AttackSpec
from robustlab.errors import RobustlabError

if TYPE_CHECKING:  # pragma: no cover
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
            from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
            from art.estimators.classification import TensorFlowV2Classifier
    finally:
        logging.config.dictConfig = dict_config  # type: ignore[assignment]
    return {"FGSM": FastGradientMethod, "PGD": ProjectedGradientDescent, "TensorFlowV2Classifier": TensorFlowV2Classifier, "Compiled": _compiled_class(TensorFlowV2Classifier)}


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
            self.zero_gradient: np.ndarray | None = None
            self.gradient_seconds = 0.0  # time spent in the compiled gradient (for the stage timings)

        def loss_gradient(self, x: Any, y: Any, training_mode: bool = False, **kwargs: Any) -> Any:
            if training_mode:
                return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
            t = time.perf_counter()
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


class _NoGradient(Exception):
    pass


def check_differentiable(detector: "Detector") -> None:
    """Raise a one-line RobustlabError saying why when the detector has no usable input gradient."""
    import tensorflow as tf

    h, w = detector.input_size
    thing = str(detector.spec.source or detector.spec.model)
    from robustlab._tf import gradient_kernel_hazard

    hazard = gradient_kernel_hazard(detector.model)
    if hazard:  # TensorFlow 2.21's oneDNN gradient kernel kills the process on this layer
        raise RobustlabError(f"{hazard}: TensorFlow's oneDNN CPU kernels crash on its gradient", thing=thing, fix="rerun with the environment variable TF_ENABLE_ONEDNN_OPTS=0")
    x = tf.constant(np.random.default_rng(0).random((2, h, w, 3), dtype=np.float32))
    fix = "attacks need gradients: remove layers without one (argmax, rounding, thresholds, stop_gradient, lookups) from the model, or attack a differentiable copy of it"
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
        raise RobustlabError(f"the detector is not differentiable: {exc}", thing=str(detector.spec.source or detector.spec.model), fix="attacks need gradients") from None
    # run the graphs once on two tiny images: their first call (graph optimisation, ~0.1-0.2 s) is
    # set-up, paid here rather than by the first attacked batch
    warm = np.full((2, h, w, 3), 128, np.uint8)
    clf._gradient(tf.constant(warm, tf.float32) / 255.0, tf.constant([[1.0, 0.0], [0.0, 1.0]]))
    image_ssim(warm, warm)
    detector.__dict__[cache_name] = clf
    return clf


def _art_attack(clf: Any, spec: AttackSpec, batch_size: int) -> Any:
    """ART's attack for ``spec``, with the whole batch as one ART batch.

    FGSM gets eps as a float32 0-d array (ART accepts arrays): with a Python float ART's numpy
    projection and step broadcast eps to a float64 array and compute in float64 (a quarter of its
    numpy time, same result after delivery). PGD runs ART's TensorFlow implementation (tf ops).
    """
    art = _art()
    if spec.method is AttackMethod.FGSM:
        eps = np.asarray(spec.eps, dtype=np.float32)
        return art["FGSM"](clf, norm=spec.norm.order, eps=eps, eps_step=eps, targeted=False, num_random_init=0, batch_size=batch_size, minimal=False)
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


def run_attack(detector: "Detector", x_uint8: np.ndarray, y: np.ndarray, spec: AttackSpec, rng: np.random.Generator) -> AttackResult:
    """Attack a batch with ART and do the bookkeeping every attack gets.

    ``x_uint8`` uint8 (N, H, W, 3) at the detector's input size; ``y`` int (N,) **true** labels,
    1 for the detector's positive class (passed to ART: never replaced by predictions); ``rng``
    seeds PGD's random start (ART draws it from numpy's global generator, which is seeded from
    ``rng`` for the call and restored afterwards, so the same seed gives the same bytes).
    Returns an :class:`AttackResult` (with the success check's scores and the time per stage).
    """
    from robustlab.metrics import predict

    x = np.asarray(x_uint8)
    h, w = detector.input_size
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, 3):
        raise ValueError(f"expected uint8 (N, {h}, {w}, 3) images, got {x.dtype} {x.shape}")
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    if labels.shape[0] != x.shape[0] or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"expected {x.shape[0]} labels in {{0, 1}}, got {labels.shape[0]}")
    if len(x) == 0:
        empty = np.zeros((0,), np.float64)
        return AttackResult(x.copy(), np.zeros((0,), bool), empty, empty, empty, empty)
    clf = art_classifier(detector)
    attack = _art_attack(clf, spec, batch_size=len(x))
    x01 = np.divide(x, np.float32(255.0), dtype=np.float32)  # as x.astype(float32) / 255, one pass
    onehot = np.eye(2, dtype=np.float32)[labels]
    state = np.random.get_state()
    np.random.seed(int(rng.integers(0, 2**32, dtype=np.uint64)))
    clf.zero_gradient = np.ones(len(x), dtype=bool)
    clf.gradient_seconds = 0.0
    t0 = time.perf_counter()
    try:
        x_adv = np.asarray(attack.generate(x01, y=onehot))
        zero = clf.zero_gradient
    finally:
        clf.zero_gradient = None
        np.random.set_state(state)
    t1 = time.perf_counter()
    images = deliver(x, x_adv, spec)
    linf, l2, psnr = _measure(x, images)
    t2 = time.perf_counter()
    ssim = image_ssim(x, images)
    t3 = time.perf_counter()
    scores = detector.scores(images)  # the success check; evaluate reuses these scores
    success = predict(scores, detector.threshold) != labels
    t4 = time.perf_counter()
    gradient = min(clf.gradient_seconds, t1 - t0)
    seconds = {"gradient": gradient, "art_other": t1 - t0 - gradient, "deliver_and_norms": t2 - t1, "ssim": t3 - t2, "success_check": t4 - t3}
    return AttackResult(images, success, linf, l2, psnr, ssim, scores, None if zero is None else np.asarray(zero, bool), seconds)
