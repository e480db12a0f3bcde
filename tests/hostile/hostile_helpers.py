"""Helpers of the hostile-input tests: fingerprints of input trees, a hang guard."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
from pathlib import Path
from typing import Iterator


def tree_hashes(*roots: Path) -> dict[str, str]:
    """``{path: fingerprint}`` of everything under ``roots``, links not followed: a regular
    file's sha256, a link's target, a folder's mode, a FIFO's kind. Equal before and after a
    command means the command changed nothing there."""
    out: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        items = [root] if not root.is_dir() or root.is_symlink() else [root, *sorted(root.rglob("*"))]
        for p in items:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[os.fsdecode(bytes(p))] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[os.fsdecode(bytes(p))] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISDIR(st.st_mode):
                out[os.fsdecode(bytes(p))] = f"dir:{stat.S_IMODE(st.st_mode):o}"
            else:
                out[os.fsdecode(bytes(p))] = f"special:{stat.S_IFMT(st.st_mode):o}"
    return out


@contextlib.contextmanager
def fails_instead_of_hanging(seconds: int) -> Iterator[None]:
    """Turn a hang (e.g. a blocking read of a FIFO) into a test failure after ``seconds``."""

    def on_alarm(signum, frame):  # noqa: ARG001
        raise TimeoutError(f"hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
