"""The compiled training steps: in-graph FGSM/PGD examples mixed into each batch, and the update.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from robustlab.errors import RobustlabError
from robustlab.training.config import (
    FinetuneConfig,
    TrainAttack,
    check_trainable,
    class_weights,
    make_optimizer,
    select_trainable,
)


def _seed_generators(model: Any, seed: int) -> None:
    """Dropout & co. draw from per-layer seed generators; seed them from ``seed`` (not from the file)."""
    k = 0
    for v in model.variables:
        if "seed_generator_state" in v.path:
            v.assign(np.asarray([(int(seed) * 1_000_003 + 7919 * k + 17) % (2**31 - 1), 0], dtype=v.dtype))
            k += 1


# --------------------------------------------------------------------------- graph functions


def _ce(logits: Any, y: Any, smooth: float = 0.0) -> Any:
    """Per-sample softmax cross-entropy of (N, 2) logits against int labels (N,), label smoothing."""
    import tensorflow as tf

    onehot = tf.one_hot(y, 2, dtype=tf.float32)
    if smooth:
        onehot = onehot * (1.0 - smooth) + smooth / 2.0
    return tf.nn.softmax_cross_entropy_with_logits(onehot, logits)


def attack_plan(attack: "TrainAttack | str", eps: float, pgd_steps: int = 10, pgd_step: float | None = None) -> tuple[TrainAttack, int, float]:
    """``(kind, steps, step size)`` of a training attack: fgsm (1, eps), fgsm-rs (1, 1.25 eps), pgd."""
    kind = TrainAttack.parse(attack, what="training attack")
    if kind is TrainAttack.FGSM:
        return kind, 1, float(eps)
    if kind is TrainAttack.FGSM_RS:
        return kind, 1, 1.25 * float(eps)
    return kind, int(pgd_steps), float(pgd_step if pgd_step is not None else 2.5 * eps / pgd_steps)


def attack_graph(detector: Any, x01: Any, y: Any, seed: Any, eps: float, plan: tuple[TrainAttack, int, float]) -> Any:
    """L-inf attack against the detector's *current* weights, as TensorFlow ops (usable in tf.function).

    ``x01`` float32 (N, H, W, 3) RGB in [0, 1]; ``y`` int32 (N,) positive-class labels; ``seed``
    int32 (2,) for the random start (stateless: the same seed gives the same start). Gradients of
    the cross-entropy of ``detector.class_logits(x, training=False)`` w.r.t. the [0, 1] input.
    Returns float32 (N, H, W, 3) in [0, 1] with ``|x' - x|_inf <= eps`` (no gradient flows back).
    """
    import tensorflow as tf

    kind, steps, step = plan
    eps = float(eps)
    if kind is TrainAttack.FGSM:
        x_adv = x01
    else:
        delta = tf.random.stateless_uniform(tf.shape(x01), seed, -eps, eps, dtype=tf.float32)
        x_adv = tf.clip_by_value(x01 + delta, 0.0, 1.0)

    def one_step(x_cur: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x_cur)
            loss = tf.reduce_sum(_ce(detector.class_logits(x_cur, training=False), y))
        grad = tape.gradient(loss, x_cur)
        x_new = x_cur + step * tf.sign(grad)
        return tf.clip_by_value(tf.clip_by_value(x_new, x01 - eps, x01 + eps), 0.0, 1.0)

    if steps == 1:
        x_adv = one_step(x_adv)
    else:  # a graph loop, so a PGD of many steps traces one gradient graph, not many
        _, x_adv = tf.while_loop(lambda i, _x: i < steps, lambda i, x_cur: (i + 1, one_step(x_cur)), (tf.constant(0), x_adv))
    return tf.stop_gradient(x_adv)


def adversarial_examples(
    detector: Any,
    x_uint8: np.ndarray,
    y: np.ndarray,
    *,
    attack: "TrainAttack | str" = TrainAttack.FGSM,
    eps: float = 8 / 255,
    pgd_steps: int = 10,
    pgd_step: float | None = None,
    seed: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """The training attack on a batch, outside training: uint8 (N, H, W, 3) + positive-class labels
    -> float32 (N, H, W, 3) in [0, 1] (not quantized), made against the detector's current weights."""
    import tensorflow as tf

    x01 = tf.constant(np.asarray(x_uint8, np.float32) / 255.0)
    plan = attack_plan(attack, eps, pgd_steps, pgd_step)
    out = attack_graph(detector, x01, tf.constant(np.asarray(y, np.int32)), tf.constant(np.asarray(seed, np.int32)), eps, plan)
    return np.asarray(out, np.float32)


class TrainingSteps:
    """The compiled pieces of one run (see :func:`prepare_training`): the training pass
    (:meth:`train_epoch`; ``plain_step`` / ``mixed_step`` per batch), ``val_step`` and ``guard_step``.

    Batches are uint8 (B, H, W, 3) at the detector's input size with int32 positive-class labels;
    the tf.functions take any B, so the last, smaller batch does not retrace.
    """

    def __init__(self, detector: Any, config: FinetuneConfig, optimizer: Any, class_w: np.ndarray):
        import tensorflow as tf

        self.detector = detector
        self.config = config
        self.optimizer = optimizer
        h, w = detector.input_size
        model = detector.model
        variables = list(model.trainable_variables)
        optimizer.build(variables)
        self.variables = variables
        cw = tf.constant(class_w, tf.float32)
        smoothing = float(config.label_smoothing)
        eps = float(config.eps)
        ce = _ce

        def attack(x01: Any, y: Any, seed: Any, plan: tuple[TrainAttack, int, float]) -> Any:
            return attack_graph(detector, x01, y, seed, eps, plan)

        train_attack = attack_plan(config.attack, eps, config.pgd_steps, config.pgd_step)
        kind = train_attack[0]
        self.train_attack_desc = f"{kind} (steps={train_attack[1]}, step={train_attack[2]:.5g}, eps={eps:.5g})"
        x_spec = tf.TensorSpec((None, h, w, 3), tf.uint8)
        y_spec = tf.TensorSpec((None,), tf.int32)
        seed_spec = tf.TensorSpec((2,), tf.int32)

        def apply_grads(x01: Any, y: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                logits = detector.class_logits(x01, training=True)
                per = ce(logits, y, smoothing) * tf.gather(cw, y)
                loss = tf.reduce_sum(per) / tf.maximum(tf.reduce_sum(tf.gather(cw, y)), 1e-12)
                reg = model.losses
                if reg:
                    loss = loss + tf.add_n([tf.cast(r, tf.float32) for r in reg])
            grads = tape.gradient(loss, variables)
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            if not pairs:
                raise RobustlabError("no gradient reaches the trainable weights", thing=str(detector.spec.model), fix="check --trainable; the chosen layers are not on the path to the output")
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y), tf.float32))
            return loss, correct

        @tf.function(input_signature=[x_spec, y_spec], reduce_retracing=True)
        def plain_step(x: Any, y: Any) -> tuple[Any, Any]:
            return apply_grads(tf.cast(x, tf.float32) / 255.0, y)

        @tf.function(input_signature=[x_spec, y_spec, tf.TensorSpec((None,), tf.int32), seed_spec], reduce_retracing=True)
        def mixed_step(x: Any, y: Any, adv_idx: Any, seed: Any) -> tuple[Any, Any]:
            x01 = tf.cast(x, tf.float32) / 255.0
            sub = tf.gather(x01, adv_idx)
            adv = attack(sub, tf.gather(y, adv_idx), seed, train_attack)
            x01 = tf.tensor_scatter_nd_update(x01, adv_idx[:, None], adv)
            return apply_grads(x01, y)

        def correct_and_loss(x01: Any, y: Any) -> tuple[Any, Any]:
            logits = detector.class_logits(x01, training=False)
            loss = tf.reduce_sum(ce(logits, y, smoothing))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y), tf.float32))
            return loss, correct

        @tf.function(input_signature=[x_spec, y_spec, seed_spec], reduce_retracing=True)
        def val_step(x: Any, y: Any, seed: Any) -> tuple[Any, Any, Any, Any]:
            x01 = tf.cast(x, tf.float32) / 255.0
            loss, correct = correct_and_loss(x01, y)
            adv_loss, adv_correct = correct_and_loss(attack(x01, y, seed, train_attack), y)
            return loss, correct, adv_loss, adv_correct

        pgd_eval = attack_plan(TrainAttack.PGD, eps, config.pgd_steps, config.pgd_step)

        @tf.function(input_signature=[x_spec, y_spec, seed_spec], reduce_retracing=True)
        def guard_step(x: Any, y: Any, seed: Any) -> tuple[Any, Any, Any]:
            x01 = tf.cast(x, tf.float32) / 255.0
            _, clean = correct_and_loss(x01, y)
            _, fgsm = correct_and_loss(attack(x01, y, seed, attack_plan(TrainAttack.FGSM, eps)), y)
            _, pgd = correct_and_loss(attack(x01, y, seed, pgd_eval), y)
            return clean, fgsm, pgd

        self.plain_step = plain_step
        self.mixed_step = mixed_step
        self.val_step = val_step
        self.guard_step = guard_step
        self.attack = attack
        self.train_attack = train_attack

    def train_epoch(self, train_set: Any, epoch: int, *, progress: bool = False) -> dict[str, float]:
        """One pass over TRAIN (streamed in a seeded order for ``epoch``), ``ratio`` of each batch attacked.

        Returns ``{"loss", "accuracy", "adv_share", "n"}`` over the images seen. All randomness
        (order, which images are attacked, random starts) is keyed by ``(seed, epoch, step)``.
        """
        config, det = self.config, self.detector
        positive = det.positive
        order = np.random.default_rng([config.seed, 1, epoch]).permutation(len(train_set))
        loss_sum = correct = n_seen = n_adv = 0.0
        batches = train_set.batches(det.input_size, method=det.spec.preprocessing, batch_size=config.batch_size, indices=order)
        from robustlab.progress import batch_progress

        for step, batch in enumerate(batch_progress(batches, len(train_set), f"epoch {epoch}/{config.epochs}", progress)):
            b = len(batch.idx)
            if b == 0:
                continue
            y = (batch.y if positive == "fake" else 1 - batch.y).astype(np.int32)
            k = int(round(config.ratio * b))
            if k > 0:
                rng = np.random.default_rng([config.seed, 2, epoch, step])
                adv_idx = np.sort(rng.choice(b, size=k, replace=False)).astype(np.int32)
                seed = np.asarray([config.seed, epoch * 1_000_003 + step], np.int32)
                loss, corr = self.mixed_step(batch.x, y, adv_idx, seed)
            else:
                loss, corr = self.plain_step(batch.x, y)
            loss_sum += float(loss) * b
            correct += float(corr)
            n_seen += b
            n_adv += k
        n = max(n_seen, 1.0)
        return {"loss": loss_sum / n, "accuracy": correct / n, "adv_share": n_adv / n, "n": n_seen}


def prepare_training(detector: Any, config: FinetuneConfig, train_set: Any) -> tuple[TrainingSteps, dict[str, Any]]:
    """Make ``detector`` (a private copy: it is changed) ready to train -> (steps, what trains).

    Checks the model can be trained, sets the trainable layers, class weights from TRAIN's labels,
    the optimizer, and seeds Keras and the model's seed generators (Dropout) from ``config.seed``.
    """
    import keras

    check_trainable(detector)
    chosen = select_trainable(detector, config.trainable, config.train_bn)
    class_w = class_weights(config.class_weight, train_set.labels, detector.positive)
    optimizer = make_optimizer(config.optimizer, config.lr)
    keras.utils.set_random_seed(config.seed)
    _seed_generators(detector.model, config.seed)
    return TrainingSteps(detector, config, optimizer, class_w), chosen
