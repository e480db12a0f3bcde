"""``robustlab adv-train DETECTOR TRAIN --val VAL --out NEW``: adversarial fine-tuning with mixing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustlab.cli.common import (
    State,
    command_line,
    common_options,
    detector_options,
    echo_err,
    pass_state,
    pop_detector_overrides,
    with_examples,
)
from robustlab.errors import RobustlabError


class _Number(click.ParamType):
    """A number or a fraction like ``8/255``; out of range -> one-line RobustlabError (exit 2)."""

    name = "number"

    def __init__(self, low: float, high: float, *, low_open: bool, fix: str):
        self.low, self.high, self.low_open, self.fix = low, high, low_open, fix

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from robustlab.metrics import parse_fraction

        flag = f"--{param.name.replace('_', '-')}" if param and param.name else "value"
        try:
            v = float(value) if isinstance(value, (int, float)) else parse_fraction(value, what=flag)
        except ValueError as exc:
            raise RobustlabError(str(exc), fix=self.fix) from None
        bad_low = v <= self.low if self.low_open else v < self.low
        if bad_low or v > self.high or v != v:
            bracket = "(" if self.low_open else "["
            raise RobustlabError(f"{flag} {value} is outside {bracket}{self.low:g}, {self.high:g}]", fix=self.fix)
        return v


class _Finite(click.ParamType):
    """A finite number (``nan``, ``inf`` and text -> one-line RobustlabError, exit 2); ranges are
    checked by :meth:`FinetuneConfig.validated`."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        flag = f"--{param.name.replace('_', '-')}" if param and param.name else "value"
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if v != v or v in (float("inf"), float("-inf")):
            raise RobustlabError(f"{flag} {value} is not a finite number", fix=f"give a number, e.g. {flag} {param.default if param is not None else 1}")
        return v


class _Whole(click.ParamType):
    """A whole number (text, fractions, ``1e9999`` -> one-line RobustlabError, exit 2)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        flag = f"--{param.name.replace('_', '-')}" if param and param.name else "value"
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value).strip(), 10)
        except ValueError:
            raise RobustlabError(f"{flag} {value} is not a whole number", fix=f"e.g. {flag} {param.default if param is not None else 1}") from None


FINITE = _Finite()
WHOLE = _Whole()
RATIO = _Number(0.0, 1.0, low_open=False, fix="give the share of each batch to attack, e.g. --ratio 0.3 (0 = plain fine-tuning)")
EPS01 = _Number(0.0, 1.0, low_open=True, fix="eps is a fraction of the pixel range, e.g. --eps 8/255")

# options that decide the result: with --resume they may be repeated but must not differ
_RESUME_CHECKED = (
    "eps", "ratio", "attack", "epochs", "lr", "optimizer", "label_smoothing", "trainable", "train_bn", "class_weight",
    "patience", "reduce_lr_patience", "reduce_lr_factor", "min_lr", "monitor", "pgd_steps", "pgd_step", "guard",
    "guard_size", "guard_drop", "threshold_strategy",
)


@click.command("adv-train")
@click.argument("detector", required=False, type=click.Path())
@click.argument("train", required=False, type=click.Path())
@click.option("--val", metavar="VAL", help="Validation DATA (required): early stopping, the overfitting guard and the new threshold use it.")
@click.option("--test", metavar="TEST", help="DATA for the before/after run folders (default: VAL).")
@click.option("--out", type=click.Path(), help="Folder NEW to write (refused if it exists, unless --force).")
@click.option("--eps", type=EPS01, default="8/255", show_default=True, help="L-inf budget of the training attack, in [0, 1] pixel units (8/255 = eight grey levels).")
@click.option("--ratio", type=RATIO, default="0.3", show_default=True, help="Share of each batch replaced by adversarial examples, in [0, 1] (0 = plain fine-tuning).")
@click.option("--attack", default="fgsm", show_default=True, metavar="fgsm|fgsm-rs|pgd", help="Training attack, made against the current weights in every batch (fgsm-rs: random start, step 1.25 eps).")
@click.option("--epochs", type=WHOLE, default=5, show_default=True, help="Maximum number of epochs.")
@click.option("--lr", type=FINITE, default=1e-4, show_default=True, help="Learning rate.")
@click.option("--optimizer", default="adam", show_default=True, metavar="adam|adamw|sgd|rmsprop|nadam", help="Keras optimizer (default settings apart from the learning rate).")
@click.option("--label-smoothing", type=FINITE, default=0.0, show_default=True, help="Label smoothing of the cross-entropy loss.")
@click.option("--trainable", default="all", show_default=True, metavar="all|head|last:N", help="Which layers train: all, the last layer with weights (head), or the last N layers with weights.")
@click.option("--train-bn", is_flag=True, help="Let BatchNormalization layers train too (default: frozen, in inference mode, as in Keras' fine-tuning guide).")
@click.option("--class-weight", default="none", show_default=True, metavar="none|balanced|real=W,fake=W", help="Class weights in the training loss (balanced = auto = n / (2 n_class)).")
@click.option("--patience", type=WHOLE, default=3, show_default=True, help="Early stopping: epochs without improvement of --monitor (0 = off). The best epoch is kept.")
@click.option("--reduce-lr-patience", type=WHOLE, default=2, show_default=True, help="Reduce-on-plateau: epochs without improvement before the learning rate is cut (0 = off).")
@click.option("--reduce-lr-factor", type=FINITE, default=0.5, show_default=True, help="Reduce-on-plateau factor.")
@click.option("--min-lr", type=FINITE, default=1e-6, show_default=True, help="Reduce-on-plateau floor.")
@click.option("--monitor", default="val_mix_loss", show_default=True, metavar="val_mix_loss|val_loss|val_adv_loss", help="Validation loss to watch: clean, under the training attack, or the two mixed by --ratio.")
@click.option("--pgd-steps", type=WHOLE, default=10, show_default=True, help="PGD steps (training attack pgd, and the guard's PGD).")
@click.option("--pgd-step", type=EPS01, default=None, help="PGD step size (default 2.5 eps / steps).")
@click.option("--guard/--no-guard", default=True, show_default=True, help="Catastrophic-overfitting guard: PGD vs FGSM accuracy on a validation batch after each epoch.")
@click.option("--guard-size", type=WHOLE, default=128, show_default=True, help="Images in the guard's validation batch (stratified, seeded).")
@click.option("--guard-drop", type=FINITE, default=0.2, show_default=True, help="Stop when guard PGD accuracy falls this far below its best while FGSM accuracy holds.")
@click.option("--threshold-strategy", default="max-f1", show_default=True, help="How the new threshold is picked on VAL (see `robustlab threshold`).")
@click.option("--eval-attack", "eval_attacks", multiple=True, metavar="SPEC", help="Attacks for the before/after runs (default: fgsm and pgd at --eps), e.g. pgd:eps=8/255,steps=20.")
@click.option("--eval-corruption", "eval_corruptions", multiple=True, metavar="SPEC", help="Corruptions for the before/after runs (default: jpeg:3, blur:3 and resize:3).")
@click.option("--eval-fraction", type=_Number(0.0, 1.0, low_open=True, fix="e.g. --eval-fraction 0.3"), default="1", show_default=True, help="Share of TEST attacked in the before/after runs (stratified, seeded).")
@click.option("--classes", "class_map", metavar="real=A,fake=B", help="Map other folder or label names to real/fake (all data sets).")
@click.option("--resume", type=click.Path(), metavar="NEW", help="Continue an interrupted run for NEW from its last complete epoch (settings come from its checkpoint).")
@click.option("--force", is_flag=True, help="Replace an existing NEW (or an interrupted run for it) and start over.")
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(), metavar="DIR", help="Also log the history (loss, accuracy, validation and guard numbers, learning rate) per epoch as TensorBoard scalars into DIR (view: tensorboard --logdir DIR).")
@detector_options
@common_options
@with_examples(
    """
robustlab adv-train detector.yaml data/train --val data/val --eps 8/255 --ratio 0.3 --epochs 5 --out new-detector
robustlab adv-train detector.yaml data/train --val data/val --test data/test --attack fgsm-rs --trainable last:2 --out new
robustlab adv-train model.keras train.csv --val val.csv --ratio 0 --class-weight balanced --out plain-ft
robustlab adv-train --resume new-detector          # after a kill: continue from the last complete epoch
robustlab evaluate new-detector/detector.yaml data/test --out runs/new
"""
)
@pass_state
@click.pass_context
def command(ctx: click.Context, state: State, detector: str | None, train: str | None, val: str | None, test: str | None, out: str | None, resume: str | None, force: bool, class_map: str | None, eval_attacks: tuple[str, ...], eval_corruptions: tuple[str, ...], eval_fraction: float, tensorboard_dir: str | None, **kwargs: Any) -> None:
    """Fine-tune DETECTOR on TRAIN with adversarial mixing; write the new detector to NEW.

    In every batch a --ratio share of the images is replaced by adversarial examples made against
    the current weights (fgsm, fgsm-rs or pgd at --eps). After each epoch: validation loss,
    a catastrophic-overfitting guard (PGD vs FGSM accuracy on a validation batch), early stopping,
    reduce-on-plateau and a checkpoint (--resume NEW continues after a kill, same result;
    a model that needs --trust-model needs it again on --resume). A loss that becomes NaN or
    infinite stops the run (exit 2) and publishes nothing.

    NEW holds model.keras, detector.yaml (the input's preprocessing and a threshold re-picked on
    VAL), history.csv/.png, train.json and before-after/ (run folders of the input detector and
    the new one on TEST: clean, FGSM, PGD and corruption rows, and comparison.md side by side).
    The input model is never modified.
    """
    overrides, trust = pop_detector_overrides(kwargs)
    log = (lambda s: echo_err(state, s))
    from robustlab.tracking import TensorBoardHistory

    history = TensorBoardHistory(tensorboard_dir) if tensorboard_dir else None
    try:
        if resume:
            result = _resume(ctx, state, resume, out, {"train": train, "val": val, "test": test}, kwargs, log, trust, history)
        else:
            if not detector or not train:
                raise RobustlabError("DETECTOR and TRAIN are required", fix="run `robustlab adv-train DETECTOR TRAIN --val VAL --out NEW`, or `--resume NEW` to continue a run")
            if not val:
                raise RobustlabError("no validation set", fix="pass --val VAL (held-out DATA: early stopping, the overfitting guard and the new threshold are picked on it)")
            if not out:
                raise RobustlabError("no --out folder", fix="pass --out NEW (a new folder; the input model is never modified)")
            from robustlab.data import open_dataset
            from robustlab.detector.loading import load_detector
            from robustlab.training.run import adv_train

            config = _config(state, kwargs)
            for data in (train, val, test):  # cheap checks (files, both classes) before TensorFlow loads
                if data is not None:
                    open_dataset(data, classes=class_map)
            det = load_detector(detector, trust_model=trust, **overrides)
            result = adv_train(
                det, train, val, out=out, config=config, test=test, classes=class_map, trust_model=trust, force=force,
                eval_attacks=list(eval_attacks) or None, eval_corruptions=list(eval_corruptions) or None, eval_fraction=eval_fraction,
                progress=state.progress, log=log, command=command_line(), on_epoch_end=history,
            )
    except KeyboardInterrupt:
        from robustlab.training.folder import partial_dir

        target = resume or out
        if target and partial_dir(target).exists():
            echo_err(state, f"robustlab adv-train: interrupted; the last complete epoch is checkpointed: continue with `robustlab adv-train --resume {target}`")
        raise
    finally:
        if history is not None:
            history.close()
    if history is not None:
        echo_err(state, f"robustlab adv-train: history logged for TensorBoard in {tensorboard_dir}")
    click.echo((result.out / "before-after" / "comparison.md").read_text(encoding="utf-8"))
    echo_err(state, f"robustlab adv-train: new detector written: {result.out / 'detector.yaml'} (kept epoch {result.best_epoch}, threshold {result.threshold:.4f})")


def _config(state: State, kwargs: dict[str, Any]) -> Any:
    """The FinetuneConfig from the command's options (validated: one-line errors)."""
    from robustlab.training.config import FinetuneConfig

    names = [f for f in FinetuneConfig.__dataclass_fields__ if f not in ("batch_size", "seed")]
    return FinetuneConfig(**{n: kwargs[n] for n in names}, batch_size=state.batch_size, seed=state.seed).validated()


def _resume(ctx: click.Context, state: State, resume: str, out: str | None, data: dict[str, str | None], kwargs: dict[str, Any], log: Any, trust: bool, history: Any = None) -> Any:
    """``--resume NEW``: settings come from the checkpoint; any given again must be the same.

    Trust is this command line's (``--trust-model`` / ``ROBUSTLAB_TRUST_MODEL``), never the checkpoint's.
    """
    from robustlab.training.run import resume_adv_train

    explicit = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    given: dict[str, Any] = {k: v for k, v in kwargs.items() if k in _RESUME_CHECKED and ctx.get_parameter_source(k) in explicit}
    given.update({k: v for k, v in data.items() if v is not None})
    if ctx.get_parameter_source("seed") in explicit:
        given["seed"] = state.seed
    if ctx.get_parameter_source("batch_size") in explicit:
        given["batch_size"] = state.batch_size
    if out is not None and Path(out).resolve() != Path(resume).resolve():
        raise RobustlabError(f"--out {out} and --resume {resume} name different folders", fix="give only --resume NEW")
    return resume_adv_train(resume, trust_model=trust, progress=state.progress, log=log, expect=given, on_epoch_end=history)
