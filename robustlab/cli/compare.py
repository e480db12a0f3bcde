"""``robustlab compare RUN... --out CMP``: a leaderboard of runs on the same data, with paired significance."""
from __future__ import annotations

from pathlib import Path

import click

from robustlab.cli.common import State, command_line, common_options, echo_err, pass_state, with_examples


@click.command("compare")
@click.argument("runs", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(), required=True, help="Folder to write leaderboard.md / .csv, comparison.json and comparison.html into.")
@click.option("--force", is_flag=True, help="Replace an existing compare folder (only one robustlab wrote).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True, help="Significance level of the paired (McNemar) tests.")
@common_options
@with_examples(
    """
robustlab compare runs/effatt-b7 runs/effatt-b7-advtrained --out runs/cmp
robustlab compare runs/a runs/b runs/c --out runs/leaderboard --alpha 0.01
"""
)
@pass_state
def command(state: State, runs: tuple[str, ...], out: str, force: bool, alpha: float) -> None:
    """Compare finished run folders RUN... evaluated on the same data (and suite).

    Ranks the runs by worst-case accuracy (clean accuracy when a run has no worst-case row), gives
    every shared row's metrics and deltas against the first RUN, and a McNemar exact test on
    per-image correctness (from predictions.csv, matched by image id) saying whether each
    difference is significant. Runs on different data, a run given twice, a missing or incomplete
    run, runs with no common rows, or an --out inside a run: exit code 2 with a one-line error.
    """
    from robustlab.reporting.compare import compare_runs, comparison_markdown, write_comparison

    cmp = compare_runs(list(runs), alpha=alpha)
    folder = write_comparison(cmp, Path(out), force=force, command=command_line())
    click.echo(comparison_markdown(cmp))
    echo_err(state, f"robustlab: comparison written: {folder}")
