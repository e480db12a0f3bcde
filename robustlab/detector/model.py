"""The loaded detector: preprocessing inside the graph, binary logits from any output head, score = P(fake).

A Keras model, a SavedModel layer, or an :class:`ExternalModel` run outside TensorFlow (an ONNX
Runtime session, a trusted Python scorer): one :class:`Detector` type over all of them; only the
first two are differentiable (``Detector.differentiable``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from robustlab.detector.spec import IMAGENET_MEAN, IMAGENET_STD, DetectorSpec
from robustlab.enums import ColorOrder, OutputKind, Scale
from robustlab.errors import RobustlabError


class ExternalModel(ABC):
    """A model robustlab runs outside TensorFlow, callable like a Keras model on a float32 tensor.

    ``model(x, training=False)``: float32 (N, H, W, 3) -> float32 (N, units), computed in numpy by
    :meth:`run` (eagerly; inside a ``tf.function`` through ``tf.numpy_function``). No gradient
    flows through it: white-box attacks are refused, square and hsj query it.
    """

    differentiable = False
    takes_preprocessed = True  # False: gets the [0, 1] RGB image, the spec's color/scale do not apply
    last_activation: str | None = None  # "sigmoid" | "softmax" | "linear" when the graph says so

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, 3) model input -> float32 (N, units) model output."""

    def __call__(self, x: Any, training: bool = False) -> Any:
        import tensorflow as tf

        if tf.executing_eagerly():
            return tf.constant(self.run(np.asarray(x, np.float32)))
        out = tf.numpy_function(self.run, [x], tf.float32, stateful=False)
        out.set_shape((None, None))
        return out


class OnnxModel(ExternalModel):
    """An ONNX Runtime session over one image input, NHWC or NCHW (read from the graph's input shape).

    ``run`` takes the preprocessed NHWC batch, transposes it for an NCHW graph, casts it to the
    input's dtype and runs the session, in chunks of the graph's fixed batch size when it has one
    (the last chunk padded and cut).
    """

    def __init__(self, session: Any, path: Path, *, layout: str, dtype: Any, batch: int | None, last_activation: str | None):
        self.session = session
        self.path = path
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.layout = layout
        self.dtype = np.dtype(dtype)
        self.batch = batch
        self.last_activation = last_activation

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=self.dtype)
        step = self.batch or max(len(x), 1)
        outs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            n = len(chunk)
            if self.batch and n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            try:
                out = self.session.run([self.output_name], {self.input_name: chunk})[0]
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors are one class per cause
                text = " ".join(str(exc).split())[:200]
                raise RobustlabError(f"ONNX Runtime failed on the model: {text}", thing=self.path, fix="check input_size and the model's input shape") from None
            outs.append(np.asarray(out, np.float32).reshape(len(chunk), -1)[:n])
        return np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)


class PythonScorer(ExternalModel):
    """A trusted Python function ``f(x uint8 (N, H, W, 3) RGB) -> P(fake) (N,)``, checked on every call.

    ``run`` gets the [0, 1] image (``takes_preprocessed`` is False: the function does its own
    preprocessing), rounds it back to uint8 exactly and returns float32 (N, 1).
    """

    takes_preprocessed = False
    last_activation = "sigmoid"  # the function returns a probability

    def __init__(self, ref: str, function: Callable[[np.ndarray], Any]):
        self.ref = ref
        self.function = function

    def score(self, x_uint8: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float64 (N,) in [0, 1], or a one-line RobustlabError naming the function."""
        n = len(x_uint8)
        fix = f"make {self.ref} return N probabilities in [0, 1] (a float array of shape (N,)) for N uint8 RGB images"
        try:
            out = self.function(x_uint8)
        except Exception as exc:  # noqa: BLE001 - the user's code: any failure is reported in one line
            text = " ".join(str(exc).split())[:160]
            raise RobustlabError(f"the scorer raised {exc.__class__.__name__}: {text}", thing=self.ref, fix=f"fix {self.ref}") from None
        try:
            p = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            raise RobustlabError(f"the scorer returned {type(out).__name__}, not numbers", thing=self.ref, fix=fix) from None
        if p.shape not in ((n,), (n, 1)):
            raise RobustlabError(f"the scorer returned shape {p.shape} for {n} images", thing=self.ref, fix=fix)
        p = p.reshape(n)
        if not np.isfinite(p).all():
            raise RobustlabError(f"the scorer returned {int((~np.isfinite(p)).sum())} NaN or infinite value(s) for {n} images", thing=self.ref, fix=fix)
        if ((p < 0) | (p > 1)).any():
            raise RobustlabError(f"the scorer returned values outside [0, 1] (min {p.min():.4g}, max {p.max():.4g})", thing=self.ref, fix=fix)
        return p

    def run(self, x: np.ndarray) -> np.ndarray:
        x_uint8 = np.clip(np.rint(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)
        return self.score(x_uint8).astype(np.float32).reshape(-1, 1)


def _last_dense(model: Any) -> tuple[Any | None, str | None]:
    """The final layer if it is Dense/Activation, with its activation name (for an
    :class:`ExternalModel`: no layer, and the activation its graph ends in, if known)."""
    if isinstance(model, ExternalModel):
        return None, model.last_activation
    layers = getattr(model, "layers", None)
    if not layers:
        return None, None
    last = layers[-1]
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", None) if act is not None else None
    if name is None and act is not None:
        name = str(act)
    return last, (name.lower() if name else None)


@dataclass
class Detector:
    """A loaded detector: the model, its spec and the [0,1]-RGB -> logits wrapper (differentiable
    unless the model is an :class:`ExternalModel`)."""

    spec: DetectorSpec
    model: Any
    info: dict[str, Any]
    input_size: tuple[int, int]
    output: OutputKind
    classes: tuple[str, ...]
    units: int
    _logit_source: str = "probabilities"
    _head: Callable[[Any, bool], Any] | None = None
    _score_fn: Any = None
    _score_bs: int = 0

    @property
    def positive(self) -> str:
        return self.spec.positive

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def differentiable(self) -> bool:
        """Whether gradients flow from the logits back to the image (False for ONNX and Python scorers)."""
        return bool(getattr(self.model, "differentiable", True))

    # ---- graph pieces -------------------------------------------------------------
    def preprocess(self, x01: Any) -> Any:
        """float32 (N, H, W, 3) RGB in [0, 1] -> what the model was trained on (tf ops)."""
        import tensorflow as tf

        x = tf.cast(x01, tf.float32)
        if not getattr(self.model, "takes_preprocessed", True):
            return x  # a Python scorer gets the image itself
        scale = self.spec.scale
        if scale is Scale.UINT8:
            x = x * 255.0
        elif scale is Scale.SYMMETRIC:
            x = x * 2.0 - 1.0
        elif scale is Scale.IMAGENET:
            x = (x - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)
        if self.spec.color is ColorOrder.BGR:
            x = x[..., ::-1]
        return x

    def raw_output(self, x01: Any, training: bool = False) -> Any:
        """The model's own output on preprocessed input, float32 (N, units)."""
        import tensorflow as tf

        out = self.model(self.preprocess(x01), training=training)
        if isinstance(out, Mapping):
            out = next(iter(out.values()))
        out = tf.cast(out, tf.float32)
        return tf.reshape(out, (-1, self.units))

    def class_logits(self, x01: Any, training: bool = False) -> Any:
        """float32 (N, H, W, 3) RGB in [0, 1] -> float32 (N, 2) logits [negative, positive].

        softmax of these logits gives [1 - score, score]. Where the model ends in a Dense layer
        with a sigmoid/softmax activation, the logits are that layer's pre-activation (exact
        gradients even when the probability saturates); otherwise they are log-probabilities.
        """
        import tensorflow as tf

        if self._head is not None:
            z = self._head(self.preprocess(x01), training)
        else:
            z = self.raw_output(x01, training)
        return _to_binary_logits(z, self.output if self._head is None else OutputKind.LOGITS, self.classes, self.positive, tf)

    def positive_probability(self, x01: Any, training: bool = False) -> Any:
        """float32 (N,) P(positive) as a differentiable tensor."""
        import tensorflow as tf

        return tf.nn.softmax(self.class_logits(x01, training), axis=-1)[:, 1]

    # ---- numpy scoring --------------------------------------------------------------
    def scores(self, x_uint8: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB at the input size -> float64 (N,) P(positive) in [0, 1]."""
        import tensorflow as tf

        x = np.asarray(x_uint8)
        if x.ndim != 4 or x.shape[1:] != (*self.input_size, 3):
            raise ValueError(f"expected (N, {self.input_size[0]}, {self.input_size[1]}, 3) images, got {x.shape}")
        if self._score_fn is None:
            h, w = self.input_size

            @tf.function(input_signature=[tf.TensorSpec((None, h, w, 3), tf.uint8)], reduce_retracing=True)
            def score_fn(batch):
                x01 = tf.cast(batch, tf.float32) / 255.0
                return self.positive_probability(x01, False)

            self._score_fn = score_fn
        if x.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {x.dtype}")
        if len(x) == 0:
            return np.zeros((0,), np.float64)
        if not self.differentiable:  # numpy underneath: eager, so its errors stay one-line RobustlabErrors
            return np.asarray(self.positive_probability(tf.constant(x.astype(np.float32) / 255.0), False), np.float64).clip(0.0, 1.0)
        return np.asarray(self._score_fn(tf.constant(x)), dtype=np.float64).clip(0.0, 1.0)

    def scores_float(self, x01: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """float32 (N, H, W, 3) in [0, 1] -> float64 (N,) P(positive), batched (no quantization)."""
        import tensorflow as tf

        out = []
        for start in range(0, len(x01), batch_size):
            chunk = tf.constant(np.asarray(x01[start : start + batch_size], np.float32))
            out.append(np.asarray(self.positive_probability(chunk, False), np.float64))
        return np.concatenate(out) if out else np.zeros((0,), np.float64)

    def describe(self) -> dict[str, Any]:
        """What run.json records about the detector: spec, loader and what was inferred."""
        return {
            "name": self.spec.name,
            "spec": self.spec.to_dict(),
            "spec_file": str(self.spec.source) if self.spec.source else None,
            "input_size": list(self.input_size),
            "output": str(self.output),
            "classes": list(self.classes),
            "units": self.units,
            "positive": self.positive,
            "threshold": self.threshold,
            "logits_from": self._logit_source,
            **{k: v for k, v in self.info.items() if k not in ("path",)},
        }


def _to_binary_logits(z: Any, kind: OutputKind, classes: tuple[str, ...], positive: str, tf: Any) -> Any:
    """(N, units) model output -> (N, 2) logits [negative, positive]."""
    eps = 1e-7
    units = z.shape[-1]
    if units == 1:
        if kind is OutputKind.SIGMOID:
            p = tf.clip_by_value(z[:, 0], eps, 1 - eps)
            logit = tf.math.log(p) - tf.math.log1p(-p)
        else:  # logits (or softmax on 1 unit, which is meaningless and rejected earlier)
            logit = z[:, 0]
        if classes[0] != positive:
            logit = -logit
        return tf.stack([tf.zeros_like(logit), logit], axis=1)
    pos = classes.index(positive)
    neg = 1 - pos
    if kind is OutputKind.SIGMOID:  # two independent sigmoids: use each as a logit
        p = tf.clip_by_value(z, eps, 1 - eps)
        z = tf.math.log(p) - tf.math.log1p(-p)
    elif kind is OutputKind.SOFTMAX:
        z = tf.math.log(tf.clip_by_value(z, eps, 1.0))
    return tf.stack([z[:, neg], z[:, pos]], axis=1)


def _infer_output_kind(model: Any, probe: np.ndarray | None) -> tuple[OutputKind, str]:
    _, act = _last_dense(model)
    if act in ("sigmoid",):
        return OutputKind.SIGMOID, "inferred from the last layer's sigmoid activation"
    if act in ("softmax",):
        return OutputKind.SOFTMAX, "inferred from the last layer's softmax activation"
    if act in ("linear",):
        return OutputKind.LOGITS, "inferred from the last layer's linear activation"
    if probe is not None:
        in_unit = bool(np.all((probe >= 0) & (probe <= 1)))
        if not in_unit:
            return OutputKind.LOGITS, "inferred from a probe: outputs outside [0, 1]"
        if probe.shape[-1] == 2 and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3):
            return OutputKind.SOFTMAX, "inferred from a probe: outputs in [0, 1] summing to 1"
        return OutputKind.SIGMOID, "inferred from a probe: outputs in [0, 1]"
    return OutputKind.SIGMOID, "assumed (could not be inferred)"


def _build_logit_head(model: Any, kind: OutputKind) -> Callable[[Any, bool], Any] | None:
    """Pre-activation of a final Dense(sigmoid|softmax) layer, or None when not available."""
    if kind is OutputKind.LOGITS:
        return None
    last, act = _last_dense(model)
    if last is None or act not in ("sigmoid", "softmax"):
        return None
    try:
        keras = _framework(model)  # keras 3, or tf_keras for a Keras 2 file

        if isinstance(last, keras.layers.Dense):
            feature = keras.Model(model.inputs, last.input)
            kernel, bias = last.kernel, last.bias

            def head(x: Any, training: bool) -> Any:
                import tensorflow as tf

                h = feature(x, training=training)
                z = tf.matmul(tf.cast(h, tf.float32), tf.cast(kernel, tf.float32))
                if bias is not None:
                    z = z + tf.cast(bias, tf.float32)
                return z

            return head
        if isinstance(last, keras.layers.Activation):
            feature = keras.Model(model.inputs, last.input)
            return lambda x, training: feature(x, training=training)
    except Exception:  # noqa: BLE001 - fall back to log-probabilities
        return None
    return None



def _framework(model: Any) -> Any:
    """The ``keras`` (3) or ``tf_keras`` (2) module a loaded model belongs to."""
    if type(model).__module__.startswith("tf_keras"):
        import tf_keras

        return tf_keras
    import keras

    return keras
