"""`provision headroom history SPEC [--plot FILE]`: every recorded headroom decision over time: demand
(containers used and pending), capacity (ready slots), hosts (ready, booting, silent), the
action and why, and whether the record replays to the same decision (records carry the
settings, every host's load and the memory they were decided from). `--plot FILE` (.png or
.svg) draws demand, capacity, hosts and each action over time."""
from __future__ import annotations

import time
from typing import Any, Mapping

from ..app import App
from ..errors import UserError
from ..headroom.policy import replay


def replays(record: Mapping[str, Any]) -> bool | None:
    """True when deciding the record again gives the same action, size and hosts; None when
    the record has nothing to replay from."""
    if not record.get("replay"):
        return None
    again = replay(record).record()
    return all(again[k] == record.get(k) for k in ("action", "current", "desired", "add", "remove"))


def row(record: Mapping[str, Any], per_host: int) -> dict[str, Any]:
    inputs = record.get("inputs") or {}
    ready = int(inputs.get("ready", 0))
    return {"at": record.get("at"), "action": record.get("action"), "current": record.get("current"),
            "desired": record.get("desired"), "add": record.get("add", 0), "remove": record.get("remove", []),
            "not_drained": record.get("not_drained", []), "containers": inputs.get("containers"),
            "pending": inputs.get("pending", 0), "capacity": ready * per_host, "ready": ready,
            "booting": len(inputs.get("booting") or []), "silent": len(inputs.get("unknown") or []),
            "replays": replays(record), "reason": record.get("reason", "")}


def run(app: App, plot: str | None = None) -> int:
    spec = app.spec
    if spec.headroom is None:
        raise UserError("headroom: the spec has no headroom section; nothing is recorded without one")
    if plot:
        from ..headroom.plot import check_target
        check_target(plot)
    records = (app.store.read().get("headroom") or {}).get("decisions") or []
    rows = [row(r, spec.headroom.containers_per_host) for r in records]
    lines = [f"{'time (UTC)':<19} {'action':<6} {'hosts':>9} {'ready':>5} {'boot':>4} {'silent':>6} "
             f"{'demand':>6} {'capacity':>8} {'replays':>7}  reason"]
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["at"] or 0))
        replayed = {True: "yes", False: "NO", None: "-"}[r["replays"]]
        lines.append(f"{when:<19} {r['action']:<6} {r['current']:>4}->{r['desired']:<4} {r['ready']:>5} "
                     f"{r['booting']:>4} {r['silent']:>6} {r['containers']:>6} {r['capacity']:>8} "
                     f"{replayed:>7}  {r['reason']}")
        if r["not_drained"]:
            lines.append(f"{'':<19} not drained, left in place: {', '.join(r['not_drained'])}")
    if not rows:
        lines = ["no headroom decision recorded yet"]
    doc = {"cluster": spec.name, "pool": spec.headroom.pool, "decisions": rows}
    if plot:
        from ..headroom.plot import plot as draw
        draw(rows, plot, f"{spec.name}/{spec.headroom.pool}: headroom decisions", spec.headroom.containers_per_host)
        doc["plot"] = str(plot)
        lines.append(f"plot written to {plot}")
    app.ui.result(doc, "\n".join(lines))
    return 0
