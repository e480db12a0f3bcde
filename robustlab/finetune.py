"""Adversarial fine-tuning: a detector trained on batches in which a share of the images is attacked.

:func:`adv_train` fine-tunes a loaded detector on a TRAIN set with a streaming pipeline: every batch
comes from :meth:`robustlab.data.Dataset.batches` (a new seeded order each epoch) and a ``ratio``
share of its images is replaced by adversarial examples made **against the current weights**, inside
the training step, in plain TensorFlow:

* ``fgsm``: one signed-gradient step of size ``eps``;
* ``fgsm-rs``: FGSM from a uniform random start in the eps-ball with step ``1.25 * eps``, projected
  back to the ball (the "fast adversarial training" recipe of Wong et al., 2020);
* ``pgd``: ``pgd_steps`` steps of size ``pgd_step`` (default ``2.5 * eps / steps``) from a random start.

Attacks take the gradient of the cross-entropy of ``detector.class_logits(x01, training=False)``
with respect to ``x01`` float32 (N, H, W, 3) RGB in [0, 1]; ``eps`` is a fraction of the pixel
range and images are clipped to [0, 1]. Training goes through ``detector.class_logits(x01,
training=True)`` so the model's own preprocessing stays inside the graph; the trained variables
are those of ``detector.model``.

After every epoch: validation loss and accuracy (clean, and under the training attack), a guard
against catastrophic overfitting (FGSM and PGD accuracy on a fixed validation batch; when PGD
accuracy collapses while FGSM accuracy holds or climbs, training stops and the best earlier epoch
is kept), early stopping and reduce-on-plateau on the monitored validation loss, and a checkpoint
(weights, optimizer state, schedule state and history). All randomness is keyed by
``(seed, epoch, step)``, so the RNG position is the epoch counter and :func:`resume_adv_train`
continues after a kill with the same result as an uninterrupted run.

``NEW`` is built in a hidden sibling folder (``.NEW.adv-train-partial``) and renamed into place when
complete. It holds ``model.keras`` (Keras 3), ``detector.yaml`` (the input's preprocessing and a
threshold re-picked on VAL), ``history.csv`` + ``history.png``, ``train.json`` and
``before-after/`` (``before/`` and ``after/`` run folders and a side-by-side ``comparison.md``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from robustlab.enums import StrEnum
from robustlab.errors import RobustlabError
from robustlab.runs import atomic_write_bytes, atomic_write_text, to_json

log = logging.getLogger("robustlab")

PARTIAL_SUFFIX = ".adv-train-partial"
CHECKPOINTS = "checkpoints"
FORMAT_VERSION = 1
HISTORY_FIELDS = (
    "epoch",
    "lr",
    "loss",
    "accuracy",
    "adv_share",
    "val_loss",
    "val_accuracy",
    "val_adv_loss",
    "val_adv_accuracy",
    "val_mix_loss",
    "guard_clean_accuracy",
    "guard_fgsm_accuracy",
    "guard_pgd_accuracy",
    "event",
    "train_seconds",
    "seconds",
)


class TrainAttack(StrEnum):
    """How the adversarial share of each training batch is made (against the current weights)."""

    FGSM = "fgsm"
    FGSM_RS = "fgsm-rs"
    PGD = "pgd"


class Monitor(StrEnum):
    """The validation quantity early stopping, reduce-on-plateau and "best epoch" watch.

    ``val_loss``: clean validation loss (what Keras reports). ``val_adv_loss``: validation loss
    under the training attack. ``val_mix_loss``: ``(1 - ratio) * val_loss + ratio * val_adv_loss``,
    the training objective on the validation set (equals ``val_loss`` when ``ratio`` is 0).
    """

    VAL_LOSS = "val_loss"
    VAL_ADV_LOSS = "val_adv_loss"
    VAL_MIX_LOSS = "val_mix_loss"


OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides the result of a fine-tuning run (saved with every checkpoint).

    ``eps`` and ``pgd_step`` are fractions of the pixel range ([0, 1] units; 8/255 = 0.0314).
    ``trainable``: ``all`` | ``head`` (the last layer with weights) | ``last:N`` (the last N
    layers with weights); BatchNormalization layers stay in inference mode unless ``train_bn``.
    ``class_weight``: ``none`` | ``balanced`` (``auto`` is the same) | ``real=W,fake=W``.
    ``patience`` / ``reduce_lr_patience``: epochs without improvement of ``monitor``; 0 = off.
    """

    eps: float = 8 / 255
    ratio: float = 0.3
    attack: TrainAttack = TrainAttack.FGSM
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    optimizer: str = "adam"
    label_smoothing: float = 0.0
    trainable: str = "all"
    train_bn: bool = False
    class_weight: str = "none"
    patience: int = 3
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.5
    min_lr: float = 1e-6
    monitor: Monitor = Monitor.VAL_MIX_LOSS
    pgd_steps: int = 10
    pgd_step: float | None = None
    guard: bool = True
    guard_size: int = 128
    guard_drop: float = 0.2
    threshold_strategy: str = "max-f1"
    seed: int = 0

    def validated(self) -> "FinetuneConfig":
        """A copy with enums parsed; RobustlabError (exit 2, one line) for a bad value."""
        attack = TrainAttack.parse(self.attack, what="training attack")
        monitor = Monitor.parse(self.monitor, what="monitor")
        for name, value in (("ratio", self.ratio), ("eps", self.eps), ("label_smoothing", self.label_smoothing), ("guard_drop", self.guard_drop)):
            if not isinstance(value, (int, float)) or math.isnan(float(value)):
                raise RobustlabError(f"--{name.replace('_', '-')} {value!r} is not a number", fix="give a number")
        if not 0.0 <= self.ratio <= 1.0:
            raise RobustlabError(f"--ratio {self.ratio:g} is outside [0, 1]", fix="give the share of each batch to attack, e.g. --ratio 0.3 (0 = plain fine-tuning)")
        if not 0.0 < self.eps <= 1.0:
            raise RobustlabError(f"--eps {self.eps:g} is outside (0, 1]", fix="eps is a fraction of the pixel range, e.g. --eps 8/255")
        if self.pgd_step is not None and not 0.0 < self.pgd_step <= 1.0:
            raise RobustlabError(f"--pgd-step {self.pgd_step:g} is outside (0, 1]", fix="e.g. --pgd-step 2/255")
        if self.epochs < 1:
            raise RobustlabError(f"--epochs {self.epochs} is less than 1", fix="train at least one epoch")
        if self.batch_size < 1:
            raise RobustlabError(f"--batch-size {self.batch_size} is less than 1", fix="use a positive batch size")
        if not self.lr > 0:
            raise RobustlabError(f"--lr {self.lr:g} is not positive", fix="e.g. --lr 1e-4")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise RobustlabError(f"--label-smoothing {self.label_smoothing:g} is outside [0, 1)", fix="e.g. --label-smoothing 0.1")
        if self.optimizer.lower() not in OPTIMIZERS:
            raise RobustlabError(f"unknown optimizer {self.optimizer!r}", fix=f"use one of: {', '.join(OPTIMIZERS)}")
        if self.patience < 0 or self.reduce_lr_patience < 0:
            raise RobustlabError("a patience is negative", fix="use 0 to switch it off, or a number of epochs")
        if not 0.0 < self.reduce_lr_factor < 1.0:
            raise RobustlabError(f"--reduce-lr-factor {self.reduce_lr_factor:g} is outside (0, 1)", fix="e.g. --reduce-lr-factor 0.5")
        if self.pgd_steps < 1:
            raise RobustlabError(f"--pgd-steps {self.pgd_steps} is less than 1", fix="e.g. --pgd-steps 10")
        if self.guard_size < 2:
            raise RobustlabError(f"--guard-size {self.guard_size} is less than 2", fix="e.g. --guard-size 128")
        if not 0.0 < self.guard_drop <= 1.0:
            raise RobustlabError(f"--guard-drop {self.guard_drop:g} is outside (0, 1]", fix="e.g. --guard-drop 0.2")
        parse_trainable(self.trainable)
        parse_class_weight(self.class_weight)
        try:
            from robustlab.thresholds import parse_strategy
        except ImportError:
            if self.threshold_strategy != "max-f1":
                raise RobustlabError(f"threshold strategy {self.threshold_strategy!r} needs robustlab.thresholds, which this build lacks", fix="use --threshold-strategy max-f1") from None
        else:
            parse_strategy(self.threshold_strategy)
        return replace(self, attack=attack, monitor=monitor, optimizer=self.optimizer.lower(), ratio=float(self.ratio), eps=float(self.eps))

    @property
    def pgd_step_size(self) -> float:
        return self.pgd_step if self.pgd_step is not None else 2.5 * self.eps / self.pgd_steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attack"] = str(self.attack)
        d["monitor"] = str(self.monitor)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinetuneConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known}).validated()


# --------------------------------------------------------------------------- parsing


def parse_trainable(text: str) -> tuple[str, int]:
    """``all`` -> ("all", 0); ``head`` -> ("last", 1); ``last:N`` -> ("last", N)."""
    t = str(text).strip().lower()
    if t == "all":
        return ("all", 0)
    if t == "head":
        return ("last", 1)
    if t.startswith("last:"):
        try:
            n = int(t[5:])
        except ValueError:
            n = 0
        if n >= 1:
            return ("last", n)
    raise RobustlabError(f"--trainable {text!r} is not all, head or last:N", fix="e.g. --trainable head or --trainable last:3")


def parse_class_weight(text: str) -> str | dict[str, float]:
    """``none`` | ``balanced`` (``auto``) | ``real=1,fake=3`` -> "none" | "balanced" | {real, fake}."""
    t = str(text).strip().lower()
    if t in ("", "none"):
        return "none"
    if t in ("auto", "balanced"):
        return "balanced"
    out: dict[str, float] = {}
    for part in t.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        try:
            w = float(value)
        except ValueError:
            w = float("nan")
        if not sep or key not in ("real", "fake") or not w > 0 or math.isinf(w):
            raise RobustlabError(f"--class-weight {text!r} is not none, balanced or real=W,fake=W", fix="e.g. --class-weight balanced or --class-weight real=1,fake=3")
        out[key] = w
    return {"real": out.get("real", 1.0), "fake": out.get("fake", 1.0)}


def class_weights(spec: str, labels_fake: np.ndarray, positive: str) -> np.ndarray:
    """float32 (2,) weight per *positive-class* label [negative, positive] for the training set."""
    parsed = parse_class_weight(spec)
    counts = {"fake": int(np.sum(labels_fake == 1)), "real": int(np.sum(labels_fake == 0))}
    if parsed == "none":
        w = {"real": 1.0, "fake": 1.0}
    elif parsed == "balanced":  # as scikit-learn: n / (n_classes * n_c)
        n = counts["real"] + counts["fake"]
        w = {c: n / (2.0 * counts[c]) for c in ("real", "fake")}
    else:
        w = dict(parsed)  # type: ignore[arg-type]
    negative = "real" if positive == "fake" else "fake"
    return np.asarray([w[negative], w[positive]], np.float32)


# --------------------------------------------------------------------------- the model


def check_trainable(detector: Any) -> None:
    """RobustlabError (with why) when ``detector.model`` cannot be fine-tuned."""
    import keras

    model = detector.model
    thing = str(detector.spec.source or detector.spec.model)
    if not isinstance(model, keras.Model):
        kind = detector.info.get("loader", type(model).__name__)
        raise RobustlabError(
            f"this detector's model cannot be trained: it is loaded for inference only ({kind})",
            thing=thing,
            fix="fine-tune from a .keras/.h5 file (load the SavedModel in its own code and model.save('model.keras'))",
        )
    if not model.weights:
        raise RobustlabError("this detector's model has no weights to train", thing=thing, fix="fine-tuning needs a model with trainable layers")
    from robustlab._tf import gradient_kernel_hazard

    hazard = gradient_kernel_hazard(model)
    if hazard:  # TensorFlow 2.21's oneDNN gradient kernel kills the process on this layer
        raise RobustlabError(
            f"{hazard}: TensorFlow's oneDNN CPU kernels crash on its gradient",
            thing=thing,
            fix="rerun with the environment variable TF_ENABLE_ONEDNN_OPTS=0",
        )
    try:  # the new model is saved as .keras: every layer must serialize (checked before, not after, training)
        model.get_config()
    except Exception as exc:  # noqa: BLE001 - a custom layer without get_config, typically
        raise RobustlabError(
            f"this detector's model cannot be saved in the Keras 3 format ({exc.__class__.__name__}: {' '.join(str(exc).split())[:160]})",
            thing=thing,
            fix="give its custom layers a get_config() method so the fine-tuned model can be written",
        ) from None


def _leaf_layers(model: Any) -> list[Any]:
    """Layers in graph order, nested models flattened (only layers without sub-layers)."""
    out: list[Any] = []
    for layer in model.layers:
        sub = getattr(layer, "layers", None)
        if sub:
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out


def select_trainable(detector: Any, trainable: str, train_bn: bool) -> dict[str, Any]:
    """Set ``layer.trainable`` for ``--trainable`` on ``detector.model``; returns what was chosen.

    RobustlabError when nothing is left to train.
    """
    import keras

    model = detector.model
    kind, n = parse_trainable(trainable)
    leaves = _leaf_layers(model)
    with_weights = [layer for layer in leaves if layer.weights]
    bn_types = (keras.layers.BatchNormalization,)
    candidates = [layer for layer in with_weights if train_bn or not isinstance(layer, bn_types)]
    chosen = candidates if kind == "all" else candidates[-n:]
    chosen_ids = {id(layer) for layer in chosen}
    model.trainable = True  # containers must be trainable for their children to be
    for layer in leaves:
        layer.trainable = id(layer) in chosen_ids
    variables = list(model.trainable_variables)
    if not variables:
        raise RobustlabError(
            f"no trainable weights with --trainable {trainable}",
            thing=str(detector.spec.source or detector.spec.model),
            fix="use --trainable all, or --train-bn if the model's only weights are BatchNormalization layers",
        )
    return {
        "trainable": trainable,
        "layers": [layer.name for layer in chosen],
        "variables": len(variables),
        "parameters": int(sum(int(np.prod(v.shape)) for v in variables)),
        "frozen_batchnorm": 0 if train_bn else sum(1 for layer in with_weights if isinstance(layer, bn_types)),
    }


def _seed_generators(model: Any, seed: int) -> None:
    """Dropout & co. draw from per-layer seed generators; seed them from ``seed`` (not from the file)."""
    k = 0
    for v in model.variables:
        if "seed_generator_state" in v.path:
            v.assign(np.asarray([(int(seed) * 1_000_003 + 7919 * k + 17) % (2**31 - 1), 0], dtype=v.dtype))
            k += 1


def make_optimizer(name: str, lr: float) -> Any:
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "nadam": keras.optimizers.Nadam,
    }
    return classes[name](learning_rate=lr)


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
        batches = train_set.batches(det.input_size, method=det.spec.resize, batch_size=config.batch_size, indices=order)
        from robustlab.evaluate import batch_progress

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


# --------------------------------------------------------------------------- state & checkpoints


@dataclass
class TrainState:
    """Schedule state after ``epoch`` complete epochs (saved in every checkpoint)."""

    epoch: int = 0
    lr: float = 0.0
    best_value: float | None = None
    best_epoch: int = 0
    wait: int = 0
    lr_wait: int = 0
    stopped: str | None = None  # why training ended early, or None
    history: list[dict[str, Any]] = field(default_factory=list)
    guard_baseline: dict[str, float] | None = None
    seconds: float = 0.0

    @property
    def rng_position(self) -> dict[str, Any]:
        return {"next_epoch": self.epoch, "keyed_by": "(seed, epoch, step)"}


def _npz_bytes(arrays: Sequence[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{f"v{i:05d}": a for i, a in enumerate(arrays)})
    return buf.getvalue()


def _load_npz(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [z[f"v{i:05d}"] for i in range(len(z.files))]


def _model_arrays(model: Any) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in model.variables]


def _assign(variables: Sequence[Any], arrays: Sequence[np.ndarray], what: str, thing: Path) -> None:
    if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays)):
        raise RobustlabError(f"the checkpoint's {what} do not match the model", thing=thing, fix="start over with --force (the input model changed since the checkpoint)")
    for v, a in zip(variables, arrays):
        v.assign(a)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode())
            h.update(file_sha256(f).encode())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Checkpoints:
    """``PARTIAL/checkpoints/epoch-NNNN/{state.json, model.npz, optimizer.npz}``, ``best-NNNN.npz``, ``LATEST``.

    Each checkpoint folder is written under a temporary name and renamed; ``LATEST`` (written
    atomically, last) names the newest complete one. A kill at any moment leaves the previous one.
    """

    def __init__(self, partial: Path):
        self.dir = partial / CHECKPOINTS
        self.dir.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        f = self.dir / "LATEST"
        if not f.exists():
            return None
        name = f.read_text(encoding="utf-8").strip()
        p = self.dir / name
        return p if (p / "state.json").exists() else None

    def save(self, state: TrainState, model: Any, optimizer: Any, best_arrays: list[np.ndarray] | None) -> Path:
        name = f"epoch-{state.epoch:04d}"
        best_name = f"best-{state.best_epoch:04d}.npz"
        if best_arrays is not None:
            atomic_write_bytes(self.dir / best_name, _npz_bytes(best_arrays))
        tmp = self.dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        atomic_write_bytes(tmp / "model.npz", _npz_bytes(_model_arrays(model)))
        atomic_write_bytes(tmp / "optimizer.npz", _npz_bytes([np.asarray(v.numpy()) for v in optimizer.variables]))
        payload = asdict(state)
        payload["best_file"] = best_name
        payload["rng_position"] = state.rng_position
        payload["variables"] = [[v.path, list(v.shape)] for v in model.variables]
        atomic_write_text(tmp / "state.json", to_json(payload))
        final = self.dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(self.dir / "LATEST", name + "\n")
        for old in self.dir.iterdir():  # keep the newest checkpoint and the best weights only
            if old.name in (name, best_name, "LATEST"):
                continue
            if old.name.startswith("epoch-") or old.name.startswith("best-"):
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        return final

    @staticmethod
    def read_state(ckpt: Path) -> tuple[TrainState, str]:
        payload = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        best_file = payload.pop("best_file")
        known = set(TrainState.__dataclass_fields__)
        return TrainState(**{k: v for k, v in payload.items() if k in known}), best_file


def guard_collapse(history: Sequence[Mapping[str, Any]], row: Mapping[str, Any], drop: float, fgsm_slack: float = 0.02) -> str | None:
    """Catastrophic overfitting: why ``row`` (this epoch) shows it, or None.

    It shows when the guard's PGD accuracy fell by more than ``drop`` below the best PGD accuracy
    of an earlier (not collapsed) epoch while FGSM accuracy held or climbed (within
    ``fgsm_slack``) against that epoch: the model has learned to mask FGSM's gradient, not to resist.
    """
    prior = [r for r in history if r.get("guard_pgd_accuracy") is not None and "collapse" not in (r.get("event") or "")]
    if not prior or row.get("guard_pgd_accuracy") is None:
        return None
    ref = max(prior, key=lambda r: r["guard_pgd_accuracy"])
    pgd, fgsm = row["guard_pgd_accuracy"], row["guard_fgsm_accuracy"]
    if pgd < ref["guard_pgd_accuracy"] - drop and fgsm >= ref["guard_fgsm_accuracy"] - fgsm_slack:
        return (
            f"catastrophic overfitting at epoch {row['epoch']}: guard PGD accuracy fell from {ref['guard_pgd_accuracy']:.1%} "
            f"(epoch {ref['epoch']}) to {pgd:.1%} while FGSM accuracy went {ref['guard_fgsm_accuracy']:.1%} -> {fgsm:.1%}"
        )
    return None


def schedule_step(state: "TrainState", row: Mapping[str, Any], config: FinetuneConfig, *, collapse: str | None = None) -> list[str]:
    """Best epoch, early stopping and reduce-on-plateau after one epoch (as Keras' callbacks).

    Updates ``state`` (``best_value``, ``best_epoch``, ``wait``, ``lr_wait``, ``lr``, ``stopped``)
    from ``row[config.monitor]`` (lower is better; NaN never improves) and returns the epoch's
    events (``best``, ``lr->X``, ``early-stop``, ``collapse``). A collapsed epoch never becomes
    the best one and stops training.
    """
    epoch = int(row["epoch"])
    monitor = str(config.monitor)
    events: list[str] = []
    if collapse:
        state.stopped = collapse
        return ["collapse"]
    value = float(row[monitor])
    if not math.isnan(value) and (state.best_value is None or value < state.best_value):
        state.best_value, state.best_epoch, state.wait, state.lr_wait = value, epoch, 0, 0
        return ["best"]
    state.wait += 1
    state.lr_wait += 1
    if config.reduce_lr_patience and state.lr_wait >= config.reduce_lr_patience and state.lr > config.min_lr:
        state.lr = max(config.min_lr, state.lr * config.reduce_lr_factor)
        state.lr_wait = 0
        events.append(f"lr->{state.lr:.3g}")
    if config.patience and state.wait >= config.patience:
        best = "none" if state.best_value is None else f"{state.best_value:.4f} at epoch {state.best_epoch}"
        state.stopped = f"early stopping at epoch {epoch}: {monitor} did not improve for {config.patience} epoch(s) (best {best})"
        events.append("early-stop")
    return events


# --------------------------------------------------------------------------- results


@dataclass
class FinetuneResult:
    """What :func:`adv_train` returns."""

    out: Path
    history: list[dict[str, Any]]
    best_epoch: int
    stopped: str | None
    threshold: float
    threshold_note: str
    comparison: list[dict[str, Any]]
    info: dict[str, Any]


def pick_val_threshold(y_true: np.ndarray, y_score: np.ndarray, strategy: str = "max-f1", *, thing: "str | None" = None) -> tuple[float, str]:
    """A threshold from the validation PR curve -> (threshold, how it was picked).

    Uses :func:`robustlab.thresholds.pick_threshold` when that module is installed; otherwise the
    max-F1 point of scikit-learn's ``precision_recall_curve`` (``score >= threshold`` is positive).
    """
    try:
        from robustlab import thresholds  # type: ignore[attr-defined]
    except ImportError:
        thresholds = None
    if thresholds is not None and hasattr(thresholds, "pick_threshold"):
        picked = thresholds.pick_threshold(np.asarray(y_true), np.asarray(y_score), strategy, thing=thing)
        value = getattr(picked, "threshold", picked)
        if isinstance(picked, tuple):
            value = picked[0]
        return float(value), f"robustlab.thresholds.pick_threshold(strategy={strategy}) on VAL"
    if strategy != "max-f1":
        raise RobustlabError(f"threshold strategy {strategy!r} needs robustlab.thresholds, which this build lacks", fix="use --threshold-strategy max-f1")
    return max_f1_threshold(y_true, y_score), "max-F1 point of the VAL precision-recall curve (scikit-learn)"


def max_f1_threshold(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """The threshold with the highest F1 on the PR curve (``>=`` rule); 0.5 with one class."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true, np.int64)
    if len(np.unique(y)) < 2:
        return 0.5
    precision, recall, thr = precision_recall_curve(y, np.asarray(y_score, np.float64))
    p, r = precision[:-1], recall[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(np.clip(thr[int(np.argmax(f1))], 0.0, 1.0))


# --------------------------------------------------------------------------- the run


def partial_dir(out: "str | os.PathLike") -> Path:
    """Where an unfinished ``adv-train --out NEW`` lives: ``.NEW.adv-train-partial`` beside it."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}{PARTIAL_SUFFIX}"


def _lock(partial: Path) -> None:
    lock = partial / "LOCK"
    if lock.exists():
        try:
            pid = int(lock.read_text().strip())
        except ValueError:
            pid = 0
        alive = False
        if pid and pid != os.getpid():
            try:
                os.kill(pid, 0)
                alive = True
            except OSError:
                alive = False
        if alive:
            raise RobustlabError(f"another adv-train (pid {pid}) is working here", thing=partial, fix="wait for it to finish, or stop it first")
    atomic_write_text(lock, f"{os.getpid()}\n")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _open_sets(run: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    from robustlab.data import open_dataset

    classes = run.get("classes")
    train = open_dataset(run["train"], classes=classes)
    val = open_dataset(run["val"], classes=classes)
    test = open_dataset(run["test"], classes=classes) if run.get("test") else val
    return train, val, test


def adv_train(
    detector: Any,
    train: "str | os.PathLike",
    val: "str | os.PathLike | None",
    *,
    out: "str | os.PathLike",
    config: FinetuneConfig = FinetuneConfig(),
    test: "str | os.PathLike | None" = None,
    classes: str | None = None,
    trust_model: bool = False,
    force: bool = False,
    eval_attacks: Sequence[str] | None = None,
    eval_corruptions: Sequence[str] | None = None,
    eval_fraction: float = 1.0,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
    command: Sequence[str] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``detector`` on TRAIN with adversarial mixing; write the folder ``out`` (NEW).

    ``detector`` is a loaded :class:`~robustlab.detector.Detector` (never modified: a fresh copy
    is loaded from its spec and trained); ``train``, ``val`` and ``test`` are DATA arguments
    (``test`` defaults to ``val``; it is where the before/after run folders are evaluated).
    ``eval_attacks`` / ``eval_corruptions`` are specs for :func:`robustlab.attacks.parse_attacks`
    and :func:`robustlab.corruptions.parse_corruptions` (default: FGSM and PGD at the training eps,
    and the default corruptions). ``on_epoch_end(row)`` gets each finished epoch's history row.
    Raises :class:`RobustlabError` for bad input (exit 2 at the CLI).
    """
    config = config.validated()
    out = Path(out).resolve()
    if val is None or str(val).strip() == "":
        raise RobustlabError("no validation set", fix="pass --val VAL (a held-out DATA set: early stopping, the guard and the new threshold are picked on it)")
    if not 0.0 < float(eval_fraction) <= 1.0:
        raise RobustlabError(f"--eval-fraction {eval_fraction:g} is outside (0, 1]", fix="e.g. --eval-fraction 0.3")
    spec = detector.spec
    inputs = [p for p in (spec.model, spec.weights, spec.source) if p is not None]
    for p in inputs:
        if _inside(p, out):
            raise RobustlabError(f"the input detector ({p}) is inside --out", thing=out, fix="choose an --out folder that does not hold the input model")
    if out.exists() and not out.is_dir():
        raise RobustlabError("exists and is not a folder", thing=out, fix="choose another --out")
    if out.exists() and any(out.iterdir()) and not force:
        raise RobustlabError("already exists", thing=out, fix="choose another --out, or pass --force to replace it")
    partial = partial_dir(out)
    if partial.exists():
        if not force:
            raise RobustlabError(
                "an interrupted adv-train for this --out exists",
                thing=partial,
                fix=f"continue it with `robustlab adv-train --resume {out}`, or pass --force to start over",
            )
        _lock(partial)
        shutil.rmtree(partial)
    check_trainable(detector)
    run_inputs = {
        "train": str(Path(train).resolve()),
        "val": str(Path(val).resolve()),
        "test": str(Path(test).resolve()) if test is not None else None,
        "classes": classes,
    }
    train_set, val_set, test_set = _open_sets(run_inputs)
    partial.mkdir(parents=True)
    try:
        _lock(partial)
        run = {
            "format": FORMAT_VERSION,
            "out": str(out),
            "force": bool(force),
            "config": config.to_dict(),
            "detector_spec": spec.to_dict(),
            "detector_source": str(spec.source) if spec.source else None,
            "trust_model": bool(trust_model),
            **run_inputs,
            "eval": {"attacks": list(eval_attacks) if eval_attacks is not None else None, "corruptions": list(eval_corruptions) if eval_corruptions is not None else None, "fraction": float(eval_fraction)},
            "fingerprints": {"train": train_set.fingerprint(), "val": val_set.fingerprint(), "model": file_sha256(spec.model)},
            "command": list(command) if command is not None else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(partial / "run.json", to_json(run))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _run(partial, run, detector, (train_set, val_set, test_set), progress=progress, log=log, on_epoch_end=on_epoch_end)


def resume_adv_train(
    out: "str | os.PathLike",
    *,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    expect: Mapping[str, Any] | None = None,
) -> FinetuneResult:
    """Continue an interrupted :func:`adv_train` for ``out`` from its last complete epoch.

    ``expect``: settings the caller gave again (``config`` keys, ``train``/``val``/``test`` paths);
    any that differ from the interrupted run's is a RobustlabError.
    """
    from robustlab.detector import load_detector, make_spec

    out = Path(out).resolve()
    partial = partial_dir(out)
    if not partial.exists() or not (partial / "run.json").exists():
        if out.is_dir() and (out / "train.json").exists():
            raise RobustlabError("this adv-train finished; there is nothing to resume", thing=out, fix="start a new run with another --out")
        raise RobustlabError("no interrupted adv-train for this --out", thing=out, fix=f"there is no {partial.name} beside it; start a new run without --resume")
    run = json.loads((partial / "run.json").read_text(encoding="utf-8"))
    if run.get("format") != FORMAT_VERSION:
        raise RobustlabError("the interrupted run was made by another robustlab version", thing=partial, fix="start over with --force")
    for key, value in (expect or {}).items():
        saved = run["config"].get(key, run.get(key))
        if key in ("train", "val", "test") and value is not None:
            value = str(Path(value).resolve())
        if isinstance(saved, float) and isinstance(value, (int, float)):
            same = math.isclose(saved, float(value), rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = saved == value or str(saved) == str(value)
        if not same:
            raise RobustlabError(f"{key} is {value!r} but the interrupted run used {saved!r}", thing=partial, fix="resume with the same settings (or none: they are read from the checkpoint), or start over with --force")
    _lock(partial)
    spec_values = {k: v for k, v in run["detector_spec"].items() if v is not None}
    src = run.get("detector_source")
    spec = make_spec(spec_values, base_dir=Path(src).parent if src else Path.cwd(), source=Path(src) if src else None)
    if not spec.model.exists():
        raise RobustlabError("the input model of the interrupted run is gone", thing=spec.model, fix="restore it, or start over")
    if file_sha256(spec.model) != run["fingerprints"]["model"]:
        raise RobustlabError("the input model changed since the interrupted run started", thing=spec.model, fix="start over with --force")
    detector = load_detector(spec, trust_model=bool(run["trust_model"]))
    sets = _open_sets(run)
    for name, ds in (("train", sets[0]), ("val", sets[1])):
        if ds.fingerprint() != run["fingerprints"][name]:
            raise RobustlabError(f"the {name} set changed since the interrupted run started", thing=run[name], fix="start over with --force")
    return _run(partial, run, detector, sets, progress=progress, log=log, on_epoch_end=on_epoch_end)


def _stratified(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0x6A2D])
    if k >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    chosen = []
    for c in (0, 1):
        members = np.flatnonzero(labels == c)
        take = int(round(k * len(members) / len(labels)))
        take = min(len(members), max(1, take)) if len(members) else 0
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _run(
    partial: Path,
    run: dict[str, Any],
    source_detector: Any,
    sets: tuple[Any, Any, Any],
    *,
    progress: bool,
    log: Callable[[str], None],
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
) -> FinetuneResult:
    """Train (from the last checkpoint, if any), then write the outputs and rename into place."""
    from robustlab.detector import load_detector

    config = FinetuneConfig.from_dict(run["config"])
    train_set, val_set, test_set = sets
    t_start = time.time()
    det = load_detector(source_detector.spec, trust_model=bool(run["trust_model"]))  # a private copy to train
    model = det.model
    original_flags = [(layer, layer.trainable) for layer in [model, *_leaf_layers(model)]]
    steps, chosen = prepare_training(det, config, train_set)
    optimizer = steps.optimizer
    positive = det.positive
    initial = _model_arrays(model)

    ckpts = _Checkpoints(partial)
    latest = ckpts.latest()
    best_arrays: list[np.ndarray] | None
    if latest is not None:
        state, best_file = ckpts.read_state(latest)
        _assign(model.variables, _load_npz(latest / "model.npz"), "weights", latest)
        _assign(optimizer.variables, _load_npz(latest / "optimizer.npz"), "optimizer state", latest)
        best_arrays = _load_npz(ckpts.dir / best_file)
        optimizer.learning_rate = state.lr
        log(f"robustlab adv-train: resuming after epoch {state.epoch} of {config.epochs} ({latest})")
    else:
        state = TrainState(lr=config.lr)
        best_arrays = initial
    h, w = det.input_size
    resize = det.spec.resize
    bs = config.batch_size
    n_train = len(train_set)

    # the guard's validation batch: stratified, seeded, fixed for the whole run
    y_val_all = val_set.labels if positive == "fake" else 1 - val_set.labels
    guard_batch = None
    if config.guard:
        g_idx = _stratified(y_val_all, config.guard_size, config.seed)
        guard_batch = val_set.load_arrays((h, w), method=resize, indices=g_idx, batch_size=bs)
        if len(guard_batch.idx) == 0:
            guard_batch = None

    def guard() -> dict[str, float] | None:
        if guard_batch is None:
            return None
        y = (guard_batch.y if positive == "fake" else 1 - guard_batch.y).astype(np.int32)
        clean = fgsm = pgd = 0.0
        for s in range(0, len(y), bs):
            c, f, p = steps.guard_step(guard_batch.x[s : s + bs], y[s : s + bs], np.asarray([config.seed, 7_000_000 + s], np.int32))
            clean, fgsm, pgd = clean + float(c), fgsm + float(f), pgd + float(p)
        n = float(len(y))
        return {"clean": clean / n, "fgsm": fgsm / n, "pgd": pgd / n}

    if state.guard_baseline is None and config.guard:
        state.guard_baseline = guard()
        if state.guard_baseline:
            gb = state.guard_baseline
            log(f"robustlab adv-train: before training, guard batch ({len(guard_batch.idx)} val images): clean {gb['clean']:.1%}, FGSM {gb['fgsm']:.1%}, PGD {gb['pgd']:.1%} at eps={config.eps:.4g}")

    log(
        f"robustlab adv-train: {n_train} train / {len(val_set)} val images, {config.epochs} epoch(s), "
        f"ratio {config.ratio:g} {steps.train_attack_desc}, {chosen['parameters']} trainable parameters "
        f"({config.trainable}{', BatchNorm frozen' if chosen['frozen_batchnorm'] else ''}), {config.optimizer} lr {config.lr:g}"
    )
    while state.stopped is None and state.epoch < config.epochs:
        epoch = state.epoch + 1
        t0 = time.time()
        stats = steps.train_epoch(train_set, epoch, progress=progress)
        n_seen = stats["n"]
        train_seconds = time.time() - t0
        if n_seen == 0:
            raise RobustlabError("no training image could be read", thing=run["train"], fix="check the files (see the skipped list above)")

        # validation: clean and under the training attack
        v_loss = v_corr = a_loss = a_corr = v_n = 0.0
        for vb_no, vb in enumerate(val_set.batches((h, w), method=resize, batch_size=bs)):
            if len(vb.idx) == 0:
                continue
            y = (vb.y if positive == "fake" else 1 - vb.y).astype(np.int32)
            l1, c1, l2, c2 = steps.val_step(vb.x, y, np.asarray([config.seed, 5_000_000 + vb_no], np.int32))
            v_loss, v_corr, a_loss, a_corr, v_n = v_loss + float(l1), v_corr + float(c1), a_loss + float(l2), a_corr + float(c2), v_n + len(y)
        if v_n == 0:
            raise RobustlabError("no validation image could be read", thing=run["val"], fix="check the files (see the skipped list above)")
        row: dict[str, Any] = {
            "epoch": epoch,
            "lr": float(state.lr),
            "loss": stats["loss"],
            "accuracy": stats["accuracy"],
            "adv_share": stats["adv_share"],
            "val_loss": v_loss / v_n,
            "val_accuracy": v_corr / v_n,
            "val_adv_loss": a_loss / v_n,
            "val_adv_accuracy": a_corr / v_n,
        }
        row["val_mix_loss"] = (1 - config.ratio) * row["val_loss"] + config.ratio * row["val_adv_loss"]
        g = guard()
        reason = None
        if g is not None:
            row.update(guard_clean_accuracy=g["clean"], guard_fgsm_accuracy=g["fgsm"], guard_pgd_accuracy=g["pgd"])
            reason = guard_collapse(state.history, row, config.guard_drop)
        lr_before = state.lr
        events = schedule_step(state, row, config, collapse=reason)
        if state.lr != lr_before:
            optimizer.learning_rate = state.lr
        new_best = None
        if "best" in events:
            new_best = _model_arrays(model)
            best_arrays = new_best
        elif state.best_epoch == 0 and len(state.history) == 0:
            new_best = best_arrays  # no trained epoch is better yet: the checkpoint keeps the input weights
        row["event"] = " ".join(events)
        row["train_seconds"] = train_seconds
        row["seconds"] = time.time() - t0
        state.history.append(row)
        state.epoch = epoch
        state.seconds += row["seconds"]
        ckpts.save(state, model, optimizer, new_best)
        guard_text = f", guard FGSM {g['fgsm']:.1%} PGD {g['pgd']:.1%}" if g else ""
        log(
            f"robustlab adv-train: epoch {epoch}/{config.epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.1%}, "
            f"val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.1%}, val_adv_acc {row['val_adv_accuracy']:.1%}"
            f"{guard_text} ({row['train_seconds']:.1f} s train, {row['seconds']:.1f} s total){' [' + row['event'] + ']' if row['event'] else ''}"
        )
        if state.stopped:
            log(f"robustlab adv-train: {state.stopped}; keeping epoch {state.best_epoch}")
        if on_epoch_end is not None:
            on_epoch_end(dict(row))

    # ---- the best epoch's weights, the new threshold, the outputs
    assert best_arrays is not None
    _assign(model.variables, best_arrays, "best weights", partial)
    for layer, flag in original_flags:
        layer.trainable = flag
    val_scores, val_y = [], []
    for vb in val_set.batches((h, w), method=resize, batch_size=bs):
        if len(vb.idx):
            val_scores.append(det.scores(vb.x))
            val_y.append(vb.y if positive == "fake" else 1 - vb.y)
    y_v, s_v = np.concatenate(val_y), np.concatenate(val_scores)
    try:
        threshold, threshold_note = pick_val_threshold(y_v, s_v, config.threshold_strategy, thing=run["val"])
    except RobustlabError as exc:  # e.g. a precision target the new model does not reach: keep the training
        threshold, threshold_note = pick_val_threshold(y_v, s_v, "max-f1", thing=run["val"])
        threshold_note = f"{threshold_note} (--threshold-strategy {config.threshold_strategy} failed: {exc.problem})"
        log(f"robustlab adv-train: warning: --threshold-strategy {config.threshold_strategy} failed on VAL ({exc.problem}); used max-f1")
    kept = f"epoch {state.best_epoch}" if state.best_epoch else f"epoch 0, the input weights (no epoch improved {config.monitor})"
    log(f"robustlab adv-train: kept {kept}; threshold {threshold:.4f} ({threshold_note})")
    return _finish(partial, run, config, state, det, source_detector, test_set, threshold, threshold_note, chosen, steps.train_attack_desc, time.time() - t_start, progress, log)


def _new_spec(det: Any, threshold: float, name: str) -> dict[str, Any]:
    """The NEW detector.yaml: the input's preprocessing, resolved, with the re-picked threshold."""
    spec = det.spec
    out: dict[str, Any] = {
        "name": name,
        "model": "model.keras",
        "input_size": list(det.input_size),
        "resize": str(spec.resize),
        "color": str(spec.color),
        "scale": str(spec.scale),
        "output": str(det.output),
        "classes": list(det.classes),
        "positive": det.positive,
        "threshold": round(float(threshold), 6),
    }
    if spec.custom_objects:
        out["custom_objects"] = dict(spec.custom_objects)
    return out


def _write_history(partial: Path, history: list[dict[str, Any]], best_epoch: int, stopped: str | None) -> None:
    from robustlab import reports

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_FIELDS)
    for r in history:
        writer.writerow(["" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]) for k in HISTORY_FIELDS])
    atomic_write_text(partial / "history.csv", buf.getvalue())

    plt = reports._plt()
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("loss", "-o"), ("val_loss", "-s"), ("val_adv_loss", "--s")):
        ax1.plot(epochs, [r[key] for r in history], style, label=key)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, style in (("accuracy", "-o"), ("val_accuracy", "-s"), ("val_adv_accuracy", "--s"), ("guard_fgsm_accuracy", ":^"), ("guard_pgd_accuracy", ":v")):
        vals = [r.get(key) for r in history]
        if any(v is not None for v in vals):
            ax2.plot(epochs, [np.nan if v is None else v for v in vals], style, label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.axvline(best_epoch, color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    fig.suptitle(f"adv-train history (kept epoch {best_epoch})" + (" - stopped early" if stopped else ""))
    fig.tight_layout()
    tmp = partial / ".history.png.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, partial / "history.png")


def default_eval_variants(eps: float, attacks: Sequence[str] | None, corruptions: Sequence[str] | None) -> list[Any]:
    """The before/after variants: FGSM and PGD at the training eps + corruptions (or the given specs)."""
    from robustlab.metrics import format_eps

    e = format_eps(eps)
    attack_specs = list(attacks) if attacks is not None else [f"fgsm:eps={e}", f"pgd:eps={e}"]
    corruption_specs = list(corruptions) if corruptions is not None else list(DEFAULT_EVAL_CORRUPTIONS)
    variants: list[Any] = []
    if attack_specs:
        from robustlab.attacks import parse_attacks

        variants += parse_attacks(attack_specs)
    if corruption_specs:
        from robustlab.corruptions import parse_corruptions

        variants += parse_corruptions(corruption_specs)
    return variants


DEFAULT_EVAL_CORRUPTIONS = ("jpeg:3", "blur:3", "resize:3")


def comparison_rows(before: Sequence[Any], after: Sequence[Any]) -> list[dict[str, Any]]:
    """Side-by-side rows keyed by (set, variant, param): metric_before, metric_after, delta."""
    metrics = ("accuracy", "precision", "recall", "f1", "auc")
    after_by = {(r.set, r.variant, r.param): r for r in after}
    out = []
    for r in before:
        a = after_by.get((r.set, r.variant, r.param))
        row: dict[str, Any] = {"set": r.set, "variant": r.variant, "param": r.param, "n": r.n}
        for m in metrics:
            b_v = getattr(r, m)
            a_v = getattr(a, m) if a is not None else None
            row[f"{m}_before"] = b_v
            row[f"{m}_after"] = a_v
            row[f"{m}_delta"] = None if (a_v is None or b_v is None) else a_v - b_v
        row["threshold_before"] = r.threshold
        row["threshold_after"] = a.threshold if a is not None else None
        out.append(row)
    return out


def comparison_markdown(rows: Sequence[Mapping[str, Any]], *, title: str, summary: Sequence[str] = ()) -> str:
    from robustlab.reports import param_display, row_title

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    def pts(v: Any) -> str:
        return "n/a" if v is None else f"{100 * v:+.2f} pts"

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [f"# {title}", ""]
    lines += [*summary, ""] if summary else []
    def title(r: Mapping[str, Any]) -> str:
        if r["set"] == "mixed":
            param = param_display(r.get("param") or "")
            return f"(Original + {r['variant'].upper()} Adversarial) Images" + (f" ({param})" if param else "")
        return row_title(r)

    lines += ["| Test Data | Accuracy before | Accuracy after | Change | F1 before | F1 after | AUC before | AUC after |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {title(r)} | {pct(r['accuracy_before'])} | {pct(r['accuracy_after'])} | {pts(r['accuracy_delta'])} | "
            f"{pct(r['f1_before'])} | {pct(r['f1_after'])} | {num(r['auc_before'])} | {num(r['auc_after'])} |"
        )
    return "\n".join(lines) + "\n"


def _checks(detector: Any, data: Any, variants: Sequence[Any], config: FinetuneConfig, extra_info: dict[str, Any]) -> dict[str, Any]:
    """``checks`` and ``extra_info`` for a before/after evaluate: the attack module's diagnostics
    (an attack that does not hurt, FGSM beating PGD: signs of gradient masking)."""
    if not any(getattr(v, "kind", None) is not None and str(v.kind) == "adversarial" for v in variants):
        return {"extra_info": extra_info or None}
    from robustlab.attacks import attack_checks

    checks = attack_checks(detector, data, variants, seed=config.seed, batch_size=config.batch_size, info=extra_info)
    return {"checks": checks, "extra_info": extra_info}


def _finish(
    partial: Path,
    run: dict[str, Any],
    config: FinetuneConfig,
    state: TrainState,
    det: Any,
    source_detector: Any,
    test_set: Any,
    threshold: float,
    threshold_note: str,
    chosen: dict[str, Any],
    attack_desc: str,
    seconds: float,
    progress: bool,
    log: Callable[[str], None],
) -> FinetuneResult:
    from robustlab.detector import load_detector
    from robustlab.evaluate import evaluate, versions

    out = Path(run["out"])
    name = f"{source_detector.spec.name}-advtrained"
    # the model, its spec and the history (inside the partial folder, renamed as a whole below)
    model_tmp = partial / ".model.tmp.keras"
    det.model.save(model_tmp)
    os.replace(model_tmp, partial / "model.keras")
    spec_values = _new_spec(det, threshold, name)
    header = (
        f"# robustlab adv-train: {source_detector.spec.name} fine-tuned with {config.ratio:g} {config.attack} mixing at eps={config.eps:.5g}\n"
        f"# preprocessing copied from {source_detector.spec.source or source_detector.spec.model}; threshold re-picked on VAL\n"
    )
    atomic_write_text(partial / "detector.yaml", header + yaml.safe_dump(spec_values, sort_keys=False))
    _write_history(partial, state.history, state.best_epoch, state.stopped)

    # before / after on TEST (VAL when no --test): the same variants, seed and subset for both
    new_det = load_detector(partial / "detector.yaml", trust_model=bool(run["trust_model"]))
    variants = default_eval_variants(config.eps, run["eval"]["attacks"], run["eval"]["corruptions"])
    ba = partial / "before-after"
    shutil.rmtree(ba, ignore_errors=True)
    common = dict(variants=variants, attack_fraction=float(run["eval"]["fraction"]), seed=config.seed, batch_size=config.batch_size, force=True, progress=progress, config={"adv_train": run["out"]})
    log(f"robustlab adv-train: evaluating the input detector and the new one on {test_set.root} ({len(test_set)} images)")
    before = evaluate(source_detector, test_set, out=ba / "before", command=run.get("command"), **common, **_checks(source_detector, test_set, variants, config, {}))
    after_desc = new_det.describe()
    after_desc["spec"] = {**after_desc["spec"], "model": str(out / "model.keras")}
    after_desc["spec_file"] = str(out / "detector.yaml")
    after = evaluate(new_det, test_set, out=ba / "after", command=run.get("command"), **common, **_checks(new_det, test_set, variants, config, {"detector": after_desc}))
    comp = comparison_rows(before.rows, after.rows)
    summary = [
        f"Before: `{source_detector.spec.source or source_detector.spec.model}` (threshold {source_detector.threshold:g}).",
        f"After: `{out / 'detector.yaml'}` (threshold {threshold:.4f}, {threshold_note}); kept epoch {state.best_epoch} of {len(state.history)} trained.",
        f"Training: ratio {config.ratio:g} of each batch {attack_desc}; {config.optimizer} lr {config.lr:g}; trainable {config.trainable}.",
        f"Data: `{test_set.root}` ({len(test_set)} images); attacked subset fraction {float(run['eval']['fraction']):g}, seed {config.seed}.",
    ]
    if not run.get("test"):
        summary.append("**Optimistic**: no --test was given, so these rows are on VAL, where the kept epoch and the new threshold were picked. Evaluate on a held-out set before trusting them.")
    if state.stopped:
        summary.append(f"Stopped early: {state.stopped}.")
    atomic_write_text(ba / "comparison.md", comparison_markdown(comp, title=f"robustlab adv-train: {source_detector.spec.name} before / after", summary=summary))
    atomic_write_text(ba / "comparison.json", to_json({"rows": comp}))
    buf = io.StringIO()
    if comp:
        writer = csv.DictWriter(buf, fieldnames=list(comp[0].keys()), lineterminator="\n")
        writer.writeheader()
        for r in comp:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
    atomic_write_text(ba / "comparison.csv", buf.getvalue())

    info = {
        "command": run.get("command"),
        "config": run["config"],
        "train": run["train"],
        "val": run["val"],
        "test": run.get("test"),
        "detector_in": source_detector.describe(),
        "detector_out": str(out / "detector.yaml"),
        "trainable": chosen,
        "training_attack": attack_desc,
        "best_epoch": state.best_epoch,
        "epochs_trained": len(state.history),
        "stopped": state.stopped,
        "monitor": str(config.monitor),
        "best_value": state.best_value,
        "guard_baseline": state.guard_baseline,
        "threshold": threshold,
        "threshold_from": threshold_note,
        "history": state.history,
        "fingerprints": run["fingerprints"],
        "versions": versions(),
        "timings": {"train_seconds": round(state.seconds, 3), "this_session_seconds": round(seconds, 3)},
        "complete": True,
    }
    atomic_write_text(partial / "train.json", to_json(info))
    # publish: the folder is renamed into place, then the checkpoints, resume file and lock go
    old = None
    if out.exists():
        if any(out.iterdir()) and not run.get("force"):
            raise RobustlabError("appeared while adv-train was working", thing=out, fix=f"move it away and run `robustlab adv-train --resume {out}` again")
        old = out.parent / f".{out.name}.old-{os.getpid()}-{int(time.time())}"
        os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    for leftover in ("run.json", "LOCK"):
        (out / leftover).unlink(missing_ok=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    comp_out = json.loads((out / "before-after" / "comparison.json").read_text(encoding="utf-8"))["rows"]
    return FinetuneResult(out, state.history, state.best_epoch, state.stopped, threshold, threshold_note, comp_out, info)
