"""Closed vocabularies, as string Enums converted once where a string enters the library."""
from __future__ import annotations

from enum import Enum
from typing import TypeVar

from robustlab.errors import RobustlabError

E = TypeVar("E", bound="StrEnum")


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls: type[E], value: "str | E", *, what: str, thing: str | None = None) -> E:
        """Convert a user string (case-insensitive) or raise a one-line RobustlabError."""
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        for member in cls:
            if member.value == text:
                return member
        known = ", ".join(m.value for m in cls)
        raise RobustlabError(f"unknown {what} {value!r}", thing=thing, fix=f"use one of: {known}")


class Scale(StrEnum):
    """How the detector expects pixel values (applied inside the graph to [0,1] RGB input)."""

    UINT8 = "0-255"
    UNIT = "0-1"
    SYMMETRIC = "-1-1"
    IMAGENET = "imagenet"


class ColorOrder(StrEnum):
    RGB = "rgb"
    BGR = "bgr"


class ResizeMethod(StrEnum):
    """How an image is resized to the detector's input, named by the library that does it.

    Each backend is that library's own call (robustlab.preprocess); the old names ``nearest``,
    ``bilinear``, ``bicubic`` and ``area`` keep meaning Pillow's filters.
    """

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    AREA = "area"
    PIL_NEAREST = "pil-nearest"  # = keras.utils.load_img(target_size=...)'s default
    PIL_BILINEAR = "pil-bilinear"
    PIL_BICUBIC = "pil-bicubic"  # = PIL.Image.resize's default
    PIL_BOX = "pil-box"
    CV2_LINEAR = "cv2-linear"  # = cv2.resize's default (INTER_LINEAR)
    CV2_AREA = "cv2-area"
    CV2_CUBIC = "cv2-cubic"
    TF_BILINEAR = "tf-bilinear"  # = tf.image.resize's default, as image_dataset_from_directory uses it
    TF_AREA = "tf-area"
    TF_BILINEAR_AA = "tf-bilinear-aa"  # tf.image.resize(..., antialias=True)

    @property
    def library(self) -> str:
        """``"pil"``, ``"cv2"`` or ``"tf"``: who resizes."""
        return self.value.split("-", 1)[0] if "-" in self.value else "pil"


class Decoder(StrEnum):
    """Which library decodes image files: Pillow (``PIL.Image.open``), OpenCV (``cv2.imread``,
    then BGR -> RGB) or TensorFlow (``tf.io.decode_image(channels=3)``)."""

    PIL = "pil"
    CV2 = "cv2"
    TF = "tf"


class AlphaRule(StrEnum):
    """What happens to a transparent image: composited on white or black, or alpha dropped
    (``convert("RGB")``, ``cv2.imread``, ``decode_image(channels=3)`` all drop it)."""

    WHITE = "white"
    BLACK = "black"
    DROP = "drop"


class Bit16Rule(StrEnum):
    """How 16-bit grayscale becomes 8-bit: ``scale`` (/257, rounded), ``clip`` (values above 255
    become 255: Pillow's ``convert("RGB")``, so Keras ``load_img``) or ``shift`` (the high byte:
    OpenCV and TensorFlow)."""

    SCALE = "scale"
    CLIP = "clip"
    SHIFT = "shift"


class ExifRule(StrEnum):
    """Whether the EXIF orientation tag is applied (``cv2.imread`` does; Pillow's ``open``,
    Keras ``load_img`` and TensorFlow's decoders do not)."""

    APPLY = "apply"
    IGNORE = "ignore"


class OutputKind(StrEnum):
    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    LOGITS = "logits"


class SetKind(StrEnum):
    CLEAN = "clean"
    ADVERSARIAL = "adversarial"
    MIXED = "mixed"
    CORRUPTED = "corrupted"
    WORST_CASE = "worst-case"
