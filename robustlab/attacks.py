"""Adversarial test sets: FGSM and PGD through IBM ART, with one entry point doing the bookkeeping.

This is the only robustlab module that imports ART (lazily, inside functions).

* An attack is described by an :class:`AttackSpec` (method, eps, norm, PGD steps / step size /
  random start). ``eps`` is a fraction of the pixel range (CONTRACT section 1): ``8/255`` is eight
  grey levels whatever the model's own scaling, for L-inf and L2 alike.
* :func:`run_attack` is the one entry point every attack goes through. It runs ART's
  ``FastGradientMethod`` or ``ProjectedGradientDescent`` on the detector's differentiable
  ``[0, 1]``-RGB wrapper with the **true labels**, then always does the same bookkeeping: project onto
  the eps ball and ``[0, 1]``, deliver uint8 within the budget, and measure per image the realized
  L-inf / L2 (in /255 units), PSNR, SSIM and success (the delivered image is misclassified).
* :class:`AttackVariant` plugs an attack into :func:`robustlab.evaluate.evaluate` (the attacked
  subset), :func:`parse_attacks` reads ``fgsm:eps=2/255,8/255``-style strings, and
  :func:`cross_attack_checks` / :func:`sanity_check` are ``evaluate(checks=[...])`` functions that
  catch broken evaluations (gradient masking, a broken attack).

Speed. ART's ``TensorFlowV2Classifier.loss_gradient`` runs the model eagerly, layer by layer;
robustlab subclasses it with the same loss compiled as one ``tf.function`` (:func:`art_classifier`;
traced and run once up front), as fast as a hand-written ``tf.function`` gradient. The bookkeeping
is vectorised over the batch: delivery, norms and PSNR in numpy (exact integer differences), SSIM
in one compiled graph, and the success check is the one forward pass whose scores evaluate reuses.
What remains on top of a hand-written FGSM is that forward pass, SSIM and ART's own numpy steps;
each attack's ``record["seconds"]`` (run.json) splits its time by stage, and
``tests/benchmarks/bench_attacks.py`` measures the whole against hand-written FGSM.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

import numpy as np

from robustlab.enums import SetKind, StrEnum
from robustlab.errors import RobustlabError

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.data import Dataset
    from robustlab.detector import Detector
    from robustlab.evaluate import EvaluationResult, VariantStats


DEFAULT_PGD_STEPS = 10
PGD_STEP_FACTOR = 2.5  # default PGD step size: 2.5 * eps / steps (Madry et al.)
MAX_STEPS = 10_000
# --sanity: a PGD this strong must drive any working, differentiable detector to ~0 accuracy
SANITY_EPS = 64 / 255
SANITY_STEPS = 20
SANITY_MAX_ACCURACY = 0.05
SANITY_IMAGES = 64
# diagnostics
CHECK_EPS = 4 / 255  # at and above this L-inf eps an attack that does not hurt is suspicious
ZERO_GRADIENT_WARN = 0.10  # warn when this share of images had an exactly zero gradient throughout


class AttackMethod(StrEnum):
    FGSM = "fgsm"
    PGD = "pgd"


class Norm(StrEnum):
    """The norm that bounds the perturbation."""

    LINF = "inf"
    L2 = "2"

    @property
    def order(self) -> float:
        return np.inf if self is Norm.LINF else 2.0

    @classmethod
    def from_text(cls, value: "str | Norm", *, thing: str | None = None) -> "Norm":
        aliases = {"linf": "inf", "l_inf": "inf", "infinity": "inf", "np.inf": "inf", "l2": "2", "2.0": "2"}
        text = str(value).strip().lower()
        return cls.parse(aliases.get(text, text), what="norm", thing=thing)


def format_param_number(value: float) -> str:
    """The 4-decimal form rows use for eps and step sizes (``8/255 -> "0.0314"``)."""
    return f"{value:.4f}"


@dataclass(frozen=True)
class AttackSpec:
    """One attack at one eps.

    ``eps``: the perturbation budget as a fraction of the pixel range, in (0, 1] (L-inf: per pixel;
    L2: the L2 norm of the whole perturbation in [0, 1] pixel units). ``steps`` / ``step`` /
    ``random_start`` are PGD's (``step=None``: ``2.5 * eps / steps``); FGSM is one step of size eps.
    """

    method: AttackMethod
    eps: float
    norm: Norm = Norm.LINF
    steps: int = None  # type: ignore[assignment]  # None: 1 for FGSM, 10 for PGD
    step: float | None = None
    random_start: bool = None  # type: ignore[assignment]  # None: False for FGSM, True for PGD

    def __post_init__(self) -> None:
        method = AttackMethod.parse(self.method, what="attack")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "norm", Norm.from_text(self.norm))
        object.__setattr__(self, "eps", check_eps(self.eps))
        if method is AttackMethod.FGSM:
            if self.steps not in (None, 1) or self.step is not None or self.random_start:
                raise RobustlabError("fgsm takes no steps, step or random_start", fix="use pgd for an iterative attack")
            object.__setattr__(self, "steps", 1)
            object.__setattr__(self, "random_start", False)
        else:
            object.__setattr__(self, "steps", DEFAULT_PGD_STEPS if self.steps is None else self.steps)
            object.__setattr__(self, "random_start", True if self.random_start is None else bool(self.random_start))
        if not 1 <= int(self.steps) <= MAX_STEPS:
            raise RobustlabError(f"steps={self.steps} is outside 1..{MAX_STEPS}", fix="use a whole number of steps, e.g. steps=10")
        if self.step is not None and not 0.0 < float(self.step) <= 1.0:
            raise RobustlabError(f"step={self.step:g} is outside (0, 1]", fix="give the PGD step size in pixel units, e.g. step=2/255")

    @property
    def step_size(self) -> float:
        """The step size ART gets: eps for FGSM, ``step`` or ``2.5 * eps / steps`` for PGD."""
        if self.method is AttackMethod.FGSM:
            return self.eps
        return float(self.step) if self.step is not None else PGD_STEP_FACTOR * self.eps / self.steps

    @property
    def param(self) -> str:
        """The row's ``param``: ``eps=0.0314`` (FGSM), ``eps=0.0314,steps=10`` (PGD), plus any
        non-default ``step``, ``norm=2`` and ``random_start=false``."""
        parts = [f"eps={format_param_number(self.eps)}"]
        if self.method is AttackMethod.PGD:
            parts.append(f"steps={self.steps}")
            if self.step is not None:
                parts.append(f"step={format_param_number(self.step)}")
        if self.norm is Norm.L2:
            parts.append("norm=2")
        if self.method is AttackMethod.PGD and not self.random_start:
            parts.append("random_start=false")
        return ",".join(parts)

    @property
    def budget_levels(self) -> float:
        """The budget in grey levels a delivered uint8 image can use (L-inf: whole levels)."""
        levels = self.eps * 255.0
        return float(math.floor(levels + 1e-6)) if self.norm is Norm.LINF else levels

    def describe(self) -> dict[str, Any]:
        """What run.json records about the attack."""
        return {
            "method": self.method.value,
            "eps": self.eps,
            "eps_levels": round(self.eps * 255.0, 4),
            "norm": self.norm.value,
            "steps": self.steps,
            "step": self.step_size,
            "random_start": self.random_start,
            "labels": "true labels",
            "library": "adversarial-robustness-toolbox",
        }

    def title(self) -> str:
        from robustlab.reports import param_display

        return f"{self.method.value.upper()} ({param_display(self.param)})"


def check_eps(eps: float, *, what: str = "eps") -> float:
    """``eps`` as a float in (0, 1], or a one-line RobustlabError (exit 2)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise RobustlabError(f"{what} {eps!r} is not a number", fix="give eps as a fraction of the pixel range, e.g. 8/255 or 0.03") from None
    if not 0.0 < value <= 1.0 or math.isnan(value):
        raise RobustlabError(f"{what}={value:g} is outside (0, 1]", fix="eps is a fraction of the pixel range: 8/255 is eight grey levels")
    return value


def parse_eps(text: "str | float", *, what: str = "eps") -> float:
    """``"8/255"`` / ``"0.05"`` -> float in (0, 1], or a one-line RobustlabError."""
    from robustlab.metrics import parse_fraction

    try:
        value = parse_fraction(text, what=what)
    except ValueError as exc:
        raise RobustlabError(str(exc), fix="write eps as a number or a fraction like 8/255") from None
    return check_eps(value, what=what)


def parse_attack_fraction(text: "str | float", *, what: str = "fraction") -> float:
    """The attacked share of a set, in (0, 1] (``"0.3"``, ``"1/3"``), or a one-line RobustlabError."""
    from robustlab.metrics import parse_fraction

    try:
        value = parse_fraction(text, what=what)
    except ValueError as exc:
        raise RobustlabError(str(exc), fix="give a number in (0, 1], e.g. 0.3") from None
    if not 0.0 < value <= 1.0 or math.isnan(value):
        raise RobustlabError(f"{what}={value:g} is outside (0, 1]", fix="give the share of the set to attack, e.g. 0.3 (1 attacks every image)")
    return value


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_OPTIONS = {
    AttackMethod.FGSM: ("eps", "norm"),
    AttackMethod.PGD: ("eps", "norm", "steps", "step", "random_start"),
}


def make_attacks(
    method: "str | AttackMethod",
    eps: Sequence["str | float"],
    *,
    norm: "str | Norm" = Norm.LINF,
    steps: int | None = None,
    step: "str | float | None" = None,
    random_start: bool | None = None,
) -> list["AttackVariant"]:
    """One :class:`AttackVariant` per eps value; every value checked (RobustlabError, exit 2)."""
    m = AttackMethod.parse(method, what="attack")
    n = Norm.from_text(norm)
    if m is AttackMethod.FGSM:
        given = [name for name, v in (("steps", steps), ("step", step), ("random_start", random_start)) if v is not None]
        if given:
            raise RobustlabError(f"fgsm has no option {', '.join(given)}", thing="fgsm", fix="these are PGD options; use pgd for an iterative attack")
    if not eps:
        raise RobustlabError("no eps given", thing=m.value, fix=f"write e.g. {m.value}:eps=8/255")
    values = [parse_eps(e) for e in eps]
    step_value = None if step is None else parse_eps(step, what="step")
    out = []
    for e in values:
        if m is AttackMethod.FGSM:
            spec = AttackSpec(m, e, n)
        else:
            spec = AttackSpec(m, e, n, steps=steps, step=step_value, random_start=random_start)
        out.append(AttackVariant(spec))
    return out


def parse_attack(text: str) -> list["AttackVariant"]:
    """``"pgd:eps=2/255,8/255,steps=10,step=2/255,norm=inf,random_start=true"`` -> variants.

    Options are ``key=value`` separated by commas; bare values after ``eps=`` are more eps values
    (one variant per eps). FGSM takes ``eps`` and ``norm``; PGD also ``steps``, ``step`` and
    ``random_start``. Unknown names, eps outside (0, 1] and bad values raise a RobustlabError.
    """
    raw = str(text).strip()
    name, _, rest = raw.partition(":")
    name = name.strip().lower()
    try:
        method = AttackMethod.parse(name, what="attack", thing=raw)
    except RobustlabError as exc:
        raise RobustlabError(exc.problem, thing=raw, fix="use fgsm or pgd, e.g. fgsm:eps=8/255 or pgd:eps=8/255,steps=10") from None
    allowed = _OPTIONS[method]
    values: dict[str, list[str]] = {}
    last = None
    for token in (t.strip() for t in rest.split(",")):
        if not token:
            continue
        if "=" in token:
            key, _, value = token.partition("=")
            key = key.strip().lower().replace("-", "_")
            if key not in allowed:
                raise RobustlabError(f"unknown option {key!r} for {method.value}", thing=raw, fix=f"{method.value} takes: {', '.join(allowed)}")
            if key in values:
                raise RobustlabError(f"option {key!r} given twice", thing=raw, fix="give each option once (several eps values: eps=2/255,8/255)")
            values[key] = [value.strip()]
            last = key
        elif last == "eps":
            values["eps"].append(token)
        else:
            raise RobustlabError(f"{token!r} is not key=value", thing=raw, fix=f"write e.g. {method.value}:eps=2/255,8/255")
    if "eps" not in values:
        raise RobustlabError("no eps given", thing=raw, fix=f"write e.g. {method.value}:eps=8/255")
    try:
        steps = None
        if "steps" in values:
            s = values["steps"][0]
            if not s.isdigit():
                raise RobustlabError(f"steps={s!r} is not a whole number", fix="write e.g. steps=10")
            steps = int(s)
        random_start = None
        if "random_start" in values:
            r = values["random_start"][0].lower()
            if r not in _TRUE | _FALSE:
                raise RobustlabError(f"random_start={r!r} is not true or false", fix="write random_start=true or random_start=false")
            random_start = r in _TRUE
        return make_attacks(
            method,
            values["eps"],
            norm=values.get("norm", ["inf"])[0],
            steps=steps,
            step=values.get("step", [None])[0],
            random_start=random_start,
        )
    except RobustlabError as exc:
        raise RobustlabError(exc.problem, thing=raw, fix=exc.fix) from None


def parse_attacks(texts: Sequence[str]) -> list["AttackVariant"]:
    """Parse CLI/suite attack strings (see :func:`parse_attack`) into variants, in order.

    Raises :class:`RobustlabError` (exit 2) for an unknown attack or option, eps <= 0 or > 1, or a
    bad value; a repeated attack (same method and param) is given once.
    """
    if isinstance(texts, str):
        texts = [texts]
    out: list[AttackVariant] = []
    seen: set[tuple[str, str]] = set()
    for text in texts:
        for v in parse_attack(text):
            key = (v.variant, v.param)
            if key not in seen:
                seen.add(key)
                out.append(v)
    return out


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


# --------------------------------------------------------------------------- the entry point


class AttackResult(NamedTuple):
    """What :func:`run_attack` returns, per image of the batch.

    ``images`` uint8 (N, H, W, 3): the delivered adversarial images; ``success`` bool (N,): the
    delivered image is misclassified; ``linf`` / ``l2`` float64 (N,): realized perturbation in /255
    units (grey levels); ``psnr`` float64 (N,) dB (inf when unchanged); ``ssim`` float64 (N,).
    """

    images: np.ndarray
    success: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray


def deliver(x_uint8: np.ndarray, x_adv: np.ndarray, spec: AttackSpec) -> np.ndarray:
    """Project ``x_adv`` onto the eps ball around ``x_uint8`` and [0, 1], then deliver uint8.

    ``x_uint8`` uint8 (N, H, W, 3); ``x_adv`` float (N, H, W, 3) in [0, 1] (NaN counts as 0). The
    delivered image never exceeds the budget: L-inf rounds to the nearest grey level within
    ``floor(eps * 255)`` levels; L2 rounds, and where that would exceed eps rounds the largest
    scaled-down perturbation that fits (or truncates toward the clean image, whichever keeps more
    of it). Vectorised numpy over the whole batch.
    """
    x = np.asarray(x_uint8)
    x32 = x.astype(np.float32)
    d = np.clip(np.asarray(x_adv, dtype=np.float32), 0.0, 1.0)
    if np.isnan(d).any():
        d = np.where(np.isnan(d), np.float32(0.0), d)
    d *= np.float32(255.0)
    d -= x32  # grey levels
    if spec.norm is Norm.LINF:
        limit = np.float32(spec.budget_levels)
        q = np.rint(d, out=d)
        np.clip(q, -limit, limit, out=q)
    else:
        q = _quantize_l2(d.reshape(len(d), -1), spec.eps * 255.0).reshape(d.shape)
    q += x32
    np.clip(q, 0.0, 255.0, out=q)
    return q.astype(np.uint8)


def _quantize_l2(d: np.ndarray, radius: float, iterations: int = 12) -> np.ndarray:
    """Whole grey levels (float32 (N, D)) for L2 perturbations ``d`` float32 (N, D), inside ``radius``.

    ``d`` is first projected onto the ball. Rounding can push the norm over the radius; then the
    largest scale ``s`` (bisection) with ``round(s * d)`` inside the ball is used, or ``d``
    truncated toward zero, whichever is larger. Norms of whole grey levels are summed exactly
    (float64).
    """
    r2 = float(radius) ** 2

    def sq(t: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", t, t, dtype=np.float64)

    norm = np.sqrt(sq(d))
    scale = np.where(norm > radius, radius / np.maximum(norm, 1e-12), 1.0)
    d = (d * scale[:, None]).astype(np.float32)
    q = np.rint(d)
    over = sq(q) > r2
    if over.any():
        dd = d[over]
        lo = np.zeros(len(dd), np.float32)
        hi = np.ones(len(dd), np.float32)
        for _ in range(iterations):
            mid = (lo + hi) / np.float32(2.0)
            fits = sq(np.rint(mid[:, None] * dd)) <= r2
            lo = np.where(fits, mid, lo)
            hi = np.where(fits, hi, mid)
        scaled = np.rint(lo[:, None] * dd)
        truncated = np.trunc(dd)
        q[over] = np.where((sq(scaled) >= sq(truncated))[:, None], scaled, truncated)
    return q


def _measure(x_uint8: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Realized L-inf and L2 (/255 units) and PSNR (dB, inf when unchanged) per image, float64 (N,),
    exact (integer differences)."""
    diff = (images.astype(np.int16) - x_uint8.astype(np.int16)).reshape(len(images), -1)
    linf = np.abs(diff).max(axis=1).astype(np.float64) if diff.shape[1] else np.zeros(len(images))
    sq = np.einsum("ij,ij->i", diff, diff, dtype=np.int64).astype(np.float64)
    mse = sq / max(diff.shape[1], 1)
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-30)), np.inf)
    return linf, np.sqrt(sq), psnr


def _ssim(a: Any, b: Any, filter_size: int, tf: Any) -> Any:
    """SSIM per image of float32 (N, H, W, 3) in [0, 255], as ``tf.image.ssim`` (Gaussian window
    ``filter_size``, sigma 1.5, k1 0.01, k2 0.03, valid padding, mean over channels), computed with
    one separable blur of the five statistics at once (several times cheaper)."""
    c = np.arange(filter_size, dtype=np.float64) - (filter_size - 1) / 2.0
    g = np.exp(-(c**2) / (2 * 1.5**2))
    g = (g / g.sum()).astype(np.float32)
    stats = tf.concat([a, b, a * a, b * b, a * b], axis=-1)  # (N, H, W, 15)
    k = tf.constant(np.tile(g.reshape(-1, 1, 1, 1), (1, 1, 15, 1)))
    blurred = tf.nn.depthwise_conv2d(stats, k, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, tf.reshape(k, (1, filter_size, 15, 1)), [1, 1, 1, 1], "VALID")
    ma, mb, aa, bb, ab = tf.split(blurred, 5, axis=-1)
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mab = ma * mb
    m2 = ma * ma + mb * mb
    return tf.reduce_mean((2 * mab + c1) * (2 * (ab - mab) + c2) / ((m2 + c1) * (aa + bb - m2 + c2)), axis=[1, 2, 3])


@functools.lru_cache(maxsize=8)
def _ssim_fn(filter_size: int) -> Callable[..., Any]:
    """``(clean uint8, delivered uint8) -> SSIM float32 (N,)``, one ``tf.function`` per window
    size (any image size and batch size: traced once per process)."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, None, None, 3), tf.uint8), tf.TensorSpec((None, None, None, 3), tf.uint8)]

    @tf.function(input_signature=signature, reduce_retracing=True, autograph=False)
    def ssim(clean: Any, delivered: Any) -> Any:
        return _ssim(tf.cast(clean, tf.float32), tf.cast(delivered, tf.float32), filter_size, tf)

    return ssim


def image_ssim(x_uint8: np.ndarray, images: np.ndarray) -> np.ndarray:
    """SSIM of each image of ``images`` against ``x_uint8`` (both uint8 (N, H, W, 3)), float64 (N,),
    as ``tf.image.ssim`` with max value 255 (the window shrinks to the image below 11 pixels)."""
    import tensorflow as tf

    h, w = x_uint8.shape[1:3]
    return np.asarray(_ssim_fn(min(11, h, w))(tf.constant(x_uint8), tf.constant(images)), np.float64)


def run_attack(detector: "Detector", x_uint8: np.ndarray, y: np.ndarray, spec: AttackSpec, rng: np.random.Generator, *, tally: "AttackTally | None" = None) -> AttackResult:
    """Attack a batch with ART and do the bookkeeping every attack gets.

    ``x_uint8`` uint8 (N, H, W, 3) at the detector's input size; ``y`` int (N,) **true** labels,
    1 for the detector's positive class (passed to ART: never replaced by predictions); ``rng``
    seeds PGD's random start (ART draws it from numpy's global generator, which is seeded from
    ``rng`` for the call and restored afterwards, so the same seed gives the same bytes).
    ``tally`` (optional) accumulates totals across batches. Returns an :class:`AttackResult`.
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
    result = AttackResult(images, success, linf, l2, psnr, ssim)
    if tally is not None:
        gradient = min(clf.gradient_seconds, t1 - t0)
        tally.add(result, zero, scores, seconds={"gradient": gradient, "art_other": t1 - t0 - gradient, "deliver_and_norms": t2 - t1, "ssim": t3 - t2, "success_check": t4 - t3})
    return result


@dataclass
class AttackTally:
    """Totals of one attack over the batches it ran on (for run.json and the diagnostics).

    ``seconds`` splits :func:`run_attack`'s time by stage: ``gradient`` (the compiled loss
    gradient, every step), ``art_other`` (ART's own work around it: numpy steps, projection and
    clipping for FGSM; tf ops and its success-rate log line for PGD), ``deliver_and_norms``,
    ``ssim`` and ``success_check`` (scoring the delivered images).
    """

    n: int = 0
    success: int = 0
    zero_gradient: int = 0
    zero_gradient_tracked: int = 0
    unchanged: int = 0
    psnr_sum: float = 0.0
    psnr_finite: int = 0
    ssim_sum: float = 0.0
    ssim_min: float = 1.0
    last_scores: np.ndarray | None = field(default=None, repr=False)  # P(positive) of the latest batch
    seconds: dict[str, float] = field(default_factory=dict)  # per stage of run_attack, summed over batches

    def add(self, r: AttackResult, zero_gradient: np.ndarray | None, scores: np.ndarray | None = None, seconds: dict[str, float] | None = None) -> None:
        self.last_scores = scores
        for stage, t in (seconds or {}).items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + t
        self.n += len(r.images)
        self.success += int(r.success.sum())
        self.unchanged += int((r.linf == 0).sum())
        finite = np.isfinite(r.psnr)
        self.psnr_sum += float(r.psnr[finite].sum())
        self.psnr_finite += int(finite.sum())
        self.ssim_sum += float(r.ssim.sum())
        if len(r.ssim):
            self.ssim_min = min(self.ssim_min, float(r.ssim.min()))
        if zero_gradient is not None:
            self.zero_gradient += int(zero_gradient.sum())
            self.zero_gradient_tracked += len(zero_gradient)

    def summary(self) -> dict[str, Any]:
        return {
            "images": self.n,
            "success": self.success,
            "success_rate": self.success / self.n if self.n else None,
            "unchanged": self.unchanged,
            "zero_gradient": self.zero_gradient,
            "psnr_mean_db": self.psnr_sum / self.psnr_finite if self.psnr_finite else None,
            "ssim_mean": self.ssim_sum / self.n if self.n else None,
            "ssim_min": self.ssim_min if self.n else None,
            "seconds": {stage: round(t, 4) for stage, t in self.seconds.items()},
        }


@dataclass(eq=False)
class AttackVariant:
    """An attack as an :func:`robustlab.evaluate.evaluate` variant (the attacked subset).

    ``record`` is a live dict (spec + totals, refreshed after every batch) meant for
    ``evaluate(extra_info={"attacks": [v.record, ...]})``; ``last`` is the latest batch's
    :class:`AttackResult` (for ``on_delivered`` callbacks such as :class:`AdversarialWriter`).
    Totals accumulate over every batch the object attacks: use fresh variants (``parse_attacks``)
    for each evaluation.
    """

    spec: AttackSpec
    kind: SetKind = SetKind.ADVERSARIAL
    tally: AttackTally = field(default_factory=AttackTally)
    last: AttackResult | None = field(default=None, repr=False)
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.record.update({"variant": self.variant, "param": self.param, "spec": self.spec.describe(), **self.tally.summary()})

    @property
    def variant(self) -> str:
        return self.spec.method.value

    @property
    def param(self) -> str:
        return self.spec.param

    def apply(self, detector: "Detector", x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (B, H, W, 3) clean images, positive-class labels -> uint8 delivered adversarial images."""
        self.last = run_attack(detector, x, y, self.spec, rng, tally=self.tally)
        self.record.update(self.tally.summary())
        return self.last.images

    def delivered_scores(self, images: np.ndarray) -> np.ndarray | None:
        """float64 (B,) P(positive) of ``images`` when they are this attack's latest delivered batch
        (scored once, by the success check), else None: evaluate then scores them itself."""
        if self.last is None or images is not self.last.images or self.tally.last_scores is None:
            return None
        return self.tally.last_scores

    def diagnostics(self, stats: "VariantStats", rows: Sequence[Any]) -> list[str]:
        """Warnings about this attack's evaluation: eps lost to uint8 delivery, a realized
        perturbation far from eps, identical images, an exactly zero gradient (saturated score)."""
        spec = self.spec
        a = stats.arrays()
        n = len(a["idx"])
        out: list[str] = []
        name = spec.title()
        if n == 0:
            return out
        if spec.eps * 255.0 < 1.0 - 1e-9:
            out.append(
                f"{name}: eps={spec.eps:.4g} is {spec.eps * 255:.2f} grey levels, less than one: uint8 delivery rounds it away and the "
                f"adversarial images equal the clean ones; use eps >= 1/255"
            )
            return out
        if spec.norm is Norm.LINF:
            budget = spec.budget_levels
            realized = np.median(a["linf"])
            if realized < 0.5 * budget:
                out.append(
                    f"{name}: the realized L-inf perturbation (median {realized:g}/255) is far below eps ({budget:g}/255): "
                    f"the perturbation collapsed (zero gradients, or clipping at 0/255 on saturated images)"
                )
            if a["linf"].max() > budget + 1e-9:
                out.append(f"{name}: the realized L-inf perturbation ({a['linf'].max():g}/255) exceeds eps ({budget:g}/255): the images were destroyed beyond the budget")
        else:
            radius = spec.eps * 255.0
            realized = np.median(a["l2"])
            if realized < 0.5 * radius:
                out.append(
                    f"{name}: the realized L2 perturbation (median {realized:.3g}/255) is far below eps ({radius:.3g}/255): rounding "
                    f"to uint8 erased most of it (per-pixel changes under half a grey level); use a larger eps"
                )
            if a["l2"].max() > radius + 1e-6:
                out.append(f"{name}: the realized L2 perturbation ({a['l2'].max():.3g}/255) exceeds eps ({radius:.3g}/255): the images were destroyed beyond the budget")
        unchanged = float(np.mean(a["linf"] == 0))
        if unchanged > 0.5:
            out.append(f"{name}: {unchanged:.0%} of the delivered images are identical to the clean ones")
        t = self.tally
        if t.zero_gradient_tracked and t.zero_gradient / t.zero_gradient_tracked >= ZERO_GRADIENT_WARN:
            sat = float(np.mean((a["clean_scores"] <= 0.0) | (a["clean_scores"] >= 1.0)))
            out.append(
                f"{name}: {t.zero_gradient}/{t.zero_gradient_tracked} images had an exactly zero loss gradient at every step "
                f"({sat:.0%} of clean scores are saturated at exactly 0 or 1): the score saturates and the attack cannot move "
                f"them; robust accuracy is overstated (gradient masking). If the model ends in a probability layer robustlab "
                f"cannot see through, give output: logits and a model that returns logits"
            )
        return out


# --------------------------------------------------------------------------- checks across attacks


def _accuracy(y: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    from robustlab.metrics import predict

    return float(np.mean(predict(scores, threshold) == y)) if len(y) else math.nan


def cross_attack_checks(result: "EvaluationResult") -> list[str]:
    """``evaluate(checks=[cross_attack_checks])``: warnings that point to a broken evaluation.

    * an L-inf attack at eps >= 4/255 whose adversarial accuracy is not below the clean accuracy of
      the same images (the attack did nothing: gradient masking, a wrong spec, a broken attack);
    * PGD weaker than FGSM at the same eps and norm (PGD with the same budget is at least as strong).
    """
    threshold = float(result.info["threshold"])
    out: list[str] = []
    acc: dict[tuple[str, float, str], tuple[float, int, str]] = {}
    for st in result.variant_stats:
        v = st.variant
        if not isinstance(v, AttackVariant):
            continue
        a = st.arrays()
        n = len(a["idx"])
        if n == 0:
            continue
        adv = _accuracy(a["y"], a["scores"], threshold)
        clean = _accuracy(a["y"], a["clean_scores"], threshold)
        spec = v.spec
        if spec.norm is Norm.LINF and spec.eps >= CHECK_EPS - 1e-9 and clean > 0 and adv >= clean:
            out.append(
                f"{spec.title()}: adversarial accuracy {adv:.1%} is not below the clean accuracy {clean:.1%} of the same {n} images "
                f"at eps >= 4/255: the attack did not hurt; suspect gradient masking (a saturated or non-differentiable score), "
                f"a wrong preprocessing spec (scale, color) or a broken attack"
            )
        key = (spec.method.value, round(spec.eps, 6), spec.norm.value)
        prev = acc.get(key)
        if prev is None or adv < prev[0]:  # strongest setting per method, eps and norm
            acc[key] = (adv, n, spec.title())
    for (method, eps, norm), (pgd_acc, n, title) in acc.items():
        if method != AttackMethod.PGD.value:
            continue
        fgsm = acc.get((AttackMethod.FGSM.value, eps, norm))
        if fgsm is None:
            continue
        fgsm_acc, fgsm_n, fgsm_title = fgsm
        tolerance = max(0.02, 1.5 / min(n, fgsm_n))
        if pgd_acc > fgsm_acc + tolerance:
            out.append(
                f"{title} is weaker than {fgsm_title}: accuracy {pgd_acc:.1%} vs {fgsm_acc:.1%}; PGD with the same budget should be "
                f"at least as strong: suspect gradient masking (obfuscated or noisy gradients), too few steps or too small a step"
            )
    return out


def sanity_check(detector: "Detector", data: "Dataset", *, seed: int = 0, batch_size: int = 32, max_images: int = SANITY_IMAGES, record: dict[str, Any] | None = None) -> Callable[["EvaluationResult"], list[str]]:
    """An ``evaluate(checks=[...])`` function: a large-eps PGD (L-inf eps=64/255, 20 steps) on up to
    ``max_images`` images (stratified, seeded) must drive accuracy to <= 5%.

    Returns a warning when it does not (the attack cannot find the detector's weak spots: gradient
    masking, a saturated or non-differentiable score, a wrong spec). ``record`` (a dict) receives
    the outcome for run.json.
    """
    from robustlab.evaluate import stratified_subset

    spec = AttackSpec(AttackMethod.PGD, SANITY_EPS, Norm.LINF, steps=SANITY_STEPS, random_start=True)
    rec = record if record is not None else {}

    def check(result: "EvaluationResult") -> list[str]:
        labels = data.labels if detector.positive == "fake" else 1 - data.labels
        fraction = min(1.0, max_images / max(len(data), 1))
        idx = stratified_subset(labels, fraction, seed)
        rng = np.random.default_rng([seed, 0x5A17])
        n = correct = clean_correct = 0
        for b in data.batches(detector.input_size, method=detector.spec.resize, batch_size=batch_size, indices=idx):
            if len(b.idx) == 0:
                continue
            y = b.y if detector.positive == "fake" else 1 - b.y
            r = run_attack(detector, b.x, y, spec, rng)
            n += len(y)
            correct += int((~r.success).sum())
            clean_correct += int(np.sum((detector.scores(b.x) >= detector.threshold).astype(np.int64) == y))
        accuracy = correct / n if n else None
        passed = accuracy is not None and accuracy <= SANITY_MAX_ACCURACY
        rec.update(
            {
                "attack": spec.describe(),
                "images": n,
                "clean_accuracy": clean_correct / n if n else None,
                "adversarial_accuracy": accuracy,
                "max_accuracy": SANITY_MAX_ACCURACY,
                "passed": passed,
            }
        )
        if n == 0 or passed:
            return []
        return [
            f"sanity check failed: PGD at eps=64/255 ({SANITY_STEPS} steps, L-inf) left accuracy at {accuracy:.1%} on {n} images "
            f"(expected <= {SANITY_MAX_ACCURACY:.0%}): the attack cannot find the detector's weak spots; suspect gradient masking, "
            f"a saturated or non-differentiable score, or a wrong preprocessing spec; this run's attack rows overstate robustness"
        ]

    check.record = rec  # type: ignore[attr-defined]
    return check


def sanity_message(record: dict[str, Any]) -> str:
    """One line about a finished sanity check (for stderr)."""
    if not record or record.get("images", 0) == 0:
        return "sanity check: no image could be attacked"
    verdict = "passed" if record["passed"] else "FAILED"
    return (
        f"sanity check {verdict}: PGD eps=64/255, {SANITY_STEPS} steps drove accuracy from {record['clean_accuracy']:.1%} to "
        f"{record['adversarial_accuracy']:.1%} on {record['images']} images (must be <= {SANITY_MAX_ACCURACY:.0%})"
    )


# --------------------------------------------------------------------------- saving adversarial sets


def _safe_parts(rel: str) -> list[str]:
    parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".", "..", "/") and not p.endswith(":")]
    return parts or ["image"]


class AdversarialWriter:
    """An ``evaluate(on_delivered=...)`` callback saving delivered adversarial images as PNG.

    Images go under ``root`` (e.g. ``RunFolder.path("adversarial")``) mirroring the input's relative
    paths with a ``.png`` suffix (class-folder data: ``fake/img_001.png``; a manifest or .npz:
    ``real/`` / ``fake/`` + the path), so the folder is itself a valid DATA argument. With several
    attacks each gets a sub-folder named after it (``fgsm_eps=0.0314``). Also writes one CSV line per
    image (id, paths, variant, param, label, linf, l2, psnr, ssim, success) to ``table``.
    ``record`` is a live summary for run.json.
    """

    FIELDS = ("id", "path", "adversarial_path", "variant", "param", "label", "linf", "l2", "psnr", "ssim", "success")

    def __init__(self, root: "str | Path", data: "Dataset", variants: Sequence[Any], *, table: "str | Path | None" = None, save_images: bool = True):
        from robustlab.reports import slug

        self.root = Path(root)
        self.data = data
        self.save_images = save_images
        attacks = [v for v in variants if getattr(v, "kind", None) is SetKind.ADVERSARIAL]
        self.prefix = {id(v): (slug(f"{v.variant}_{v.param}") + "/" if len(attacks) > 1 else "") for v in attacks}
        self.used: dict[str, set[str]] = {}
        self.record: dict[str, Any] = {
            "folder": self.root.name if save_images else None,
            "images": 0,
            "layout": "one sub-folder per attack" if len(attacks) > 1 else "the input's relative paths",
            "folders": sorted({self.root.name + "/" + p for p in self.prefix.values()}),
            "table": None if table is None else Path(table).name,
        }
        self.table = None if table is None else Path(table)
        if self.table is not None:
            self.table.parent.mkdir(parents=True, exist_ok=True)
            self.table.write_text(",".join(self.FIELDS) + "\n", encoding="utf-8")

    def relpath(self, i: int) -> str:
        """Where image ``i`` of the data set goes, relative to the attack's folder."""
        data = self.data
        label = "fake" if int(data.labels[i]) == 1 else "real"
        if data.kind == "folders":
            parts = _safe_parts(data.paths[i])
        elif data.kind == "npz":
            parts = [label, f"x_{i:06d}"]
        else:
            parts = [label, *_safe_parts(data.paths[i])]
        stem = parts[-1]
        suffix = PurePosixPath(stem).suffix
        if suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"):
            stem = stem[: -len(suffix)]
        parts[-1] = stem + ".png"
        return "/".join(parts)

    def __call__(self, variant: Any, idx: np.ndarray, images: np.ndarray) -> None:
        import csv

        from PIL import Image

        if id(variant) not in self.prefix:
            return
        prefix = self.prefix[id(variant)]
        used = self.used.setdefault(prefix, set())
        last = getattr(variant, "last", None)
        lines = []
        for k, (i, img) in enumerate(zip(idx.tolist(), images)):
            rel = self.relpath(i)
            if rel in used:  # two inputs map to one name (a.jpg and a.png): keep both
                rel = f"{rel[:-4]}__{i}.png"
            used.add(rel)
            if self.save_images:
                path = self.root / f"{prefix}{rel}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG", compress_level=1)
                self.record["images"] += 1
            if self.table is not None:
                row = [i, self.data.paths[i], f"{prefix}{rel}", variant.variant, variant.param, int(self.data.labels[i])]
                if last is not None and len(last.images) == len(idx):
                    psnr = last.psnr[k]
                    row += [f"{last.linf[k]:g}", f"{last.l2[k]:.4f}", "inf" if not np.isfinite(psnr) else f"{psnr:.3f}", f"{last.ssim[k]:.5f}", int(last.success[k])]
                else:
                    row += ["", "", "", "", ""]
                lines.append(row)
        if self.table is not None and lines:
            import io

            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(lines)
            with self.table.open("a", encoding="utf-8") as fh:
                fh.write(buf.getvalue())


def attack_info(variants: Sequence[Any]) -> list[dict[str, Any]]:
    """The live ``record`` dicts of the attack variants, for ``evaluate(extra_info={"attacks": ...})``."""
    return [v.record for v in variants if isinstance(v, AttackVariant)]


__all__ = [
    "AttackMethod",
    "Norm",
    "AttackSpec",
    "AttackResult",
    "AttackTally",
    "AttackVariant",
    "AdversarialWriter",
    "DetectorLogits",
    "art_classifier",
    "attack_checks",
    "attack_info",
    "check_differentiable",
    "check_eps",
    "cross_attack_checks",
    "deliver",
    "make_attacks",
    "parse_attack",
    "parse_attack_fraction",
    "parse_attacks",
    "parse_eps",
    "run_attack",
    "sanity_check",
    "sanity_message",
]


def attack_checks(
    detector: "Detector",
    data: "Dataset",
    variants: Sequence[Any],
    *,
    sanity: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    info: dict[str, Any] | None = None,
) -> list[Callable[["EvaluationResult"], list[str]]]:
    """The ``evaluate(checks=...)`` list for a run with attacks: :func:`cross_attack_checks`, plus
    :func:`sanity_check` when ``sanity``. ``info`` (the run's ``extra_info``) receives
    ``attacks`` (live per-attack records) and ``sanity`` (the sanity outcome). With attacks or
    ``sanity``, a detector without input gradients is refused here (RobustlabError), before any work."""
    checks: list[Callable[["EvaluationResult"], list[str]]] = []
    attacks = any(isinstance(v, AttackVariant) for v in variants)
    if attacks or sanity:
        art_classifier(detector)  # a detector without input gradients stops here, with the reason
    if attacks:
        checks.append(cross_attack_checks)
        if info is not None:
            info["attacks"] = attack_info(variants)
    if sanity:
        record: dict[str, Any] = {}
        checks.append(sanity_check(detector, data, seed=seed, batch_size=batch_size, record=record))
        if info is not None:
            info["sanity"] = record
    return checks
