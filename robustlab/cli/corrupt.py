"""``robustlab corrupt DATA --corruption jpeg --severity 1-5 --out DIR``: corrupted copies of a data set."""
from __future__ import annotations

from typing import Any

import click

from robustlab.cli.common import (
    State,
    command_line,
    common_options,
    data_options,
    echo_err,
    pass_state,
    with_examples,
)


@click.command("corrupt")
@click.argument("data", type=click.Path())
@click.option(
    "--corruption",
    "-c",
    "corruptions",
    multiple=True,
    required=True,
    metavar="NAME[:SEVERITIES]",
    help="Corruption to apply (repeatable): jpeg, blur, resize, noise, social; optionally with its own severities, e.g. blur:3 or resize:1,3,5.",
)
@click.option("--severity", default="1-5", show_default=True, metavar="SEVERITIES", help="Severities (1 mild .. 5 severe) for each --corruption given without its own: 3, 1-5, 1,3,5.")
@click.option("--out", type=click.Path(), required=True, help="Folder to write: OUT/NAME/severity-S/ per corruption and severity.")
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
@click.option("--workers", type=click.IntRange(1, 64), help="Threads decoding, corrupting and writing images (default: CPU cores, at most 4).")
@data_options
@common_options
@with_examples(
    """
robustlab corrupt data/test --corruption jpeg --severity 1-5 --out corrupted/
robustlab corrupt cifake/ --split test -c jpeg:1-5 -c blur:3 -c resize:1,3,5 --out cifake-c/
robustlab corrupt test.npz -c social --severity 2 --out shared/
robustlab evaluate detector.yaml corrupted/jpeg/severity-3 --out runs/jpeg3
"""
)
@pass_state
def command(state: State, data: str, corruptions: tuple[str, ...], severity: str, out: str, force: bool, workers: int | None, split: str | None, class_map: str | None) -> None:
    """Write corrupted copies of DATA, one folder per corruption and severity, each a valid DATA argument.

    OUT/NAME/severity-S/ mirrors DATA's layout: a class-folder tree keeps its relative paths; a split
    root (with --split) keeps the chosen split folder (use the same --split on the copy); a manifest
    CSV is rewritten under its own name next to the images; an .npz is rewritten under its own name.
    Images keep their own size and are saved as PNG. Severity tables: CIFAR-10-C values for images up
    to 64 px, ImageNet-C values for larger ones. The same --seed gives the same bytes. Unreadable or
    too-small (under 8 px) images are skipped and counted in OUT/run.json.
    """
    from robustlab.corruptions.variant import parse_corruptions
    from robustlab.corruptions.writer import corrupt_dataset

    variants = parse_corruptions(corruptions, default_severities=severity)
    info: dict[str, Any] = corrupt_dataset(
        data,
        out,
        variants,
        split=split,
        classes=class_map,
        seed=state.seed,
        force=force,
        progress=state.progress,
        workers=workers,
        command=command_line(),
    )
    for s in info["sets"]:
        params = "; ".join(f"{table}: " + ", ".join(f"{k}={v:g}" for k, v in p.items()) for table, p in s["parameters"].items())
        split_note = f" (with --split {s['split']})" if s["split"] else ""
        click.echo(f"{s['corruption']} severity {s['severity']} ({params}): {s['images']} images -> {s['data']}{split_note}")
    counts = info["images"]
    skipped = counts["skipped_unreadable"] + counts["skipped_too_small"]
    if skipped:
        echo_err(state, f"robustlab: skipped {counts['skipped_unreadable']} unreadable and {counts['skipped_too_small']} too-small images (listed in run.json)")
    echo_err(state, f"robustlab: corrupted copies written: {len(info['sets'])} sets of {counts['written']} images in {info['seconds']:.1f} s")
