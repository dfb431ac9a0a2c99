"""The Rich console every command prints through."""

from __future__ import annotations

from rich.console import Console


def make_console() -> Console:
    """A console that never wraps tables when the output is a file or a pipe."""
    console = Console()
    if not console.is_terminal:
        console.width = 160
    return console
