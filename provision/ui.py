"""Output for people and scripts: logs and progress on stderr, results on stdout.

With `--output json` stdout carries exactly one JSON document, the envelope every verb shares:
`cluster`, `state`, `ok`, then the verb's own keys (errors included). Logs still go to
stderr unless `--quiet`. Nothing secret is ever passed here.

Tables never cut an identifier (host, pool, certificate, unit names): identifier columns do
not wrap, and a table that cannot fit the terminal with them whole is printed wider than the
terminal rather than truncated; the other columns wrap.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

if TYPE_CHECKING:  # rich is imported on first output: `--version`, `--help` and quiet runs skip it
    from rich.console import Console, RenderableType
    from rich.table import Table

ENVELOPE_KEYS = ("cluster", "state", "ok")


class Progress(Protocol):
    """The part of a UI that phases and headroom use: progress lines, debug lines, warnings
    (the CLI's `UI`, or headroom's log forwarder when it runs without one)."""

    @property
    def json(self) -> bool: ...

    def log(self, prefix: str, message: str) -> None: ...

    def debug(self, prefix: str, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


def _identity(text: str) -> str:
    return text


def _verbatim(text: str) -> bool:
    """Whether rich prints `text` unchanged (unstyled, soft-wrapped): no `:emoji:` code, tab or
    control character in it. Such a result (a `render`'s paths) is written without importing
    rich, a tenth of the command's start-up (P1, issue 11)."""
    return ":" not in text and all(line.isprintable() for line in text.split("\n"))


@dataclass
class UI:
    output: str = "text"  # text | json
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    # the consoles, made on first use (see `err` and `out`); a caller may set its own
    _err: Console | None = field(default=None, repr=False)
    _out: Console | None = field(default=None, repr=False)
    # what the envelope says: the cluster a verb acted on and the state it read or wrote
    cluster: str | None = None
    state: str | None = None
    # turns a hint's `provision VERB SPEC` into the command as the user gave it
    rewrite: Callable[[str], str] = _identity

    @property
    def err(self) -> Console:
        """Where logs, warnings and errors go (stderr)."""
        if self._err is None:
            from rich.console import Console
            self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    @err.setter
    def err(self, console: Console) -> None:
        self._err = console

    @property
    def out(self) -> Console:
        """Where results for people go (stdout)."""
        if self._out is None:
            from rich.console import Console
            self._out = Console(highlight=False, soft_wrap=True)
        return self._out

    @out.setter
    def out(self, console: Console) -> None:
        self._out = console

    @property
    def json(self) -> bool:
        return self.output == "json"

    def can_ask(self) -> bool:
        """Whether a question can be put to a person (a terminal, and not a script reading JSON)."""
        return sys.stdin.isatty() and not self.json

    def confirm(self, question: str, yes: bool) -> bool:
        """True with `yes`; else a y/N question on a terminal (no: False); else False."""
        if yes:
            return True
        if self.can_ask():
            import click  # only when a person is asked
            return bool(click.confirm(question, default=False, err=True))
        return False

    def log(self, prefix: str, message: str) -> None:
        """A progress line: `[prefix] message` on stderr."""
        if self.verbosity >= 0:
            self.err.print(f"[bold cyan]\\[{prefix}][/] {self.rewrite(message)}", markup=True)

    def debug(self, prefix: str, message: str) -> None:
        if self.verbosity >= 1:
            self.err.print(f"[dim]\\[{prefix}] {self.rewrite(message)}[/]", markup=True)

    def warn(self, message: str) -> None:
        if self.verbosity >= 0:
            self.err.print(f"[yellow]warning:[/] {self.rewrite(message)}", markup=True)

    def error(self, line: str) -> None:
        self.err.print(self.rewrite(line), markup=False, highlight=False)

    def envelope(self, data: dict[str, Any], ok: bool = True) -> dict[str, Any]:
        """`cluster`, `state`, `ok` first, then the verb's keys (sorted, nested ones too)."""
        body = json.loads(json.dumps(data, sort_keys=True, default=str))
        doc: dict[str, Any] = {"cluster": body.pop("cluster", self.cluster), "state": body.pop("state", self.state),
                               "ok": body.pop("ok", ok)}
        doc.update(body)
        return doc

    def result(self, data: dict[str, Any], text: RenderableType | None = None, ok: bool = True) -> None:
        """The command's result: the JSON envelope on stdout, or `text` for people."""
        if self.json:
            sys.stdout.write(json.dumps(self.envelope(data, ok), indent=2) + "\n")
            sys.stdout.flush()
        elif text is not None:
            if isinstance(text, str):
                shown = self.rewrite(text)
                if self._out is None and _verbatim(shown):
                    sys.stdout.write(shown + "\n")  # as rich would print it, without loading rich
                else:
                    self.out.print(shown, markup=False, highlight=False)
            else:
                self.print_wide(text)

    def print_wide(self, renderable: RenderableType) -> None:
        """Print tables at the terminal's width, or wider when their identifiers need it."""
        width = self.out.width
        needed = self.out.measure(renderable, options=self.out.options.update_width(100_000)).minimum
        if needed <= width:
            self.out.print(renderable)
            return
        self.out.width = needed  # print's own width= cannot exceed the console's
        try:
            self.out.print(renderable)
        finally:
            self.out.width = width

    def table(self, title: str | None, columns: list[str], rows: Iterable[list[Any]],
              ids: Iterable[str] = ()) -> Table:
        """A table; the columns named in `ids` hold identifiers and are never cut or wrapped."""
        from rich.table import Table
        from rich.text import Text
        rows = [["" if v is None else str(v) for v in r] for r in rows]
        ids = set(ids)
        t = Table(title=title, show_lines=False, box=None, pad_edge=False, header_style="bold",
                  title_justify="left")
        for i, c in enumerate(columns):
            if c in ids:
                width = max([len(c)] + [len(r[i]) for r in rows])
                t.add_column(c, no_wrap=True, min_width=width)
            else:
                t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*[Text(v) for v in r])  # plain text: a name with [brackets] is not markup
        return t
