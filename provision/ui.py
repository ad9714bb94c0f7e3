"""Output for people and scripts: logs and progress on stderr, results on stdout.

With `--output json` stdout carries exactly one JSON document; logs still go to stderr
unless `--quiet`. Nothing secret is ever passed here.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class UI:
    output: str = "text"  # text | json
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True))
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))

    @property
    def json(self) -> bool:
        return self.output == "json"

    def log(self, prefix: str, message: str) -> None:
        """A progress line: `[prefix] message` on stderr."""
        if self.verbosity >= 0:
            self.err.print(f"[bold cyan]\\[{prefix}][/] {message}", markup=True)

    def debug(self, prefix: str, message: str) -> None:
        if self.verbosity >= 1:
            self.err.print(f"[dim]\\[{prefix}] {message}[/]", markup=True)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/] {message}", markup=True)

    def error(self, line: str) -> None:
        self.err.print(line, markup=False, highlight=False)

    def result(self, data: Any, text: str | Table | None = None) -> None:
        """The command's result: JSON on stdout, or `text` for people."""
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            sys.stdout.flush()
        elif text is not None:
            if isinstance(text, str):
                self.out.print(text, markup=False, highlight=False)
            else:
                self.out.print(text)

    def table(self, title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
        t = Table(title=title, show_lines=False, box=None, pad_edge=False, header_style="bold")
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        return t
