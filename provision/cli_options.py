"""What every `provision` command shares: the options every verb takes, the `App` a command
hands its verb, shell completion of values (phases, pools) and the help's layout (Examples
sections, verbs in workflow order)."""
from __future__ import annotations

import sys
import warnings
from typing import Callable

import click

from .app import App
from .phases import PHASE_NAMES
from .providers import PROVIDERS
from .state import STATE_DIR_ENV
from .ui import UI

PROVIDER_NAMES = tuple(PROVIDERS)  # the registry is the one list of providers


def common_options(fn: Callable) -> Callable:
    """Options every verb takes, also accepted before the verb."""
    fn = click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                      help="Directory holding every cluster's state, for state.backend: local "
                           f"(default: ${STATE_DIR_ENV}, else the spec's state.path).")(fn)
    fn = click.option("--output", "-o", type=click.Choice(["text", "json"]), default=None,
                      help="Result format; json prints one document on stdout.")(fn)
    fn = click.option("--verbose", "-v", count=True, help="More detail (repeat for more).")(fn)
    fn = click.option("--quiet", "-q", is_flag=True, default=False,
                      help="Only results and errors (no progress, no warnings).")(fn)
    return fn


def make_app(ctx: click.Context, spec: str | None, state_dir: str | None, output: str | None,
             verbose: int, quiet: bool) -> App:
    parent = ctx.find_root().params
    output = output or parent.get("output") or "text"
    verbosity = -1 if (quiet or parent.get("quiet")) else (verbose or parent.get("verbose") or 0)
    ui = UI(output=output, verbosity=verbosity)
    if verbosity < 0:  # -q: no warnings of any kind, Python's (libraries') included
        warnings.simplefilter("ignore")
    ctx.meta["ui"] = ui
    app = App(ui=ui, state_dir=state_dir if state_dir is not None else parent.get("state_dir"), spec_path=spec)
    ui.rewrite = app.rewrite_hint
    return app


def finish(code: int | None) -> None:
    """A verb's `run` returned: exit with its code when it gave one other than 0."""
    if code:
        sys.exit(code)


# ---- shell completion of values --------------------------------------------------------------

def complete_phase(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [name for name in PHASE_NAMES if name.startswith(incomplete)]


def complete_pool(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Worker pools of the spec already on the command line (nothing when it cannot be read)."""
    path = ctx.params.get("spec")
    if not path or path == "-":
        return []
    try:
        from .spec import load_spec
        spec = load_spec(path)
    except Exception:  # completion never fails loudly
        return []
    return [p.name for p in spec.worker_pools if p.name.startswith(incomplete)]


spec_argument = click.argument("spec", type=click.Path(dir_okay=True, path_type=str))


def examples(*lines: str) -> str:
    """An Examples section for a verb's help (kept as written: no rewrapping)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class WorkflowGroup(click.Group):
    """Lists verbs in the order of the workflow (the order they are defined), not A to Z."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)
