"""``robustlab threshold DETECTOR VALDATA``: a threshold from the PR / ROC curve of a validation set.

Also the ``--val`` / ``--threshold-strategy`` / ``--allow-same-data`` options of ``evaluate``
(:func:`threshold_options`; the selection itself is :func:`robustlab.pipeline.select_threshold_on`).
"""
from __future__ import annotations

from typing import Any, Callable

import click

from robustlab.cli.common import (
    State,
    common_options,
    data_options,
    detector_options,
    echo_err,
    pass_state,
    pop_detector_overrides,
    with_examples,
)

STRATEGY_HELP = "max-f1 | precision:P | recall:R | youden | fixed:T (e.g. precision:0.95)"


def threshold_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``evaluate``'s options for picking the threshold on a validation set."""
    opts = [
        click.option("--val", "val_data", type=click.Path(), metavar="VALDATA", help="Pick the threshold on this validation set (any DATA layout) and apply it to every set of the run."),
        click.option("--val-split", help="Split folder of VALDATA when it is a split root (e.g. val)."),
        click.option("--threshold-strategy", metavar="STRATEGY", help=f"How to pick it on --val (default max-f1): {STRATEGY_HELP}."),
        click.option("--allow-same-data", is_flag=True, help="Allow VALDATA to be, or share images with, DATA (the report flags the optimistic rows)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _num(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _text_report(sel: Any, detector: Any, strategy: str) -> str:
    c = sel.choice
    pos = detector.positive
    val = sel.val
    split = f" (split {val['split']})" if val.get("split") and not str(val["root"]).endswith(str(val["split"])) else ""
    lines = [
        f"Threshold picked by {strategy} on {val['root']}{split}: {val['scored']} images, {c.tp + c.fn} {pos} / {c.tn + c.fp} {'real' if pos == 'fake' else 'fake'}.",
        "",
        f"  threshold   {c.threshold:.6g}   (predicted {pos} when score >= threshold)",
        f"  precision   {_num(c.precision)}   ({c.tp} of {c.tp + c.fp} predicted {pos} are {pos})",
        f"  recall      {_num(c.recall)}   ({c.tp} of {c.tp + c.fn} {pos} images found)",
        f"  f1          {_num(c.f1)}",
        f"  accuracy    {_num(c.accuracy)}   (false positive rate {_num(c.fpr)}, Youden J {_num(c.youden)})",
    ]
    low = "-inf" if c.plateau_low is None else f"{c.plateau_low:.6g}"
    lines.append(f"  plateau     any threshold in ({low}, {c.threshold:.6g}] gives the same validation predictions")
    b = sel.interval
    if b is not None:
        if b.low is None:
            lines.append(f"  bootstrap   no interval: none of {b.n} resamples could pick a threshold")
        else:
            failed = f"; {b.failed} resamples could not pick" if b.failed else ""
            lines.append(f"  bootstrap   {100 * b.level:g}% interval [{b.low:.4g}, {b.high:.4g}], sd {b.std:.3g}, over {b.n} resamples (seed {b.seed}{failed})")
    r = sel.reference
    if r is not None and r.threshold != c.threshold:
        lines.append(f"  at {r.threshold:g}      precision {_num(r.precision)}, recall {_num(r.recall)}, f1 {_num(r.f1)}, accuracy {_num(r.accuracy)}   (for comparison)")
    return "\n".join(lines)


@click.command("threshold")
@click.argument("detector", type=click.Path())
@click.argument("valdata", type=click.Path())
@click.option("--strategy", default="max-f1", show_default=True, metavar="STRATEGY", help=f"{STRATEGY_HELP}.")
@click.option("--bootstrap", type=click.IntRange(0, 100_000), default=1000, show_default=True, help="Resamples of VALDATA for the stability interval of the threshold (0: none).")
@click.option("--write", is_flag=True, help="Store the threshold in the detector spec YAML (a bare model path gets MODEL.yaml beside it).")
@click.option("--write-to", type=click.Path(dir_okay=False), metavar="NEW.yaml", help="Store it in a new spec file (the spec, the flags given and the threshold).")
@click.option("--force", is_flag=True, help="Replace a threshold or spec file that is already there.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@detector_options
@data_options
@common_options
@with_examples(
    """
robustlab threshold detector.yaml data --split val --strategy max-f1
robustlab threshold detector.yaml val/ --strategy precision:0.95 --write
robustlab threshold model.keras val.csv --scale 0-1 --strategy youden --write-to model.yaml
"""
)
@pass_state
def command(
    state: State,
    detector: str,
    valdata: str,
    strategy: str,
    bootstrap: int,
    write: bool,
    write_to: str | None,
    force: bool,
    as_json: bool,
    split: str | None,
    class_map: str | None,
    **kwargs: Any,
) -> None:
    """Pick a decision threshold for DETECTOR on the validation set VALDATA.

    Prints the threshold with the precision, recall and F1 it gives on VALDATA and a bootstrap
    interval of the threshold (how stable it is). A sample is predicted fake when
    score >= threshold. Candidates are the distinct validation scores; ties go to the other metric
    of the pair (precision:P -> higher precision, recall:R -> higher recall), then to the higher
    threshold. Use a validation split, never the test set you report on.
    """
    from robustlab.data import open_dataset
    from robustlab.detector.loading import load_detector
    from robustlab.detector.specfile import write_threshold
    from robustlab.errors import RobustlabError
    from robustlab.evaluation.selection import select_threshold
    from robustlab.evaluation.thresholds import parse_strategy
    from robustlab.runs import to_json

    strat = parse_strategy(strategy)
    overrides, trust = pop_detector_overrides(kwargs)
    if "threshold" in overrides:
        raise RobustlabError("--threshold is what this command computes", fix="drop it (use --strategy fixed:T to report a given threshold)")
    target_args = {"out": write_to, "force": force, "overrides": overrides}
    if write or write_to:  # refuse early, before the scoring
        write_threshold(detector, None, dry_run=True, **target_args)
    val = open_dataset(valdata, split=split, classes=class_map)
    det = load_detector(detector, trust_model=trust, **overrides)
    sel = select_threshold(det, val, strat, bootstrap=bootstrap, seed=state.seed, batch_size=state.batch_size, progress=state.progress)
    written = None
    if write or write_to:
        c = sel.choice
        comment = f"robustlab threshold --strategy {c.strategy} (validation {str(sel.val.get('fingerprint'))[:12]}, F1 {_num(c.f1)})"
        written = write_threshold(detector, c, comment=comment, **target_args)
    if as_json:
        click.echo(to_json({"detector": detector, **sel.to_info(), "written": None if written is None else str(written)}), nl=False)
    else:
        click.echo(_text_report(sel, det, str(strat)))
    if written is not None:
        echo_err(state, f"robustlab: threshold {sel.threshold:.6g} written to {written}")
