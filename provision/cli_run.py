"""Running the command line: exit codes (0 success, 2 invalid input, 1 a failure while acting,
130 interrupted), one error line per problem, the JSON error document with --output json, and a
traceback only when asked (-v or PROVISION_DEBUG) for an internal error.
"""
from __future__ import annotations

import os
import sys

import click

from .errors import ProvisionError
from .ui import UI




def _emit_error(ui: UI, err: ProvisionError) -> None:
    for line in err.lines:
        ui.error(line if err.exit_code == 2 or line.startswith(("error", "SPEC")) else f"error: {line}")
    if ui.json:
        ui.result({"exit_code": err.exit_code, "errors": [ui.rewrite(line) for line in err.lines]}, ok=False)


def run(cli: click.Group, args: list[str], complete_var: str) -> int:
    """Run the command line `args` through the click group `cli`: the exit code, with errors
    reported once (on stderr, and as one JSON document with --output json)."""
    if os.environ.get(complete_var):  # the shell asks for completions (click's protocol)
        try:
            cli.main(list(args), prog_name="provision", complete_var=complete_var, standalone_mode=True)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 0
        return 0
    ctx_ui: list[UI] = []
    try:
        with cli.make_context("provision", list(args)) as ctx:
            try:
                cli.invoke(ctx)
            finally:
                ui = _find_ui(ctx)
                if ui:
                    ctx_ui.append(ui)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        _json_error(args, 2, [exc.format_message()])
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        _json_error(args, 1, ["aborted"])
        return 1
    except ProvisionError as err:
        ui = ctx_ui[0] if ctx_ui else UI(output=_guess_output(args))
        _emit_error(ui, err)
        return err.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except OSError as exc:  # the file system said no (a state dir that cannot be made...): say where
        line = f"error: {exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else f"error: {exc}"
        click.echo(line, err=True)
        if _wants_traceback(args):
            _print_traceback()
        _json_error(args, 1, [line])
        return 1
    except Exception as exc:  # an internal error: say so, traceback only when asked
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        if _wants_traceback(args):
            _print_traceback()
        else:
            click.echo("(run with -v for the traceback)", err=True)
        _json_error(args, 1, [f"internal error: {type(exc).__name__}: {exc}"])
        return 1


def _json_error(args: list[str], exit_code: int, lines: list[str]) -> None:
    """With --output json, an error found before or outside a verb still gives one JSON document."""
    if _guess_output(args) == "json":
        import json
        sys.stdout.write(json.dumps({"cluster": None, "state": None, "ok": False, "exit_code": exit_code,
                                     "errors": lines}, indent=2) + "\n")


def _print_traceback() -> None:
    import traceback  # only when asked: a command that succeeds does not load it
    traceback.print_exc()


def _wants_traceback(args: list[str]) -> bool:
    """-v, -vv..., --verbose or PROVISION_DEBUG ask for the traceback of an internal error."""
    return bool(os.environ.get("PROVISION_DEBUG")) or any(
        a == "--verbose" or (len(a) > 1 and a[0] == "-" and set(a[1:]) == {"v"}) for a in args)


def _find_ui(ctx: click.Context) -> UI | None:
    current: click.Context | None = ctx
    while current is not None:
        ui = current.meta.get("ui")
        if ui:
            return ui  # type: ignore[no-any-return]
        current = current.parent
    return None


def _guess_output(args: list[str]) -> str:
    for i, a in enumerate(args):
        if a in ("--output", "-o") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--output="):
            return a.split("=", 1)[1]
        if a.startswith("-o") and len(a) > 2 and not a.startswith("--"):
            return a[2:]
    return "text"
