"""Errors that the CLI turns into exit codes without a traceback.

UserError (exit 2): the input is wrong (spec, arguments); nothing was changed.
ActionError (exit 1): something failed while acting; state records what exists.
"""
from __future__ import annotations


class ProvisionError(Exception):
    exit_code = 1

    def __init__(self, message: str | list[str]):
        self.lines = [message] if isinstance(message, str) else list(message)
        super().__init__("\n".join(self.lines))


class UserError(ProvisionError):
    """Invalid input: a spec, an argument, a file. Exit 2."""

    exit_code = 2


class ActionError(ProvisionError):
    """A failure while acting on hosts, clouds or state. Exit 1."""

    exit_code = 1


class LockHeld(ActionError):
    """Another provision process holds the cluster's lock."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}
