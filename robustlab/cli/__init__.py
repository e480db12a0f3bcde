"""The ``robustlab`` command: one Click group, one module per command, each a thin layer.

Exit codes: 0 done, 1 a policy or gate failed, 2 bad usage or bad input (one line, no traceback
unless ``--debug``), 3 an internal error (a bug in robustlab; rerun with ``--debug``), 130 interrupted.
"""
from __future__ import annotations

import os
import sys

import click

from robustlab import __version__
from robustlab.cli.common import RobustlabGroup

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@click.group(name="robustlab", cls=RobustlabGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "ROBUSTLAB", "max_content_width": 100})
@click.version_option(__version__, prog_name="robustlab")
def main() -> None:
    """How far can you trust a real-vs-AI-generated image detector?

    robustlab loads a trained Keras detector, attacks it (FGSM/PGD), corrupts its inputs (JPEG, blur,
    resize) and writes accuracy / precision / recall / F1 / AUC tables that CI can gate on.

    \b
    Start with:  robustlab demo
    Then:        robustlab evaluate my-detector.yaml data/test --out runs/clean
    """


def _register() -> None:
    from robustlab.cli import adv_train, attack, compare, corrupt, demo, evaluate, inspect, report, schema, threshold

    for module in (evaluate, attack, corrupt, threshold, adv_train, report, inspect, compare, schema, demo):
        main.add_command(module.command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
