"""Bad flags and values on every command: one line `robustlab: error: CMD: what; see `CMD --help``,
exit 2, no Click usage block, nothing written."""
from __future__ import annotations

import pytest
from conftest import assert_one_line_error, run

CASES = [
    (("nosuch",), ("No such command 'nosuch'",)),
    (("--seed", "1", "demo"), ("robustlab: No such option '--seed'",)),
    (("evaluate",), ("robustlab evaluate: Missing argument 'DETECTOR'",)),
    (("evaluate", "d.yaml", "data", "--bogus"), ("No such option '--bogus'",)),
    (("evaluate", "d.yaml", "data", "--batch-size", "0"), ("'--batch-size'", "0")),
    (("evaluate", "d.yaml", "data", "--seed", "nan"), ("'--seed'", "nan")),
    (("attack", "d.yaml", "data", "--queries", "0"), ("'--queries'", "1<=x")),
    (("attack", "d.yaml", "data", "--loss", "dlr"), ("'--loss'", "dlr")),
    (("attack", "d.yaml", "data", "--direction", "sideways"), ("'--direction'", "sideways")),
    (("attack", "d.yaml", "data", "--restarts", "-1"), ("'--restarts'",)),
    (("corrupt", "data", "--bogus"), ("robustlab corrupt", "--bogus")),
    (("threshold",), ("robustlab threshold: Missing argument",)),
    (("adv-train", "d.yaml", "train", "--epochs", "x"), ("--epochs x is not a whole number",)),
    (("report",), ("robustlab report: Missing argument",)),
    (("evaluate", "d.yaml", "data", "--bootstrap", "-1"), ("'--bootstrap'", "-1")),
    (("report", "run", "--inconclusive", "maybe"), ("'--inconclusive'", "maybe")),
    (("schema", "nosuch"), ("robustlab schema", "nosuch")),
    (("attack", "d.yaml", "data", "--min-eps", "--method", "hsj"), ("--min-eps", "hsj")),
]


@pytest.mark.parametrize("args, needles", CASES, ids=["-".join(a).strip("-")[:40] for a, _ in CASES])
def test_bad_usage_is_one_line_exit_2(args, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert_one_line_error(result, *needles)
    assert "Usage:" not in result.output and "Try '" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_debug_shows_clicks_own_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("evaluate", "d.yaml", "data", "--batch-size", "0", "--debug")
    assert result.exit_code == 2 and "robustlab: error" not in result.output
