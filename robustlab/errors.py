"""Exceptions that map to the exit codes of the contract.

* :class:`UsageError` (and any :class:`RobustlabError`): bad usage or bad input -> exit code 2,
  printed as one line ``robustlab: error: <thing>: <problem>; <fix>``.
* :class:`PolicyFailed`: a policy rule or gate failed -> exit code 1.
"""
from __future__ import annotations

from pathlib import Path


class RobustlabError(Exception):
    """A user mistake: bad usage or bad input. Exit code 2, one line, no traceback."""

    exit_code = 2

    def __init__(self, problem: str, *, thing: str | Path | None = None, fix: str | None = None):
        self.thing = None if thing is None else str(thing)
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.problem if self.thing is None else f"{self.thing}: {self.problem}"
        if self.fix:
            text = f"{text}; {self.fix}"
        return " ".join(text.split())  # exactly one line


class UsageError(RobustlabError):
    """Alias used for option/argument problems."""


class PolicyFailed(Exception):
    """One or more policy rules failed. Exit code 1."""

    exit_code = 1



def exception_line(exc: BaseException, limit: int = 220) -> str:
    """``ClassName: message`` on one line, cut to ``limit`` characters (for one-line errors)."""
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"
