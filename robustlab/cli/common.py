"""Shared CLI pieces: the error-handling group, the context object, common options and types."""
from __future__ import annotations

import errno
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

from robustlab.enums import ResizeMethod
from robustlab.errors import PolicyFailed, RobustlabError


@dataclass
class State:
    """What travels in the Click context: seed, batch size, verbosity."""

    seed: int = 0
    batch_size: int = 32
    quiet: bool = False
    debug: bool = False

    @property
    def progress(self) -> bool:
        """Progress unless --quiet: a bar on a terminal, a plain line every ~10 s elsewhere (robustlab.progress)."""
        return not self.quiet


pass_state = click.make_pass_decorator(State, ensure=True)


class RobustlabGroup(click.Group):
    """Turns library exceptions into the contract's exit codes and one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RobustlabError as exc:
            if _debug(ctx):
                raise
            click.echo(f"robustlab: error: {exc.one_line()}", err=True)
            ctx.exit(2)
        except PolicyFailed as exc:
            if _debug(ctx):
                raise
            msg = str(exc)
            if msg:
                click.echo(f"robustlab: {msg}", err=True)
            ctx.exit(1)
        except click.UsageError as exc:  # a bad flag or value: the same one line as any bad input
            if _debug(ctx) or "--debug" in ctx.meta.get("robustlab.args", ()):
                raise
            self._usage_error(ctx, exc)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OSError as exc:  # a write failure robustlab did not wrap: full disk, read-only, quota
            if _debug(ctx) or exc.errno not in WRITE_ERRNOS:
                if _debug(ctx):
                    raise
                return self._internal_error(ctx, exc)
            from robustlab.runs import write_failed

            target = exc.filename or _out_argument(ctx.meta.get("robustlab.args", ()))
            err = write_failed(target, exc) if target else RobustlabError(f"a write failed ({exc.strerror or exc.__class__.__name__})", fix="free space on the disk that holds --out (or raise the quota), or choose an --out on another disk")
            click.echo(f"robustlab: error: {err.one_line()}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("robustlab: interrupted; nothing half-written was left behind", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001
            if _debug(ctx):
                raise
            self._internal_error(ctx, exc)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if "--debug" in args:
                raise
            self._usage_error(ctx, exc)
            raise  # not reached: ctx.exit raises

    @staticmethod
    def _usage_error(ctx: click.Context, exc: click.UsageError) -> None:
        """``robustlab: error: robustlab CMD: what was wrong; see `robustlab CMD --help``` and exit 2."""
        where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
        message = " ".join(exc.format_message().split()).rstrip(".")
        click.echo(f"robustlab: error: {where}: {message}; see `{where} --help`", err=True)
        ctx.exit(2)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        """Also keep the command's raw arguments, so a write failure can name its --out's disk."""
        ctx.meta["robustlab.args"] = list(args)
        return super().resolve_command(ctx, args)

    @staticmethod
    def _internal_error(ctx: click.Context, exc: BaseException) -> None:
        text = " ".join(str(exc).split())[:300]
        click.echo(f"robustlab: internal error: {exc.__class__.__name__}: {text} (rerun with --debug for the traceback; please report it)", err=True)
        ctx.exit(3)


def _out_argument(args: Any) -> str | None:
    """The value of ``--out`` among raw command-line ``args`` (``--out X`` or ``--out=X``), if any."""
    args = list(args)
    for i, a in enumerate(args):
        if a == "--out" and i + 1 < len(args):
            return str(args[i + 1])
        if isinstance(a, str) and a.startswith("--out="):
            return a[len("--out=") :]
    return None


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""OS errors that mean "this disk cannot take the output": exit 2 naming the disk, not a bug."""


def _debug(ctx: click.Context) -> bool:
    if os.environ.get("ROBUSTLAB_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    state = ctx.find_object(State)
    return bool(state and state.debug)


def _set_state(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        setattr(ctx.ensure_object(State), attr, value)
        if attr == "debug" and value:
            logging.getLogger("robustlab").setLevel(logging.DEBUG)
        return value

    return callback


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--seed, --batch-size, --quiet, --debug on every command (also ROBUSTLAB_SEED etc.)."""
    opts = [
        click.option("--seed", type=int, default=0, show_default=True, envvar="ROBUSTLAB_SEED", expose_value=False, is_eager=True, callback=_set_state("seed"), help="Random seed; the same seed gives byte-identical tables."),
        click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True, envvar="ROBUSTLAB_BATCH_SIZE", expose_value=False, is_eager=True, callback=_set_state("batch_size"), help="Images per batch."),
        click.option("--quiet", "-q", is_flag=True, envvar="ROBUSTLAB_QUIET", expose_value=False, is_eager=True, callback=_set_state("quiet"), help="No progress bars or summaries on stderr."),
        click.option("--debug", is_flag=True, envvar="ROBUSTLAB_DEBUG", expose_value=False, is_eager=True, callback=_set_state("debug"), help="Show tracebacks."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def detector_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Flags that override (or, for a bare model path, make up) the detector spec."""
    opts = [
        click.option("--input-size", metavar="HxW", help="Detector input size, e.g. 128x128 (default: the model's input shape)."),
        click.option("--resize", type=click.Choice([m.value for m in ResizeMethod], case_sensitive=False), help="Resize to the input size by the library the model was trained with: pil-*, cv2-*, tf-* (default bilinear = pil-bilinear; see README: Detectors)."),
        click.option("--color", type=click.Choice(["rgb", "bgr"], case_sensitive=False), help="Channel order the model was trained on (default rgb)."),
        click.option("--scale", type=click.Choice(["0-255", "0-1", "-1-1", "imagenet"], case_sensitive=False), help='Pixel scaling the model expects (default "0-255").'),
        click.option("--output", "output_kind", type=click.Choice(["sigmoid", "softmax", "logits"], case_sensitive=False), help="Output kind (default: inferred from the last layer)."),
        click.option("--model-classes", metavar="A,B", help="What the output units mean, in order: e.g. fake,real (default: 1 unit = fake, 2 units = real,fake)."),
        click.option("--positive", type=click.Choice(["fake", "real"], case_sensitive=False), help="Positive class (label 1), default fake."),
        click.option("--threshold", type=click.FloatRange(0, 1), help="Predict positive when score >= threshold (default: spec, else 0.5)."),
        click.option("--weights", type=click.Path(), help="Weights .h5 for an architecture-JSON model."),
        click.option("--trust-model", is_flag=True, envvar="ROBUSTLAB_TRUST_MODEL", help="Allow code in the model (Lambda layers, custom objects, pickles)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


DETECTOR_OPTION_NAMES = ("input_size", "resize", "color", "scale", "output_kind", "model_classes", "positive", "threshold", "weights", "trust_model")


def pop_detector_overrides(kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Take the detector flags out of a command's kwargs -> (spec overrides, trust_model)."""
    values = {k: kwargs.pop(k, None) for k in DETECTOR_OPTION_NAMES}
    trust = bool(values.pop("trust_model"))
    overrides = {
        "input_size": values["input_size"],
        "resize": values["resize"],
        "color": values["color"],
        "scale": values["scale"],
        "output": values["output_kind"],
        "classes": values["model_classes"],
        "positive": values["positive"],
        "threshold": values["threshold"],
        "weights": values["weights"],
    }
    return {k: v for k, v in overrides.items() if v is not None}, trust


def data_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--split", help="Which split folder of a split root (train/, test/, Validation/...)."),
        click.option("--classes", "class_map", metavar="real=A,fake=B", help="Map other folder or label names to real/fake."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


class FractionType(click.ParamType):
    """A number or a fraction like ``8/255``, within (low, high]."""

    name = "number"

    def __init__(self, low: float = 0.0, high: float = 1.0, *, low_open: bool = True):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from robustlab.metrics import parse_fraction

        if isinstance(value, float):
            v = value
        else:
            try:
                v = parse_fraction(value, what=param.name if param else "value")
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        bad_low = v <= self.low if self.low_open else v < self.low
        if bad_low or v > self.high:
            bracket = "(" if self.low_open else "["
            self.fail(f"{value} is outside {bracket}{self.low:g}, {self.high:g}]", param, ctx)
        return v


EPS = FractionType(0.0, 1.0)


def echo_err(state: State, message: str) -> None:
    if not state.quiet:
        click.echo(message, err=True)


def command_line() -> list[str]:
    return ["robustlab", *sys.argv[1:]]


def with_examples(text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Append an Examples block to a command's help, kept verbatim by Click (a ``\\b`` paragraph)."""
    import inspect

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        doc = inspect.cleandoc(f.__doc__ or "")
        lines = "\n".join(f"  {line}" for line in text.strip().splitlines())
        f.__doc__ = f"{doc}\n\n\b\nExamples:\n{lines}\n"
        return f

    return deco


def default_run_dir(kind: str, name: str) -> str:
    import re
    import time

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "detector"
    return os.path.join("robustlab-runs", f"{kind}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}")

