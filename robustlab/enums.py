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
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    AREA = "area"


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
