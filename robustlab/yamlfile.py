"""Reading user YAML files (policies, suites, detector specs) with one-line errors that give line
and column, and with limits that keep a hostile file from exhausting memory or time.

Limits (exit 2 when exceeded, naming the file): the file is at most :data:`MAX_YAML_BYTES`; the
document, with every alias expanded, has at most :data:`MAX_YAML_NODES` nodes (a "billion laughs"
file of a few hundred bytes expands to billions); recursive aliases are refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError

MAX_YAML_BYTES = 1 << 20
"""Largest YAML file read (1 MiB): policies, suites and specs are a few lines."""

MAX_YAML_NODES = 100_000
"""Most nodes a document may have once its aliases are expanded."""


def where(path: Path, line: int, col: int | None = None) -> str:
    """``path: line L, column C`` (1-based), for error messages."""
    return f"{path}: line {line}" if col is None else f"{path}: line {line}, column {col}"


def expanded_size(root: Any, *, limit: int = MAX_YAML_NODES) -> int:
    """Number of nodes of the node tree ``root`` with every alias expanded (counting stops just
    above ``limit``). ``ValueError`` for a recursive alias (a node that contains itself).

    Shared nodes are sized once (memoized), so this is linear in the composed graph even when
    the expansion is exponential.
    """
    import yaml

    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: (node, children visited?)
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1
            for child in _children(node):
                total += sizes[id(child)]
                if total > limit:
                    total = limit + 1
                    break
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ValueError("recursive alias")
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            ck = id(child)
            if ck in on_path:
                raise ValueError("recursive alias")
            if ck not in sizes and isinstance(child, (yaml.SequenceNode, yaml.MappingNode, yaml.ScalarNode)):
                stack.append((child, False))
    return 0 if root is None else sizes[id(root)]


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def compose_yaml(path: "str | Path", *, what: str, missing_fix: str, syntax_fix: str) -> Any:
    """The YAML node tree of ``path`` (``None`` for an empty file), marks kept for messages.

    Missing, unreadable or oversized files, syntax errors, recursive aliases and alias bombs raise
    a one-line :class:`RobustlabError` naming the file (and the line and column of a syntax error).
    """
    import yaml

    path = Path(path)
    try:
        if path.is_dir():
            raise RobustlabError(f"is a folder, not a {what} file", thing=path, fix=missing_fix)
        if path.exists() and not path.is_file():
            raise RobustlabError(f"is not a regular file (a FIFO or device), not a {what} file", thing=path, fix=f"give a {what} YAML file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise RobustlabError(f"no such {what} file", thing=path, fix=missing_fix) from None
    except OSError as exc:
        raise RobustlabError(f"unreadable {what} file ({exc.__class__.__name__})", thing=path, fix="give a UTF-8 YAML file") from None
    if len(raw) > MAX_YAML_BYTES:
        raise RobustlabError(f"{what} file is larger than {MAX_YAML_BYTES // 1024} KiB", thing=path, fix=f"a {what} file is a few lines of YAML; check that this is the right file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RobustlabError(f"unreadable {what} file (not UTF-8)", thing=path, fix="give a UTF-8 YAML file") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        thing = where(path, mark.line + 1, mark.column + 1) if mark else str(path)
        raise RobustlabError(f"YAML syntax error: {exc.problem or exc.context}", thing=thing, fix=syntax_fix) from None
    except yaml.YAMLError as exc:
        raise RobustlabError(f"YAML syntax error: {exc}", thing=path, fix=syntax_fix) from None
    except RecursionError:
        raise RobustlabError("YAML nested too deeply", thing=path, fix=f"a {what} file is a few levels deep") from None
    try:
        n = expanded_size(root)
    except ValueError:
        raise RobustlabError("YAML alias refers to itself (a recursive alias)", thing=path, fix="remove the & anchor / * alias that contains itself") from None
    if n > MAX_YAML_NODES:
        raise RobustlabError(
            f"YAML expands to more than {MAX_YAML_NODES} nodes through aliases (an alias bomb?)",
            thing=path,
            fix="write the values out instead of nesting * aliases",
        )
    return root


def load_yaml(path: "str | Path", *, what: str, missing_fix: str = "check the path", syntax_fix: str = "fix the YAML syntax") -> Any:
    """Python values of ``path`` (``None`` for an empty file), with :func:`compose_yaml`'s checks
    and limits; YAML tags other than the safe ones are a one-line :class:`RobustlabError`.

    Use this for every user YAML file read into plain values (detector specs, configs).
    """
    import yaml

    path = Path(path)
    root = compose_yaml(path, what=what, missing_fix=missing_fix, syntax_fix=syntax_fix)
    if root is None:
        return None
    try:
        return yaml.SafeLoader("").construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        thing = where(path, mark.line + 1, mark.column + 1) if mark else str(path)
        raise RobustlabError(f"YAML error: {exc.problem or exc.context}", thing=thing, fix=syntax_fix) from None
    except yaml.YAMLError as exc:
        raise RobustlabError(f"YAML error: {exc}", thing=path, fix=syntax_fix) from None


def guard_yaml(path: "str | Path", *, what: str) -> None:
    """Refuse (one-line :class:`RobustlabError`) a YAML file that is too large, not a regular file,
    or whose aliases are recursive or expand past :data:`MAX_YAML_NODES`, before a caller parses
    it with its own reader. Missing files and syntax errors are left to that reader's messages.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise RobustlabError(f"is not a regular file, not a {what} file", thing=path, fix=f"give a {what} YAML file")
        return
    try:
        compose_yaml(path, what=what, missing_fix="check the path", syntax_fix="fix the YAML syntax")
    except RobustlabError as exc:
        if exc.problem.startswith(("YAML syntax error", "unreadable", "YAML nested")):
            return
        raise
    except yaml.YAMLError:
        return
