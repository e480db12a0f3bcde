"""The compiled training steps: in-graph FGSM/PGD examples mixed into each batch, and the update.

The attacks are :class:`~robustlab.attacks.spec.AttackSpec` s run by the in-graph backend
(:mod:`robustlab.attacks.tf_backend`); :meth:`FinetuneConfig.attack_spec` builds them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from robustlab.attacks.tf_backend import attack_graph, cross_entropy
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


class TrainingDiverged(RobustlabError):
    """The training loss became NaN or infinite: the run stops (exit 2); nothing is published."""

    def __init__(self, epoch: int, step: int, loss: float, thing: str | None = None):
        super().__init__(
            f"training diverged: the loss is {loss} at epoch {epoch}, batch {step + 1}",
            thing=thing,
            fix="lower --lr (e.g. --lr 1e-4), or use --optimizer adam; the input model is unchanged",
        )


class TrainingSteps:
    """The compiled pieces of one run (see :func:`prepare_training`): the training pass
    (:meth:`train_epoch`; ``plain_step`` / ``mixed_step`` per batch), ``val_step`` and ``guard_step``.

    Batches are uint8 (B, H, W, 3) at the detector's input size with int32 positive-class labels;
    the tf.functions take any B, so the last, smaller batch does not retrace.
    """

    def __init__(self, detector: Any, config: FinetuneConfig, optimizer: Any, class_w: np.ndarray):
        self.detector = detector
        self.config = config
        self.optimizer = optimizer
        self.variables = list(detector.model.trainable_variables)
        optimizer.build(self.variables)
        self.train_spec = config.attack_spec()
        spec = self.train_spec
        self.train_attack_desc = f"{config.attack} (steps={spec.steps}, step={spec.step_size:.5g}, eps={float(config.eps):.5g})"
        self.plain_step, self.mixed_step = self._training_functions(class_w)
        self.val_step, self.guard_step = self._evaluation_functions()

    def _specs(self) -> tuple[Any, Any, Any]:
        """TensorSpecs of a batch: uint8 (None, H, W, 3) images, int32 (None,) labels, int32 (2,) seed."""
        import tensorflow as tf

        h, w = self.detector.input_size
        return tf.TensorSpec((None, h, w, 3), tf.uint8), tf.TensorSpec((None,), tf.int32), tf.TensorSpec((2,), tf.int32)

    def _training_functions(self, class_w: np.ndarray) -> tuple[Any, Any]:
        """``plain_step(x, y)`` and ``mixed_step(x, y, adv_idx, seed)``: one update -> (loss, correct)."""
        import tensorflow as tf

        detector, optimizer, variables = self.detector, self.optimizer, self.variables
        model = detector.model
        cw = tf.constant(class_w, tf.float32)
        smoothing = float(self.config.label_smoothing)
        train_spec = self.train_spec
        x_spec, y_spec, seed_spec = self._specs()

        def apply_grads(x01: Any, y: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                logits = detector.class_logits(x01, training=True)
                per = cross_entropy(logits, y, smoothing) * tf.gather(cw, y)
                loss = tf.reduce_sum(per) / tf.maximum(tf.reduce_sum(tf.gather(cw, y)), 1e-12)
                reg = model.losses
                if reg:
                    loss = loss + tf.add_n([tf.cast(r, tf.float32) for r in reg])
            grads = tape.gradient(loss, variables)
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            if not pairs:
                raise RobustlabError("no gradient reaches the trainable weights", thing=str(detector.spec.model), fix="check --trainable; the chosen layers are not on the path to the output")
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return loss, _correct(logits, y)

        @tf.function(input_signature=[x_spec, y_spec], reduce_retracing=True)
        def plain_step(x: Any, y: Any) -> tuple[Any, Any]:
            return apply_grads(tf.cast(x, tf.float32) / 255.0, y)

        @tf.function(input_signature=[x_spec, y_spec, tf.TensorSpec((None,), tf.int32), seed_spec], reduce_retracing=True)
        def mixed_step(x: Any, y: Any, adv_idx: Any, seed: Any) -> tuple[Any, Any]:
            x01 = tf.cast(x, tf.float32) / 255.0
            adv = attack_graph(detector, tf.gather(x01, adv_idx), tf.gather(y, adv_idx), seed, train_spec)
            x01 = tf.tensor_scatter_nd_update(x01, adv_idx[:, None], adv)
            return apply_grads(x01, y)

        return plain_step, mixed_step

    def _evaluation_functions(self) -> tuple[Any, Any]:
        """``val_step(x, y, seed)`` -> (loss, correct, adv_loss, adv_correct) under the training attack;
        ``guard_step(x, y, seed)`` -> correct (clean, FGSM, PGD) at eps. Sums over the batch."""
        import tensorflow as tf

        detector, config = self.detector, self.config
        smoothing = float(config.label_smoothing)
        train_spec, fgsm, pgd = self.train_spec, config.attack_spec(TrainAttack.FGSM), config.attack_spec(TrainAttack.PGD)
        x_spec, y_spec, seed_spec = self._specs()

        def loss_and_correct(x01: Any, y: Any) -> tuple[Any, Any]:
            logits = detector.class_logits(x01, training=False)
            return tf.reduce_sum(cross_entropy(logits, y, smoothing)), _correct(logits, y)

        @tf.function(input_signature=[x_spec, y_spec, seed_spec], reduce_retracing=True)
        def val_step(x: Any, y: Any, seed: Any) -> tuple[Any, Any, Any, Any]:
            x01 = tf.cast(x, tf.float32) / 255.0
            loss, correct = loss_and_correct(x01, y)
            adv_loss, adv_correct = loss_and_correct(attack_graph(detector, x01, y, seed, train_spec), y)
            return loss, correct, adv_loss, adv_correct

        @tf.function(input_signature=[x_spec, y_spec, seed_spec], reduce_retracing=True)
        def guard_step(x: Any, y: Any, seed: Any) -> tuple[Any, Any, Any]:
            x01 = tf.cast(x, tf.float32) / 255.0
            _, clean = loss_and_correct(x01, y)
            _, fgsm_correct = loss_and_correct(attack_graph(detector, x01, y, seed, fgsm), y)
            _, pgd_correct = loss_and_correct(attack_graph(detector, x01, y, seed, pgd), y)
            return clean, fgsm_correct, pgd_correct

        return val_step, guard_step

    def train_epoch(self, train_set: Any, epoch: int, *, progress: bool = False) -> dict[str, float]:
        """One pass over TRAIN (streamed in a seeded order for ``epoch``), ``ratio`` of each batch attacked.

        Returns ``{"loss", "accuracy", "adv_share", "n"}`` over the images seen. All randomness
        (order, which images are attacked, random starts) is keyed by ``(seed, epoch, step)``.
        Raises :class:`TrainingDiverged` at the first batch whose loss is NaN or infinite.
        """
        config, det = self.config, self.detector
        positive = det.positive
        order = np.random.default_rng([config.seed, 1, epoch]).permutation(len(train_set))
        loss_sum = correct = n_seen = n_adv = 0.0
        batches = train_set.batches(det.input_size, method=det.spec.preprocessing, batch_size=config.batch_size, indices=order, positive=positive)
        from robustlab.progress import batch_progress

        for step, batch in enumerate(batch_progress(batches, len(train_set), f"epoch {epoch}/{config.epochs}", progress)):
            b = len(batch.idx)
            if b == 0:
                continue
            y = batch.y.astype(np.int32)
            k = int(round(config.ratio * b))
            if k > 0:
                rng = np.random.default_rng([config.seed, 2, epoch, step])
                adv_idx = np.sort(rng.choice(b, size=k, replace=False)).astype(np.int32)
                seed = np.asarray([config.seed, epoch * 1_000_003 + step], np.int32)
                loss, corr = self.mixed_step(batch.x, y, adv_idx, seed)
            else:
                loss, corr = self.plain_step(batch.x, y)
            if not math.isfinite(float(loss)):
                raise TrainingDiverged(epoch, step, float(loss), str(getattr(train_set, 'root', '')) or None)
            loss_sum += float(loss) * b
            correct += float(corr)
            n_seen += b
            n_adv += k
        n = max(n_seen, 1.0)
        return {"loss": loss_sum / n, "accuracy": correct / n, "adv_share": n_adv / n, "n": n_seen}


def _correct(logits: Any, y: Any) -> Any:
    """float32 scalar: how many rows of (N, 2) logits have their argmax equal to the int32 label (N,)."""
    import tensorflow as tf

    return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y), tf.float32))


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
