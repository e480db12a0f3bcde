"""``robustlab report RUN``: HTML / Markdown / JSON / JUnit from a run folder alone; exit 1 when a policy fails."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import click

from robustlab.cli.common import (
    State,
    common_options,
    echo_err,
    pass_state,
    with_examples,
)

if TYPE_CHECKING:  # pragma: no cover
    from robustlab.reporting.publish import ReportOutcome


def format_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format",
        "formats",
        metavar="LIST",
        help="Comma-separated reports to write: html, md, json, junit (default: html,md,json, plus junit with --policy).",
    )(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: one JSON document (rows, verdict, run folder) on stdout and nothing else there."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document (rows, verdict, policy results, run folder) on stdout and nothing else there; messages stay on stderr.",
    )(f)


def inconclusive_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--inconclusive",
        type=click.Choice(["fail", "pass", "warn"]),
        default="fail",
        show_default=True,
        help="How a policy rule counts when the metric's 95% interval straddles its limit: fail, pass, or warn (passes, with a warning).",
    )(f)


def print_outcome(state: State, outcome: "ReportOutcome", *, as_json: bool = False) -> None:
    """Rule results (one line each) on stdout, or on stderr with ``as_json``; then "policy passed:
    N of N rules" when it passed (a failure's summary is the PolicyFailed message), the baseline
    verdict and the files written on stderr."""
    if outcome.policy is not None:
        from robustlab.reporting.policy import status_word

        for r in outcome.policy.results:
            click.echo(f"{status_word(r)}  {r.rule.text}: {r.message}", err=as_json)
        if outcome.policy.passed and outcome.policy.inconclusive and outcome.policy.inconclusive_mode == "warn":
            echo_err(state, f"robustlab: warning: {len(outcome.policy.inconclusive)} policy rule(s) inconclusive (--inconclusive warn)")
    if outcome.comparison is not None:
        n = sum(c.regressed for c in outcome.comparison)
        echo_err(state, f"robustlab: against the baseline: {n} of {len(outcome.comparison)} rows worse" if n else f"robustlab: against the baseline: no row worse ({len(outcome.comparison)} rows)")
    for p in outcome.written:
        echo_err(state, f"robustlab: wrote {p}")
    if outcome.policy is not None and outcome.policy.passed:
        echo_err(state, f"robustlab: {outcome.policy.summary()}")


@click.command("report")
@click.argument("run", type=click.Path())
@click.option("--baseline", type=click.Path(), help="Another finished run of the same suite on the same data: adds a side-by-side table with deltas and enables regression() rules.")
@click.option("--policy", type=click.Path(), help="Policy YAML (rules: ...); exit 1 when a rule fails, and junit.xml gets one test case per rule.")
@format_option
@inconclusive_option
@click.option("--out", type=click.Path(), help="Folder for the reports (default: the run folder itself).")
@json_option
@common_options
@with_examples(
    """
robustlab report runs/nightly
robustlab report runs/nightly --policy configs/policies/nightly.yaml --baseline runs/last-night
robustlab report runs/pr --policy configs/policies/ci-quick.yaml --format md,junit
robustlab report runs/pr --policy configs/policies/ci-quick.yaml --json | jq .verdict
cat runs/pr/metrics.md >> "$GITHUB_STEP_SUMMARY"
"""
)
@pass_state
def command(state: State, run: str, baseline: str | None, policy: str | None, formats: str | None, inconclusive: str, out: str | None, as_json: bool) -> None:
    """Write reports for the finished run folder RUN (no model needed).

    report.html is one self-contained page (plots and example images inlined); metrics.md is fit for
    a CI job summary; report.json has rows, rule results and baseline deltas; junit.xml has one test
    case per policy rule. With --policy, every rule is checked: exit code 1 when one fails (a rule
    naming a row the run lacks fails too). An incomplete run folder, a policy syntax error or a
    baseline with different sets: exit code 2 with a one-line error.
    """
    from robustlab.errors import PolicyFailed
    from robustlab.reporting.publish import plan_report, report_run

    plan = plan_report(policy=policy, baseline=baseline, formats=formats, inconclusive=inconclusive)
    outcome = report_run(run, plan, out=out)
    print_outcome(state, outcome, as_json=as_json)
    if as_json:
        from robustlab.reporting.publish import outcome_json

        click.echo(outcome_json(run, outcome))
    if outcome.policy is not None and not outcome.policy.passed:
        raise PolicyFailed(outcome.policy.summary())
