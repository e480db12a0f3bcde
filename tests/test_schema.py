"""The shipped JSON Schemas: printed by `robustlab schema`, matching the loaders' keys, accepting
every shipped config and refusing what the loaders refuse."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run

from robustlab.detector.spec import SPEC_KEYS, make_spec
from robustlab.errors import RobustlabError
from robustlab.evaluation.suites import SUITE_KEYS, load_suite
from robustlab.reporting.policy import load_policy
from robustlab.schemas import SCHEMAS, load_schema

jsonschema = pytest.importorskip("jsonschema")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FOLDERS = {"spec": "detectors", "suite": "suites", "policy": "policies"}


def validator(kind: str) -> "jsonschema.Draft202012Validator":
    schema = load_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind", SCHEMAS)
def test_cli_prints_the_schema(kind: str) -> None:
    res = run("schema", kind)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == load_schema(kind)


def test_schema_keys_are_the_loaders_keys() -> None:
    assert set(load_schema("spec")["properties"]) == set(SPEC_KEYS)
    assert set(load_schema("suite")["properties"]) == set(SUITE_KEYS)
    assert set(load_schema("policy")["properties"]) == {"name", "description", "rules"}


@pytest.mark.parametrize("kind,path", [(k, p) for k in SCHEMAS for p in sorted((CONFIGS / FOLDERS[k]).glob("*.yaml"))], ids=lambda v: v if isinstance(v, str) else v.name)
def test_shipped_configs_validate(kind: str, path: Path) -> None:
    errors = [e.message for e in validator(kind).iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))]
    assert errors == []


@pytest.mark.parametrize(
    "kind,doc,words",
    [
        ("spec", {"model": "m.keras", "colour": "bgr"}, "colour"),
        ("spec", {"model": "m.keras", "scale": "0-256"}, "0-256"),
        ("spec", {"model": "m.keras", "threshold": 1.5}, "1.5"),
        ("spec", {"name": "no model"}, "model"),
        ("suite", {"name": "nothing to run"}, "not valid under any"),
        ("suite", {"attacks": ["fgsm:eps=8/255"], "attack_fraction": 0}, "0"),
        ("suite", {"attacks": ["dropout:p=1"]}, "dropout"),
        ("policy", {"rules": []}, "[]"),
        ("policy", {"rules": ["clean.accuracy is high"]}, "clean.accuracy is high"),
    ],
    ids=["unknown-key", "bad-scale", "threshold-above-1", "no-model", "suite-empty", "fraction-0", "unknown-attack", "no-rules", "rule-without-operator"],
)
def test_schemas_refuse_what_the_loaders_refuse(kind: str, doc: dict, words: str, tmp_path: Path) -> None:
    errors = " ".join(e.message for e in validator(kind).iter_errors(doc))
    assert words in errors
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(RobustlabError):
        if kind == "spec":
            make_spec(doc, base_dir=tmp_path)
        elif kind == "suite":
            load_suite(path).variants()
        else:
            load_policy(path)
