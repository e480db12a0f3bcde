"""FGSM / PGD as TensorFlow ops: the in-graph backend of :class:`~robustlab.attacks.spec.AttackSpec`.

The same spec type the ART backend (:mod:`robustlab.attacks.art_backend`) evaluates with; this
backend builds the attack inside a ``tf.function`` so that fine-tuning can attack every batch
against the *current* weights without leaving the graph. L-inf only.

* ``AttackSpec(fgsm, eps)``: one signed-gradient step of size ``eps`` from the clean image;
* ``AttackSpec(pgd, eps, steps, step, random_start)``: ``steps`` signed-gradient steps of size
  ``spec.step_size``, each projected back to the eps-ball and to [0, 1], from a uniform random
  start in the ball when ``random_start`` (one step of ``1.25 eps`` from a random start is the
  "fast adversarial training" FGSM-RS of Wong et al., 2020).

Gradients are those of the cross-entropy of ``detector.class_logits(x01, training=False)`` with
respect to ``x01`` float32 (N, H, W, 3) RGB in [0, 1], taken with the **true** labels.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.attacks.spec import AttackSpec, Norm
from robustlab.errors import RobustlabError


def cross_entropy(logits: Any, y: Any, smooth: float = 0.0) -> Any:
    """float32 (N,) softmax cross-entropy of (N, 2) logits against int32 labels (N,), with label smoothing."""
    import tensorflow as tf

    onehot = tf.one_hot(y, 2, dtype=tf.float32)
    if smooth:
        onehot = onehot * (1.0 - smooth) + smooth / 2.0
    return tf.nn.softmax_cross_entropy_with_logits(onehot, logits)


def check_graph_spec(spec: AttackSpec) -> AttackSpec:
    """``spec`` when this backend can run it (L-inf), else a one-line RobustlabError."""
    if spec.norm is not Norm.LINF:
        raise RobustlabError(f"the in-graph attack backend is L-inf only, not norm={spec.norm.value}", fix="use norm=inf for a training attack")
    return spec


def attack_graph(detector: Any, x01: Any, y: Any, seed: Any, spec: AttackSpec) -> Any:
    """The L-inf attack ``spec`` against the detector's current weights, as TensorFlow ops.

    ``x01`` float32 (N, H, W, 3) RGB in [0, 1]; ``y`` int32 (N,) positive-class labels (true
    labels); ``seed`` int32 (2,) for the random start (stateless: the same seed, the same start).
    Returns float32 (N, H, W, 3) in [0, 1] with ``|x' - x|_inf <= eps``; no gradient flows back.
    Usable inside ``tf.function`` (a PGD of many steps is one ``tf.while_loop``, traced once).
    """
    import tensorflow as tf

    check_graph_spec(spec)
    eps, steps, step = float(spec.eps), int(spec.steps), float(spec.step_size)
    if spec.random_start:
        delta = tf.random.stateless_uniform(tf.shape(x01), seed, -eps, eps, dtype=tf.float32)
        x_adv = tf.clip_by_value(x01 + delta, 0.0, 1.0)
    else:
        x_adv = x01

    def one_step(x_cur: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x_cur)
            loss = tf.reduce_sum(cross_entropy(detector.class_logits(x_cur, training=False), y))
        grad = tape.gradient(loss, x_cur)
        x_new = x_cur + step * tf.sign(grad)
        return tf.clip_by_value(tf.clip_by_value(x_new, x01 - eps, x01 + eps), 0.0, 1.0)

    if steps == 1:
        x_adv = one_step(x_adv)
    else:
        _, x_adv = tf.while_loop(lambda i, _x: i < steps, lambda i, x_cur: (i + 1, one_step(x_cur)), (tf.constant(0), x_adv))
    return tf.stop_gradient(x_adv)


def adversarial_examples(detector: Any, x_uint8: np.ndarray, y: np.ndarray, spec: AttackSpec, *, seed: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``spec`` on one batch outside a training step.

    ``x_uint8`` uint8 (N, H, W, 3) at the detector's input size; ``y`` (N,) positive-class labels.
    Returns float32 (N, H, W, 3) in [0, 1], not quantized, made against the current weights.
    """
    import tensorflow as tf

    x01 = tf.constant(np.asarray(x_uint8, np.float32) / 255.0)
    out = attack_graph(detector, x01, tf.constant(np.asarray(y, np.int32)), tf.constant(np.asarray(seed, np.int32)), spec)
    return np.asarray(out, np.float32)
