"""Rolling changes to running hosts: in what order, how many at a time, and whether etcd can
lose a member now. Pure functions, no I/O (the `rollout` phase acts on them).

`plan`'s per-host verdicts (provision.changes) say which kept hosts need an in-place update
and which a replacement. The rollout takes them:

- masters first (the control plane before the kubelets, as the version-skew policy wants),
  then dedicated etcd hosts, then workers; within a group in plan order (a Kubernetes
  downgrade turns masters and workers around);
- an etcd member or a master is changed alone, and the next waits until it is healthy again
  (an etcd member is removed and added back, so two at once could cost quorum);
- workers `max_unavailable` at a time (default 1: kops' rolling update default).

A replaced master or etcd member keeps its name, address and etcd peer URL: the other hosts'
configs (etcd's member list, the API server certificate, the node-local API proxy) name them, so
a new identity would change every other host as well. A worker no other host names is replaced
by surge (create before destroy): drained, a new worker made under a new name in its pool (the
lowest free index), waited for until healthy, and only then the old one destroyed, so the pool
never runs with fewer workers than `max_unavailable` below its size, and its size after is its
size before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .changes import CREATE_BEFORE_DESTROY, KEEP, REPLACE, UPDATE, HostChange, replacement_strategy

STATE_KEY = "rollout"  # state["rollout"]: the host being changed now, and how far it got
JOINED_KEY = "joined"  # state["etcd"]["joined"]: members that joined a running etcd (member add)

# How far a replacement got, in order; recorded in state after each, so a re-run resumes.
DRAINED, MEMBER_REMOVED, DESTROYED, MEMBER_ADDED, CREATED = (
    "drained", "member-removed", "destroyed", "member-added", "created")
STAGES = (DRAINED, MEMBER_REMOVED, DESTROYED, MEMBER_ADDED, CREATED)
# A surged worker: drained (its replacement's name recorded), then its replacement made and in
# state; once that is healthy the old one is destroyed and dropped from the record altogether.
SURGED = "surged"
SURGE_STAGES = (DRAINED, SURGED)
SURGE_KEY = "surge"  # state["rollout"]["surge"]: old worker -> the new worker that replaces it


@dataclass(frozen=True)
class Step:
    """One host to change: `update` in place or `replace`, and why."""

    host: str
    action: str  # update | replace
    role: str
    etcd: bool
    because: str

    @property
    def surges(self) -> bool:
        """Replaced create before destroy (a worker that carries no etcd)."""
        return self.action == REPLACE and replacement_strategy(self.role, self.etcd) == CREATE_BEFORE_DESTROY

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "action": self.action, "role": self.role, "etcd": self.etcd,
                               "because": self.because}
        if self.action == REPLACE:
            out["replacement"] = replacement_strategy(self.role, self.etcd)
        return out


def _group(step: Step, workers_first: bool) -> int:
    if step.role == "master":
        return 2 if workers_first else 0
    if step.etcd or step.role == "etcd":
        return 1
    return 0 if workers_first else 2


CONFIG_CHANGED = "its rendered config changed, no spec field did (renewed certificates or a changed template)"


def config_changed(recorded: Mapping[str, str | None], rendered: Mapping[str, str | None]) -> list[str]:
    """Hosts whose config as rendered now (sha256) differs from the one they carry (`recorded`,
    their boot record's digest); a host with either digest unknown is left alone."""
    return sorted(name for name, now in rendered.items() if now and recorded.get(name) and recorded[name] != now)


def with_config_changes(changes: Mapping[str, HostChange], configs_changed: Iterable[str]) -> dict[str, HostChange]:
    """`changes` with each kept host of `configs_changed` (no spec field changes it, its
    rendered config differs from the one it carries) an in-place update, as `steps` makes it:
    what `plan` shows after `pki rotate`."""
    out = dict(changes)
    for name in configs_changed:
        change = out.get(name)
        if change is not None and change.action == KEEP:
            out[name] = HostChange(name, UPDATE, because=CONFIG_CHANGED)
    return out


def steps(changes: Mapping[str, HostChange], desired: Sequence[Any], workers_first: bool = False,
          configs_changed: Iterable[str] = ()) -> list[Step]:
    """The hosts to update or replace, masters first, then etcd hosts, then workers (plan order
    within each); `workers_first` (a Kubernetes downgrade: no kubelet may be newer than an API
    server) turns masters and workers around. `desired` is the plan's HostPlans. A host of
    `configs_changed` that no spec field changes is updated in place (after `pki rotate`)."""
    order = {h.name: i for i, h in enumerate(desired)}
    by_name = {h.name: h for h in desired}
    out = [Step(name, change.action, by_name[name].role, bool(by_name[name].etcd), change.reason)
           for name, change in changes.items() if change.action in (UPDATE, REPLACE) and name in by_name]
    planned = {s.host for s in out}
    out += [Step(name, UPDATE, by_name[name].role, bool(by_name[name].etcd), CONFIG_CHANGED)
            for name in configs_changed if name in by_name and name not in planned
            and (changes.get(name) is None or changes[name].action == KEEP)]
    return sorted(out, key=lambda s: (_group(s, workers_first), order[s.host]))


def batches(todo: Iterable[Step], max_unavailable: int) -> list[list[Step]]:
    """Groups changed together: a master or etcd member alone, workers `max_unavailable` at a time."""
    if max_unavailable < 1:
        raise ValueError("max_unavailable must be at least 1")
    out: list[list[Step]] = []
    for step in todo:
        alone = step.role in ("master", "etcd") or step.etcd
        last = out[-1] if out else None
        if not alone and last and len(last) < max_unavailable and not any(
                s.role in ("master", "etcd") or s.etcd for s in last):
            last.append(step)
        else:
            out.append([step])
    return out


def quorum(members: int) -> int:
    return members // 2 + 1


def member_removal_refusal(members: int, healthy: int) -> str | None:
    """Why an etcd member must not be taken out now (None: it may). Every member must be
    healthy first, and the members left must keep quorum while its replacement joins."""
    if members <= 1:
        return ("etcd has a single member: replacing it would lose the cluster's data; "
                "grow etcd.count to 3 first")
    if healthy < members:
        return f"only {healthy} of {members} etcd members are healthy; a member is replaced only when all are"
    # While the replacement joins, the cluster counts `members` with `members - 1` running.
    if members - 1 < quorum(members):
        return f"{members - 1} running members of {members} would be below quorum ({quorum(members)})"
    return None


def next_stage_done(progress: Mapping[str, Any] | None, host: str, stage: str) -> bool:
    """Whether the recorded progress (`state["rollout"]`) says `host` got to `stage` or further."""
    reached = ((progress or {}).get("hosts") or {}).get(host)
    return reached in STAGES and STAGES.index(reached) >= STAGES.index(stage)


def in_progress(progress: Mapping[str, Any] | None) -> list[str]:
    """The hosts a killed run was replacing (in the order it took them)."""
    return list(((progress or {}).get("hosts") or {}))


def surge_stage_done(progress: Mapping[str, Any] | None, host: str, stage: str) -> bool:
    """Whether the recorded progress says the surge of worker `host` got to `stage` or further."""
    reached = ((progress or {}).get("hosts") or {}).get(host)
    return reached in SURGE_STAGES and SURGE_STAGES.index(reached) >= SURGE_STAGES.index(stage)


def surging(progress: Mapping[str, Any] | None) -> dict[str, str]:
    """Workers a killed run was surging: old name -> the name of the worker replacing it."""
    return dict(((progress or {}).get(SURGE_KEY) or {}))


def replacement_indices(taken: Iterable[int], count: int) -> list[int]:
    """The `count` lowest pool indices not in `taken` (the plan gives new hosts the same)."""
    used, candidate = set(taken), 0
    out: list[int] = []
    while len(out) < count:
        if candidate not in used:
            out.append(candidate)
        candidate += 1
    return out
