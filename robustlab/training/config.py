"""Fine-tuning options, validated once: attack, eps, ratio, optimizer, trainable layers, class weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import numpy as np

from robustlab.enums import StrEnum
from robustlab.errors import RobustlabError


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
        from robustlab.evaluation.thresholds import parse_strategy

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
