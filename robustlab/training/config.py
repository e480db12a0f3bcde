"""Fine-tuning options, validated once: attack, eps, ratio, optimizer, trainable layers, class weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import numpy as np

from robustlab.attacks.spec import AttackMethod, AttackSpec
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
        """A copy with enums parsed; RobustlabError (exit 2, one line) for a bad value.

        Every field is type-checked (a checkpoint's JSON may say anything) and every number must be
        finite: ``--min-lr nan`` or ``--lr inf`` are refused, not trained with.
        """
        _check_types(self)
        attack = TrainAttack.parse(self.attack, what="training attack")
        monitor = Monitor.parse(self.monitor, what="monitor")
        _check_ranges(self)
        parse_trainable(self.trainable)
        parse_class_weight(self.class_weight)
        from robustlab.evaluation.thresholds import parse_strategy

        parse_strategy(self.threshold_strategy)
        out = replace(self, attack=attack, monitor=monitor, optimizer=self.optimizer.lower(), ratio=float(self.ratio), eps=float(self.eps))
        out.attack_spec()  # the training attack must be a valid AttackSpec too
        return out

    def attack_spec(self, attack: "TrainAttack | str | None" = None) -> AttackSpec:
        """The training attack (or ``attack``) as the :class:`AttackSpec` the in-graph backend runs.

        ``fgsm``: FGSM at eps; ``fgsm-rs``: one PGD step of ``1.25 eps`` from a random start;
        ``pgd``: ``pgd_steps`` steps of ``pgd_step`` (default ``2.5 eps / steps``) from a random start.
        """
        kind = TrainAttack.parse(self.attack if attack is None else attack, what="training attack")
        eps = float(self.eps)
        if kind is TrainAttack.FGSM:
            return AttackSpec(AttackMethod.FGSM, eps)
        if kind is TrainAttack.FGSM_RS:
            return AttackSpec(AttackMethod.PGD, eps, steps=1, step=1.25 * eps, random_start=True)
        return AttackSpec(AttackMethod.PGD, eps, steps=int(self.pgd_steps), step=self.pgd_step, random_start=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attack"] = str(self.attack)
        d["monitor"] = str(self.monitor)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinetuneConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known}).validated()


# --------------------------------------------------------------------------- checks

_INTS = ("epochs", "batch_size", "patience", "reduce_lr_patience", "pgd_steps", "guard_size", "seed")
_FLOATS = ("eps", "ratio", "lr", "label_smoothing", "reduce_lr_factor", "min_lr", "guard_drop", "pgd_step")
_BOOLS = ("train_bn", "guard")
_STRINGS = ("attack", "monitor", "optimizer", "trainable", "class_weight", "threshold_strategy")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _check_types(c: "FinetuneConfig") -> None:
    """Whole numbers are ints, numbers are finite ints or floats, switches are bools, names are strings."""
    for name in _INTS:
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise RobustlabError(f"{_flag(name)} {v!r} is not a whole number", fix=f"give a whole number, e.g. {_flag(name)} {getattr(FinetuneConfig, name)}")
    for name in _FLOATS:
        v = getattr(c, name)
        if v is None and name == "pgd_step":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
            raise RobustlabError(f"{_flag(name)} {v!r} is not a finite number", fix=f"give a number, e.g. {_flag(name)} {getattr(FinetuneConfig, name) or 0.01:g}")
    for name in _BOOLS:
        if not isinstance(getattr(c, name), (bool, np.bool_)):
            raise RobustlabError(f"{name} {getattr(c, name)!r} is not true or false", fix=f"use {_flag(name)} or --no-{name.replace('_', '-')}")
    for name in _STRINGS:
        if not isinstance(getattr(c, name), str):
            raise RobustlabError(f"{_flag(name)} {getattr(c, name)!r} is not a name", fix=f"e.g. {_flag(name)} {getattr(FinetuneConfig, name)}")


def _check_ranges(c: "FinetuneConfig") -> None:
    """The ranges of the (type-checked, finite) options."""
    checks = (
        (0.0 <= c.ratio <= 1.0, f"--ratio {c.ratio:g} is outside [0, 1]", "give the share of each batch to attack, e.g. --ratio 0.3 (0 = plain fine-tuning)"),
        (0.0 < c.eps <= 1.0, f"--eps {c.eps:g} is outside (0, 1]", "eps is a fraction of the pixel range, e.g. --eps 8/255"),
        (c.pgd_step is None or 0.0 < c.pgd_step <= 1.0, f"--pgd-step {c.pgd_step} is outside (0, 1]", "e.g. --pgd-step 2/255"),
        (c.epochs >= 1, f"--epochs {c.epochs} is less than 1", "train at least one epoch"),
        (c.batch_size >= 1, f"--batch-size {c.batch_size} is less than 1", "use a positive batch size"),
        (c.lr > 0, f"--lr {c.lr:g} is not positive", "e.g. --lr 1e-4"),
        (0.0 <= c.min_lr, f"--min-lr {c.min_lr:g} is negative", "e.g. --min-lr 1e-6 (the floor of reduce-on-plateau)"),
        (0.0 <= c.label_smoothing < 1.0, f"--label-smoothing {c.label_smoothing:g} is outside [0, 1)", "e.g. --label-smoothing 0.1"),
        (c.optimizer.lower() in OPTIMIZERS, f"unknown optimizer {c.optimizer!r}", f"use one of: {', '.join(OPTIMIZERS)}"),
        (c.patience >= 0 and c.reduce_lr_patience >= 0, "a patience is negative", "use 0 to switch it off, or a number of epochs"),
        (0.0 < c.reduce_lr_factor < 1.0, f"--reduce-lr-factor {c.reduce_lr_factor:g} is outside (0, 1)", "e.g. --reduce-lr-factor 0.5"),
        (c.pgd_steps >= 1, f"--pgd-steps {c.pgd_steps} is less than 1", "e.g. --pgd-steps 10"),
        (c.guard_size >= 2, f"--guard-size {c.guard_size} is less than 2", "e.g. --guard-size 128"),
        (0.0 < c.guard_drop <= 1.0, f"--guard-drop {c.guard_drop:g} is outside (0, 1]", "e.g. --guard-drop 0.2"),
    )
    for ok, problem, fix in checks:
        if not ok:
            raise RobustlabError(problem, fix=fix)


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
