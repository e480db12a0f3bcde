"""The README's examples run as written, so the documentation cannot drift from the code.

Every fenced block of README.md whose language is ``python`` or a shell (``bash``, ``sh``, ``shell``,
``console``) is code and is run here, in a fresh folder laid out as the README assumes:

* ``reports/demo/`` (python blocks only): a small demo built once per session with
  :func:`robustlab.demo.run_demo`; shell blocks make their own with ``robustlab demo``;
* ``detector.yaml`` + ``model.keras`` (the demo detector) and ``data/{train,val,test}`` (its data),
  for the examples written against "your" detector and data;
* ``configs/`` (the repository's suites, policies and detector profiles);
* ``.venv/bin/robustlab``: the installed console script, run with this checkout first on
  ``PYTHONPATH``, and ``.venv/bin`` first on ``PATH`` (as after ``source .venv/bin/activate``).

Python blocks are executed in this process; shell blocks by ``bash -euo pipefail`` in a
subprocess. The line right before a fence may carry markers (HTML comments, invisible on GitHub):

* ``<!-- not-run: REASON -->``: a shell block that is not meant to run here (it installs, needs
  your own model files, or is a long job). A reason is required, and python blocks cannot opt
  out: a new python block that does not run fails this file.
* ``<!-- slow -->``: run only without ``-m "not slow"``.

Small sizes: the demo command reads ``ROBUSTLAB_DEMO_N_TRAIN`` / ``_N_TEST`` / ``_EPOCHS`` from
the environment (every option has such a variable), so the Quick tour runs as written, only smaller.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELLS = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*(not-run|slow)\s*(?::\s*(.*?))?\s*-->")
SMALL_DEMO = {"ROBUSTLAB_DEMO_N_TRAIN": "20", "ROBUSTLAB_DEMO_N_TEST": "10", "ROBUSTLAB_DEMO_EPOCHS": "1"}


@dataclass(frozen=True)
class Block:
    """One fenced block of README.md: ``line`` is the 1-based line of its opening fence."""

    heading: str
    line: int
    lang: str
    code: str
    not_run: str | None  # the reason, when marked not-run
    slow: bool
    markers: tuple[str, ...]

    @property
    def is_code(self) -> bool:
        return self.lang == "python" or self.lang in SHELLS


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the heading each sits under and its markers."""
    lines = text.splitlines()
    blocks: list[Block] = []
    heading = "(top)"
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            lang = line[3:].strip()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if j == len(lines):
                raise AssertionError(f"README.md:{i + 1}: unclosed code fence")
            found: list[tuple[str, str | None]] = []
            k = i - 1
            while k >= 0 and MARKER.fullmatch(lines[k].strip()):
                m = MARKER.fullmatch(lines[k].strip())
                found.append((m.group(1), m.group(2) or None))
                k -= 1
            reasons = [r for kind, r in found if kind == "not-run"]
            blocks.append(
                Block(
                    heading=heading,
                    line=i + 1,
                    lang=lang,
                    code="\n".join(lines[i + 1 : j]) + "\n",
                    not_run=(reasons[0] or "") if reasons else None,
                    slow=any(kind == "slow" for kind, _ in found),
                    markers=tuple(kind for kind, _ in found),
                )
            )
            i = j
        i += 1
    return blocks


def _ids(blocks: list[Block]) -> list[str]:
    """Readable test ids: the heading, numbered when a heading holds several such blocks."""
    count: dict[str, int] = {}
    for b in blocks:
        count[b.heading] = count.get(b.heading, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for b in blocks:
        seen[b.heading] = seen.get(b.heading, 0) + 1
        out.append(b.heading if count[b.heading] == 1 else f"{b.heading} #{seen[b.heading]}")
    return out


BLOCKS = parse_blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in SHELLS and b.not_run is None]


def _params(blocks: list[Block]) -> list:
    return [pytest.param(b, id=i, marks=[pytest.mark.slow] if b.slow else []) for b, i in zip(blocks, _ids(blocks))]


# ---------------------------------------------------------------------------------------------
# the markers themselves


def test_parser_finds_blocks_headings_and_markers():
    text = "# T\n\n## A\n<!-- not-run: installs -->\n```bash\nx\n```\n\n### B c\n<!-- slow -->\n```python\ny = 1\n```\n```yaml\nk: v\n```\n"
    a, b, c = parse_blocks(text)
    assert (a.heading, a.lang, a.not_run, a.slow, a.code) == ("A", "bash", "installs", False, "x\n")
    assert (b.heading, b.lang, b.not_run, b.slow, b.line) == ("B c", "python", None, True, 11)
    assert c.lang == "yaml" and not c.is_code and c.markers == ()
    with pytest.raises(AssertionError, match="unclosed"):
        parse_blocks("```python\nx = 1\n")


def test_every_code_block_runs_or_says_why_not():
    assert len(PYTHON) >= 5 and SHELL, "README.md lost its runnable examples"
    problems = []
    for b in BLOCKS:
        where = f"README.md:{b.line} ({b.heading})"
        if b.markers and not b.is_code:
            problems.append(f"{where}: marker on a ```{b.lang} block, which is never run")
        if b.lang == "python" and b.not_run is not None:
            problems.append(f"{where}: python blocks cannot be not-run: make the example run")
        if b.not_run == "":
            problems.append(f"{where}: <!-- not-run --> needs a reason: <!-- not-run: REASON -->")
    assert not problems, "\n".join(problems)


def test_the_quick_tour_is_run():
    assert any(b.heading == "Quick tour" for b in SHELL)
    assert any(b.heading == "Python API" for b in PYTHON)


# ---------------------------------------------------------------------------------------------
# the folder the examples run in


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small demo (data + detector + run folder), built once: the README's ``reports/demo``."""
    from robustlab.demo import run_demo

    out = tmp_path_factory.mktemp("readme-demo") / "demo"
    run_demo(out, n_train=30, n_val=10, n_test=10, epochs=2, seed=0)
    return out


def _project(dest: Path, demo: Path, *, with_demo: bool) -> Path:
    """``dest`` laid out as the README's working folder (see the module docstring)."""
    shutil.copytree(ROOT / "configs", dest / "configs")
    shutil.copy2(demo / "detector" / "detector.yaml", dest / "detector.yaml")
    shutil.copy2(demo / "detector" / "model.keras", dest / "model.keras")
    shutil.copytree(demo / "data", dest / "data")
    if with_demo:
        shutil.copytree(demo, dest / "reports" / "demo", symlinks=True)
    venv_bin = dest / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    script = Path(sys.executable).parent / "robustlab"
    assert script.is_file(), f"no console script {script}: install robustlab (pip install -e '.[test]')"
    (venv_bin / "robustlab").symlink_to(script)
    return dest


@pytest.mark.parametrize("block", _params(PYTHON))
def test_python_block(block: Block, demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = _project(tmp_path / "work", demo_dir, with_demo=True)
    monkeypatch.chdir(work)
    code = compile("\n" * block.line + block.code, str(README), "exec")  # tracebacks point at README lines
    exec(code, {"__name__": "__readme__"})


@pytest.mark.parametrize("block", _params(SHELL))
def test_shell_block(block: Block, demo_dir: Path, tmp_path: Path) -> None:
    work = _project(tmp_path / "work", demo_dir, with_demo=False)
    env = {
        **os.environ,
        **SMALL_DEMO,
        "PATH": f"{work / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"README.md:{block.line} ({block.heading}) exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    if block.heading == "Quick tour":
        assert "| Original Images |" in res.stdout  # the cat of the run's metrics.md
        assert (work / "reports" / "demo" / "run" / "run.json").is_file()
