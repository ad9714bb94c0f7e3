"""Pictures of headroom over time: demand (containers used and pending), capacity (ready
container slots), hosts (in the pool, wanted) and each add / remove, from decision history
rows (`provision headroom history SPEC --plot FILE`) or a simulated trace (the bench).

PNG or SVG by the file's suffix; the same rows give the same bytes (no dates or random ids in
the file)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..errors import UserError

FORMATS = {".png": "png", ".svg": "svg"}


def check_target(path: str | Path, argument: str = "--plot") -> str:
    """The format for `path`, or a UserError naming `argument`."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(f"{argument}: {path} must end in .png or .svg")
    return fmt


def plot(rows: Sequence[Mapping], path: str | Path, title: str, per_host: int, argument: str = "--plot") -> None:
    """Draw `rows` (each: at seconds, containers, pending, capacity, current, desired, action)
    to `path`."""
    fmt = check_target(path, argument)
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib import rcParams
    rcParams["svg.hashsalt"] = "provision-headroom"
    if not rows:
        raise UserError("headroom: no decision recorded yet, nothing to plot")
    t0 = rows[0]["at"]
    minutes = [(r["at"] - t0) / 60 for r in rows]
    fig, (load_ax, host_ax) = pyplot.subplots(2, 1, sharex=True, figsize=(9, 5.5), dpi=100)
    try:
        load_ax.step(minutes, [r["containers"] for r in rows], where="post", label="demand (containers)",
                     color="tab:red")
        load_ax.step(minutes, [r["capacity"] for r in rows], where="post", label=f"capacity (ready x {per_host})",
                     color="tab:blue")
        load_ax.set_ylabel("containers")
        load_ax.legend(loc="upper left", fontsize=8)
        load_ax.set_title(title, fontsize=10)
        host_ax.step(minutes, [r["current"] for r in rows], where="post", label="hosts in the pool", color="black")
        host_ax.step(minutes, [r["desired"] for r in rows], where="post", label="hosts wanted", color="tab:gray",
                     linestyle="--")
        for action, marker, colour in (("add", "^", "tab:green"), ("remove", "v", "tab:orange")):
            at = [(m, r["desired"]) for m, r in zip(minutes, rows) if r["action"] == action]
            if at:
                host_ax.scatter([m for m, _ in at], [h for _, h in at], marker=marker, color=colour, label=action,
                                zorder=3)
        host_ax.set_ylabel("hosts")
        host_ax.set_xlabel("minutes")
        host_ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        try:
            fig.savefig(str(path), format=fmt, metadata=metadata)
        except OSError as err:
            raise UserError(f"{argument}: cannot write {path}: {err.strerror or err}") from None
    finally:
        pyplot.close(fig)
