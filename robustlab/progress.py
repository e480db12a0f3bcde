"""Progress bars over batches of images (stderr, only when enabled).
"""
from __future__ import annotations

import sys
from typing import Any, Iterable


def batch_progress(iterable: Iterable[Any], total: int, label: str, enabled: bool) -> Iterable[Any]:
    """Yield ``iterable``'s batches, with a progress bar over ``total`` images on stderr when enabled."""
    if not enabled:
        yield from iterable
        return
    import click

    with click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True) as bar:
        for item in iterable:
            yield item
            bar.update(len(item[0]) if isinstance(item, tuple) else 1)
