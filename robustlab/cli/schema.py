"""``robustlab schema spec|suite|policy``: print a shipped JSON Schema for editors and CI linters."""
from __future__ import annotations

import click

from robustlab.cli.common import common_options, with_examples
from robustlab.schemas import SCHEMAS


@click.command("schema")
@click.argument("kind", type=click.Choice(SCHEMAS))
@common_options
@with_examples(
    """
robustlab schema spec > .schemas/robustlab-spec.json
robustlab schema suite > .schemas/robustlab-suite.json
robustlab schema policy > .schemas/robustlab-policy.json
# then, first line of a detector YAML (VS Code + YAML extension):
#   # yaml-language-server: $schema=.schemas/robustlab-spec.json
"""
)
def command(kind: str) -> None:
    """Print the JSON Schema (draft 2020-12) of a detector spec, a suite or a policy on stdout.

    The schemas name every key the loaders accept, with its allowed values and a description, so
    an editor can complete and check the YAML as you type. The loaders remain the authority (a
    schema cannot check that an eps parses or that a rule names a row).
    """
    from robustlab.schemas import schema_text

    click.echo(schema_text(kind), nl=False)
