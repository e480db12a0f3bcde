"""``robustlab demo``: a small real/fake data set and detector made on the spot, then a full evaluation."""
from __future__ import annotations

import click

from robustlab.cli.common import (
    State,
    command_line,
    common_options,
    echo_err,
    pass_state,
    with_examples,
)


@click.command("demo")
@click.option("--out", type=click.Path(), default="reports/demo", show_default=True, envvar="ROBUSTLAB_DEMO_OUT", help="Folder for the demo's data, detector and run.")
@click.option("--epochs", type=click.IntRange(1, 100), default=8, show_default=True, help="Training epochs for the demo detector.")
@click.option("--n-train", type=click.IntRange(20, 100000), default=1000, show_default=True, help="Training images per class.")
@click.option("--n-test", type=click.IntRange(10, 100000), default=300, show_default=True, help="Test (and validation) images per class.")
@click.option("--force", is_flag=True, help="Replace --out even if it is not a previous demo folder.")
@common_options
@with_examples(
    """
robustlab demo
robustlab demo --out /tmp/demo --epochs 4
"""
)
@pass_state
def command(state: State, out: str, epochs: int, n_train: int, n_test: int, force: bool) -> None:
    """Build a small real-vs-generated image set and a CNN detector offline, then evaluate it.

    Real images are crops of the photographs that ship with scikit-learn and matplotlib; generated
    ones are the same kind of crops passed through transposed-convolution upsampling (the trace
    real generators leave). Writes OUT/data (train/val/test splits), OUT/detector (model.keras +
    detector.yaml) and OUT/run (a run folder). A previous demo folder is replaced.
    """
    from robustlab.demo import run_demo

    summary = run_demo(
        out,
        seed=state.seed,
        n_train=n_train,
        n_val=n_test,
        n_test=n_test,
        epochs=epochs,
        batch_size=state.batch_size,
        force=force,
        progress=state.progress,
        log=lambda s: echo_err(state, s),
        command=command_line(),
    )
    click.echo((summary["run"] / "metrics.md").read_text(encoding="utf-8"))
    echo_err(state, f"robustlab demo: data {summary['data']}, detector {summary['detector']}, run {summary['run']} ({summary['timings']['total_seconds']:.0f} s)")
