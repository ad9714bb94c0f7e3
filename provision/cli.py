"""The `provision` command line.

Every verb of the spec contract is here; each is thin and hands over to
`provision.verbs.<verb>.run(app, ...)` (imported when the verb runs, so `--help` and completion
load no verb). Exit codes: 0 success, 2 invalid input (spec,
arguments), 1 failure while acting. No traceback for a user's mistake; `-v` shows one for an
internal error.
"""
from __future__ import annotations

import sys

import click

from . import __version__
from .cli_options import (PHASE_NAMES, PROVIDER_NAMES, WorkflowGroup, common_options, complete_phase, complete_pool,
                          examples, finish, make_app, spec_argument)


@click.group(cls=WorkflowGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                  "max_content_width": 100},
             epilog=examples("provision init > cluster.yaml", "provision validate cluster.yaml",
                             "provision plan cluster.yaml", "provision up cluster.yaml --yes",
                             "provision status cluster.yaml", "provision down cluster.yaml --yes"))
@common_options
@click.version_option(__version__, prog_name="provision")
def cli(state_dir, output, verbose, quiet):
    """Turn one declarative cluster spec into a running Kubernetes cluster on CoreOS-family hosts,
    and keep it sized.

    Start with `provision init > cluster.yaml`, check it with `provision validate cluster.yaml`,
    look at `provision plan cluster.yaml`, then `provision up cluster.yaml`. SPEC is a spec file,
    or - for standard input.
    """


@cli.command(short_help="Print a commented spec to start from.",
             epilog=examples("provision init > cluster.yaml", "provision init --provider aws --name prod > prod.yaml"))
@click.option("--provider", type=click.Choice(PROVIDER_NAMES), default="local", show_default=True,
              help="Provider the starter spec is for.")
@click.option("--name", default="demo", show_default=True, help="Cluster name.")
@common_options
@click.pass_context
def init(ctx, provider, name, **common):
    """Print a commented spec to start from: every field with its default and what it means."""
    from .verbs import init as verb
    finish(verb.run(make_app(ctx, None, **common), provider=provider, name=name))


@cli.command(short_help="Print the spec's JSON Schema (editors check specs with it).",
             epilog=examples("provision schema > provision-spec-v1.schema.json",
                             "provision schema -o json"))
@common_options
@click.pass_context
def schema(ctx, **common):
    """Print the JSON Schema of a spec file, generated from the models `validate` uses.

    Saved as provision-spec-v1.schema.json beside a spec made by `provision init` (whose first
    line points a YAML language server at that file), an editor checks the spec as it is typed:
    field names, types, allowed values and every field's description.
    """
    from .verbs import schema as verb
    finish(verb.run(make_app(ctx, None, **common)))


@cli.command(short_help="Check a spec; one line per problem.",
             epilog=examples("provision validate cluster.yaml", "provision init | provision validate -",
                             "provision validate cluster.yaml -o json"))
@spec_argument
@common_options
@click.pass_context
def validate(ctx, spec, **common):
    """Check SPEC against the spec contract and the provider's own rules; print one line per
    problem (exit 2), all of them in one pass, or OK."""
    from .verbs import validate as verb
    finish(verb.run(make_app(ctx, spec, **common)))


@cli.command(short_help="Hosts to create, keep and destroy.",
             epilog=examples("provision plan cluster.yaml", "provision plan cluster.yaml --out cluster.plan",
                             "provision up cluster.yaml --plan cluster.plan"))
@spec_argument
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Save the plan to FILE, for `provision up SPEC --plan FILE` to apply exactly it.")
@common_options
@click.pass_context
def plan(ctx, spec, out_file, **common):
    """Show the hosts SPEC wants against the hosts state records: create, keep, destroy; and
    for each running host whether the change keeps it, updates it in place or replaces it, with
    the spec fields that cause it. A Kubernetes version change the version-skew policy refuses
    is exit 2."""
    from .verbs import plan as verb
    finish(verb.run(make_app(ctx, spec, **common), **({"out_file": out_file} if out_file else {})))


@cli.command(short_help="Write each machine's config (creates the PKI).",
             epilog=examples("provision render cluster.yaml --out out/",
                             "provision render cluster.yaml --out out/ --pin"))
@spec_argument
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write configs and index.json into.")
@click.option("--pin", is_flag=True, default=False,
              help="Pin downloads that have no hash on first use: fetch each once and record its "
                   "sha512 in state (as `up` does).")
@common_options
@click.pass_context
def render(ctx, spec, out_dir, pin, **common):
    """Write one config per distinct machine (per host for masters and etcd, per pool for
    workers) and index.json into --out. The configs carry certificates: when the state has no
    CA yet, render creates the cluster's CA and certificates in the state first (as `up`'s pki
    phase does)."""
    from .verbs import render as verb
    finish(verb.run(make_app(ctx, spec, **common), out_dir=out_dir, pin=pin))


@cli.command(short_help="Bring the cluster to the spec, phase by phase.",
             epilog=examples("provision up cluster.yaml                  # print the plan (no terminal) or ask",
                             "provision up cluster.yaml --yes",
                             "provision up cluster.yaml --plan cluster.plan",
                             "provision up cluster.yaml --until render --yes",
                             "provision up cluster.yaml --only kubeconfig --yes",
                             "provision up cluster.yaml --dry-run",
                             "provision up cluster.yaml --verify --yes"))
@spec_argument
@click.option("--yes", "-y", is_flag=True, help="Act without asking.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Apply exactly the plan `provision plan SPEC --out FILE` saved; refused (exit 2) when the "
                   "spec or the state changed since.")
@click.option("--until", "until", default=None, metavar="PHASE", shell_complete=complete_phase,
              help=f"Stop after PHASE; phases in order: {', '.join(PHASE_NAMES)}.")
@click.option("--only", "only", default=None, metavar="PHASE", shell_complete=complete_phase,
              help="Run PHASE alone (one of the phases above).")
@click.option("--dry-run", is_flag=True, help="Say what each phase would do; change nothing.")
@click.option("--verify", is_flag=True,
              help="Re-check every host over SSH (and repair what drifted), not only the hosts whose "
                   "recorded convergence differs from what they should have.")
@click.option("--max-unavailable", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Workers updated or replaced at once when the spec changed running hosts (masters and "
                   "etcd members always go one at a time).")
@common_options
@click.pass_context
def up(ctx, spec, yes, plan_file, until, only, dry_run, verify, max_unavailable, **common):
    """Bring the cluster to SPEC, phase by phase: validate, pki, render, rollout, machines, wait, etcd,
    flannel, fleet, masters, workers, kubeconfig.

    Without --yes: on a terminal, shows the plan and asks; without a terminal (a pipe, cron, CI),
    prints the plan and exits 0 having changed nothing.

    The bootstrap phases run their roles only on hosts whose convergence record in state is
    missing or differs (new, replaced, changed config, addresses or roles); --verify runs them
    on every host, a bounded number at a time."""
    from .verbs import up as verb
    finish(verb.run(make_app(ctx, spec, **common), yes=yes, until=until, only=only, dry_run=dry_run,
                    plan_file=plan_file, verify=verify, max_unavailable=max_unavailable))


@cli.command(short_help="Hosts, etcd health, units, headroom.",
             epilog=examples("provision status cluster.yaml", "provision status cluster.yaml -o json"))
@spec_argument
@common_options
@click.pass_context
def status(ctx, spec, **common):
    """Hosts, addresses, etcd members and health, unit states, headroom figures. Exit 0 when
    healthy, 1 when not (or when the cluster has no state)."""
    from .verbs import status as verb
    finish(verb.run(make_app(ctx, spec, **common)))


@cli.command(short_help="Find what is wrong, and say what to do.",
             epilog=examples("provision doctor cluster.yaml", "provision doctor cluster.yaml -o json"))
@spec_argument
@common_options
@click.pass_context
def doctor(ctx, spec, **common):
    """Check this machine (the tools SPEC's provider needs, state permissions: 0700 directories,
    0600 secrets) and the cluster (certificates expiring within 30 days, etcd health and quorum,
    hosts in the cloud but not in state and the reverse, hosts whose config differs from what
    would render now, the API server's /healthz). Each finding says what to do. Exit 0 when
    healthy, 1 with findings."""
    from .verbs import doctor as verb
    finish(verb.run(make_app(ctx, spec, **common)))


@cli.command(short_help="Write the admin kubeconfig.",
             epilog=examples("provision kubeconfig cluster.yaml", "provision kubeconfig cluster.yaml --out ~/.kube/demo",
                             "provision kubeconfig cluster.yaml --out - > kc"))
@spec_argument
@click.option("--out", "out_file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Where to write it, - for standard output (default: <state dir>/<cluster>/kubeconfig).")
@common_options
@click.pass_context
def kubeconfig(ctx, spec, out_file, **common):
    """Write the admin kubeconfig (0600) and print its path."""
    from .verbs import kubeconfig as verb
    finish(verb.run(make_app(ctx, spec, **common), out_file=out_file))


@cli.group(cls=WorkflowGroup, short_help="Certificates and keys of a cluster.",
           epilog=examples("provision pki show cluster.yaml", "provision pki rotate cluster.yaml --leaf admin"))
def pki():
    """Certificates and keys of a cluster."""


@pki.command("show", short_help="Every certificate: subject, SANs, expiry.",
             epilog=examples("provision pki show cluster.yaml", "provision pki show cluster.yaml -o json"))
@spec_argument
@common_options
@click.pass_context
def pki_show(ctx, spec, **common):
    """List every certificate with subject, SANs and expiry (no secrets)."""
    from .verbs import pki_show as verb
    finish(verb.run(make_app(ctx, spec, **common)))


@pki.command("rotate", short_help="Renew leaf certificates with the same CA.",
             epilog=examples("provision pki rotate cluster.yaml", "provision pki rotate cluster.yaml --leaf admin"))
@spec_argument
@click.option("--leaf", default=None,
              help="Renew only this certificate (a name from `pki show`).")
@common_options
@click.pass_context
def pki_rotate(ctx, spec, leaf, **common):
    """Renew the leaf certificates (or one of them) with the same CA."""
    from .verbs import pki_rotate as verb
    finish(verb.run(make_app(ctx, spec, **common), leaf=leaf))


@pki.command("rotate-ca", short_help="Rotate a CA in three phases with a trust overlap.",
             epilog=examples("provision pki rotate-ca cluster.yaml --ca etcd",
                             "provision pki rotate-ca cluster.yaml --ca kubernetes"))
@spec_argument
@click.option("--ca", "ca", default="etcd", show_default=True,
              help="The CA to rotate: etcd, kubernetes or front-proxy. Each run starts the next phase: 1 hosts trust the old and the new "
                   "CA, 2 the new CA signs every leaf again, 3 the old CA is dropped; `provision up` rolls each "
                   "phase onto the running hosts before the next may start.")
@common_options
@click.pass_context
def pki_rotate_ca(ctx, spec, ca, **common):
    """Start the next phase of a CA rotation (old and new CA trusted together until every host
    carries the new one)."""
    from .verbs import pki_rotate_ca as verb
    finish(verb.run(make_app(ctx, spec, **common), ca=ca))


@cli.command(short_help="Resize a worker pool within min..max.",
             epilog=examples("provision scale cluster.yaml workers 5 --yes",
                             "provision scale cluster.yaml workers 2 --dry-run"))
@spec_argument
@click.argument("pool", shell_complete=complete_pool)
@click.argument("count", type=click.IntRange(min=0))
@click.option("--yes", "-y", is_flag=True, help="Act without asking.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@common_options
@click.pass_context
def scale(ctx, spec, pool, count, yes, dry_run, **common):
    """Set worker POOL to COUNT hosts (within its min..max) and converge."""
    from .verbs import scale as verb
    finish(verb.run(make_app(ctx, spec, **common), pool=pool, count=count, yes=yes, dry_run=dry_run))


@cli.command(context_settings={"ignore_unknown_options": False}, short_help="Keep spare capacity in a worker pool.",
             epilog=examples("provision headroom cluster.yaml --once", "provision headroom cluster.yaml --dry-run",
                             "provision headroom cluster.yaml --explain",
                             "provision headroom install cluster.yaml --timer systemd --write",
                             "provision headroom history cluster.yaml --plot headroom.svg"))
@click.argument("args", nargs=-1, required=True, metavar="[install|history] SPEC")
@click.option("--once", is_flag=True, help="Run one reconcile and exit (what cron calls).")
@click.option("--dry-run", is_flag=True, help="Print the decision; do not act.")
@click.option("--explain", is_flag=True, help="Show the last decisions and why.")
@click.option("--timer", type=click.Choice(["cron", "systemd"]), default="cron", show_default=True,
              help="install: a cron line or a systemd timer.")
@click.option("--write", is_flag=True, help="install: install it instead of printing it.")
@click.option("--plot", "plot_file", default=None, metavar="FILE",
              help="history: draw demand, capacity, hosts and actions over time (.png or .svg).")
@common_options
@click.pass_context
def headroom(ctx, args, once, dry_run, explain, timer, write, plot_file, **common):
    """Keep spare capacity in the headroom pool by adding and removing workers.

    `provision headroom SPEC --once` runs one reconcile; `provision headroom install SPEC`
    prints (or with --write installs) a cron line or systemd timer that runs it;
    `provision headroom history SPEC` prints every recorded decision over time (demand,
    capacity, hosts, action) and whether it replays.
    """
    if plot_file and not (len(args) == 2 and args[0] == "history"):
        raise click.UsageError("--plot goes with history SPEC")
    if len(args) == 2 and args[0] == "install":
        from .verbs import headroom_install
        finish(headroom_install.run(make_app(ctx, args[1], **common), timer=timer, write=write))
    elif len(args) == 2 and args[0] == "history":
        from .verbs import headroom_history
        finish(headroom_history.run(make_app(ctx, args[1], **common), plot=plot_file))
    elif len(args) == 1:
        from .verbs import headroom as headroom_verb
        finish(headroom_verb.run(make_app(ctx, args[0], **common), once=once, dry_run=dry_run, explain=explain))
    else:
        raise click.UsageError("expected SPEC, install SPEC or history SPEC")


@cli.command(short_help="Destroy every host of the cluster.",
             epilog=examples("provision down cluster.yaml            # list what would go (no terminal) or ask",
                             "provision down cluster.yaml --yes"))
@spec_argument
@click.option("--yes", "-y", is_flag=True, help="Destroy without asking.")
@common_options
@click.pass_context
def down(ctx, spec, yes, **common):
    """Destroy every host of the cluster (found by tag, not only from state).

    Without --yes: on a terminal, asks you to type the cluster's name; without a terminal,
    lists what would be destroyed and exits 0 having changed nothing. A cluster with nothing
    to destroy exits 0 and writes nothing."""
    from .verbs import down as verb
    finish(verb.run(make_app(ctx, spec, **common), yes=yes))


@cli.command(short_help="Print a shell completion script.",
             epilog=examples("provision completion bash > /etc/bash_completion.d/provision",
                             "provision completion zsh > \"${fpath[1]}/_provision\"",
                             "provision completion fish > ~/.config/fish/completions/provision.fish",
                             "eval \"$(provision completion bash)\""))
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@common_options
@click.pass_context
def completion(ctx, shell, **common):
    """Print the completion script for SHELL: it completes verbs, options, pool names and phases."""
    from click.shell_completion import get_completion_class
    app = make_app(ctx, None, **common)
    script = get_completion_class(shell)(cli, {}, "provision", COMPLETE_VAR).source()
    app.ui.result({"shell": shell, "script": script}, None)
    if not app.ui.json:
        sys.stdout.write(script if script.endswith("\n") else script + "\n")


COMPLETE_VAR = "_PROVISION_COMPLETE"


# A command allocates hundreds of thousands of objects that live until it exits (modules, the spec's
# models, templates) and makes few cycles: with Python's default (a collection every 700 net
# allocations) a `render` spent a tenth of its CPU in some 130 collections that freed nearly
# nothing (P1, issue 11). mypy's command line raises the threshold the same way.
GC_THRESHOLD = (100_000, 50, 100)


def main(argv: list[str] | None = None) -> int:
    """`provision ARGS...`: the exit code (0, 1 acting failed, 2 bad input; see cli_run)."""
    import gc
    gc.set_threshold(*GC_THRESHOLD)
    from .cli_run import run
    return run(cli, sys.argv[1:] if argv is None else argv, COMPLETE_VAR)


if __name__ == "__main__":
    sys.exit(main())
