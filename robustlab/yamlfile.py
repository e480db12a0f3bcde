"""Reading user YAML files (policies, suites) with one-line errors that give line and column."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError


def where(path: Path, line: int, col: int | None = None) -> str:
    """``path: line L, column C`` (1-based), for error messages."""
    return f"{path}: line {line}" if col is None else f"{path}: line {line}, column {col}"


def compose_yaml(path: "str | Path", *, what: str, missing_fix: str, syntax_fix: str) -> Any:
    """The YAML node tree of ``path`` (``None`` for an empty file), marks kept for messages.

    Missing or unreadable files and syntax errors raise a one-line :class:`RobustlabError`
    naming the file (and the line and column of a syntax error).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RobustlabError(f"no such {what} file", thing=path, fix=missing_fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RobustlabError(f"unreadable {what} file ({exc.__class__.__name__})", thing=path, fix="give a UTF-8 YAML file") from None
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        thing = where(path, mark.line + 1, mark.column + 1) if mark else str(path)
        raise RobustlabError(f"YAML syntax error: {exc.problem or exc.context}", thing=thing, fix=syntax_fix) from None
    except yaml.YAMLError as exc:
        raise RobustlabError(f"YAML syntax error: {exc}", thing=path, fix=syntax_fix) from None
