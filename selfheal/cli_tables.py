"""Printing when the output is not a terminal: wide tables, and lines kept whole.

Rich lays a table out in the console's width, and a console that writes to a pipe or a file is 80
columns wide: `selfheal serving history` then wrapped each reason one word per line (~150 lines for 9
versions). Every table the CLI prints goes through `print_table`: off a terminal it gets the width it
needs, up to `PIPED_WIDTH`; on a terminal the terminal's width stands. Plain lines wrapped at 80 too
(a warning or a path cut in two in a log file): every CLI console is a `CliConsole`, which leaves lines
whole off a terminal. (The demo widens its console itself, for the plain lines after its last table.)
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

PIPED_WIDTH = 200  # wide enough for a reason or a page summary on one or two lines; `less -S` handles it


class CliConsole(Console):
    """A console that never wraps plain lines off a terminal (a pipe or a file gets each line whole); on a
    terminal Rich wraps them at its width, as any console does. Where the output goes is read at each
    print, so a console made at import time follows the stream it ends up writing to."""

    @property  # type: ignore[override]
    def soft_wrap(self) -> bool:
        return not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:
        """`Console.__init__` assigns it; where the output goes decides instead."""


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` on ``console``, widened to `PIPED_WIDTH` when the console is not a terminal."""
    if console.is_terminal or console.width >= PIPED_WIDTH:
        console.print(table)
        return
    # print(width=) can only narrow a console: a console of the same file, wider, prints it instead.
    Console(file=console.file, width=PIPED_WIDTH, no_color=console.no_color, stderr=console.stderr).print(
        table
    )
