"""JSON Schemas (draft 2020-12) for robustlab's YAML files, shipped as package data so editors can
validate and complete them (``robustlab schema spec > spec.schema.json``; in VS Code with the YAML
extension: ``# yaml-language-server: $schema=spec.schema.json`` as a file's first line).

They describe the same keys the loaders accept (:data:`robustlab.detector.spec.SPEC_KEYS`,
:data:`robustlab.evaluation.suites.SUITE_KEYS`, policies' ``name`` / ``description`` / ``rules``);
the loaders stay the authority on values (a schema cannot parse ``8/255`` or a rule's row).
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMAS = ("spec", "suite", "policy")


def schema_text(kind: str) -> str:
    """The schema of ``kind`` (one of :data:`SCHEMAS`) as JSON text; ValueError for another kind."""
    if kind not in SCHEMAS:
        raise ValueError(f"no schema {kind!r}; there are: {', '.join(SCHEMAS)}")
    return resources.files(__name__).joinpath(f"{kind}.schema.json").read_text(encoding="utf-8")


def load_schema(kind: str) -> dict[str, Any]:
    """The schema of ``kind`` as a dict."""
    return json.loads(schema_text(kind))
