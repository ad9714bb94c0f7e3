"""What every verb is handed: `App`, the UI with the options every command takes, and the spec
and state store opened on first use. The CLI makes one per command; verbs read it, never the CLI.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ActionError, UserError

if TYPE_CHECKING:  # start-up (`--version`, `--help`) loads neither the spec's models nor rich
    from .spec import Spec
    from .state import StateStore
    from .ui import UI
    from .api import Cluster
    from .api_results import Event


@dataclass
class App:
    """What a verb needs: the UI, the options every command takes, and the spec on demand.

    `state_dir` is the --state-dir option as given. The store is opened on first use; opening it
    says which state the verb reads or writes (a first line on stderr, `state` in JSON)."""

    ui: UI
    state_dir: str | None = None
    spec_path: str | None = None
    _spec: Spec | None = field(default=None, repr=False)
    _store: StateStore | None = field(default=None, repr=False)
    _cluster: "Cluster | None" = field(default=None, repr=False)

    @property
    def spec(self) -> Spec:
        if self._spec is None:
            from .spec import load_spec
            if self.spec_path is None:
                raise UserError("SPEC: a spec file is required")
            self._spec = load_spec(self.spec_path)
            self.ui.cluster = self._spec.name
        return self._spec

    @property
    def store(self) -> StateStore:
        if self._store is None:
            from .state import open_store, state_directory
            spec = self.spec
            self._store = open_store(spec, state_directory(spec, self.state_dir))
            self.ui.state = self._store.location
            self.ui.log("state", f"{self._store.location} ({self._store.backend} backend)")
        return self._store

    def cluster(self) -> "Cluster":
        """The spec's cluster as the Python API drives it (the verbs call it), on this command's
        state store; its lock names this command line."""
        if self._cluster is None:
            from .api import Cluster
            from .state import command_line
            self._cluster = Cluster(self.spec, state_dir=self.state_dir, spec_path=self.spec_path, store=self.store,
                                    command=command_line())
        return self._cluster

    def progress(self, event: "Event") -> None:
        """The API's progress, shown as the CLI shows it: a phase as `[name] (i/n) summary`,
        its end (`done in`) and detail with -v, warnings as warnings, the rest as log lines."""
        ui = self.ui
        if event.kind == "phase":
            ui.log(event.topic, f"({event.index}/{event.total}) {event.message}")
        elif event.kind in ("done", "debug"):
            ui.debug(event.topic, event.message)
        elif event.kind == "warning":
            ui.warn(event.message)
        else:
            ui.log(event.topic, event.message)

    def command(self, *words: str, extra: tuple[str, ...] = ()) -> str:
        """A complete command to paste: `provision WORDS SPEC [--state-dir DIR] EXTRA...`, with
        the spec path and --state-dir as the user gave them."""
        parts = ["provision", *words]
        if self.spec_path is not None:
            parts.append(self.spec_path)
        if self.state_dir is not None:
            parts += ["--state-dir", self.state_dir]
        return shlex.join(parts + list(extra))

    def require_state(self) -> None:
        """Exit 1 with one answer for a cluster that has no state (read verbs)."""
        if not self.store.exists():
            raise ActionError(f"cluster {self.spec.name} has no state at {self.store.location}; "
                              f"create it with: {self.command('up', extra=('--yes',))}")

    def rewrite_hint(self, text: str) -> str:
        """`provision VERB SPEC...` in a message from below the CLI, made the user's command."""
        if self.spec_path is None or "SPEC" not in text:
            return text
        given = shlex.quote(self.spec_path)
        if self.state_dir is not None:
            given += " --state-dir " + shlex.quote(self.state_dir)
        return HINT_RE.sub(lambda m: f"provision {m.group(1)} {given}", text)


HINT_RE = re.compile(r"provision ((?:pki |headroom )?[a-z]+) SPEC\b")
