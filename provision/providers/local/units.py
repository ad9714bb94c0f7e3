"""systemd units of a local host's root, read the way systemd would: one mechanism for every unit.

Ignition writes unit files to `etc/systemd/system/` and records `enabled: true` units in a preset
file (`etc/systemd/system-preset/*.preset`), not as `.wants` links. This module reads those,
merges drop-ins, and turns each enabled unit into a `UnitLaunch`: the command lines, environment
(Environment=, EnvironmentFile=), user and restart policy the unit gives, or the reason it cannot
run here (its binary is absent, a condition is false). Pure functions over a directory; nothing
is started here.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# Directories a local host sees from its own root (the rest of the file system is the machine's).
# Keep in sync with launch.BIND_DIRS / OVERLAY_DIRS.
ROOT_DIRS = ("opt", "home", "var", "run", "tmp", "root", "srv")
OVERLAY_DIRS = ("etc",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/bin"
UNIT_DIR = "etc/systemd/system"
VENDOR_UNIT_DIR = "usr/lib/systemd/system"  # the image's units; etc/systemd/system overrides them
PRESET_DIR = "etc/systemd/system-preset"


@dataclass(frozen=True)
class UnitLaunch:
    """What starting one enabled unit means on a local host."""

    name: str
    type: str = "simple"
    exec_start_pre: tuple[tuple[str, ...], ...] = ()
    exec_start: tuple[tuple[str, ...], ...] = ()
    exec_start_post: tuple[tuple[str, ...], ...] = ()
    runtime_directories: tuple[str, ...] = ()
    runtime_directory_mode: str = "0755"
    environment: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    group: str | None = None
    working_directory: str | None = None
    restart: str = "no"
    restart_sec: float = 0.1
    after: tuple[str, ...] = ()
    skip_reason: str | None = None  # set when the unit cannot run here
    ignore_failure_pre: tuple[bool, ...] = field(default=())

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "exec_start_pre": [list(c) for c in self.exec_start_pre],
                "exec_start": [list(c) for c in self.exec_start],
                "exec_start_post": [list(c) for c in self.exec_start_post],
                "runtime_directories": list(self.runtime_directories),
                "runtime_directory_mode": self.runtime_directory_mode, "environment": dict(self.environment),
                "user": self.user, "group": self.group, "working_directory": self.working_directory,
                "restart": self.restart, "restart_sec": self.restart_sec,
                "ignore_failure_pre": list(self.ignore_failure_pre)}


def host_view(root: Path, path: str) -> Path:
    """Where `path`, as a process on the local host sees it, lives on this machine."""
    parts = Path(path).parts
    if len(parts) > 1 and parts[1] in ROOT_DIRS:
        return root / Path(*parts[1:])
    if len(parts) > 1 and parts[1] in OVERLAY_DIRS:
        inside = root / Path(*parts[1:])
        return inside if os.path.lexists(inside) else Path(path)
    return Path(path)


def parse_unit_text(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values in order (systemd allows repeats; an empty value resets)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if value == "":
            current[key] = []
        else:
            current.setdefault(key, []).append(value)
    return sections


def merge_units(base: dict, dropin: dict) -> dict:
    for section, keys in dropin.items():
        target = base.setdefault(section, {})
        for key, values in keys.items():
            if not values:
                target[key] = []
            else:
                target.setdefault(key, []).extend(values)
    return base


def enabled_units(root: Path) -> list[str]:
    """Units the root enables: preset `enable` lines (Ignition) and `.wants` links, in order."""
    names: list[str] = []
    preset_dir = root / PRESET_DIR
    if preset_dir.is_dir():
        for preset in sorted(preset_dir.glob("*.preset")):
            for line in preset.read_text().splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] == "enable":
                    names.extend(w for w in words[1:] if w not in names)
    unit_dir = root / UNIT_DIR
    if unit_dir.is_dir():
        for wants in sorted(unit_dir.glob("*.wants")):
            for link in sorted(wants.iterdir()):
                if link.name not in names:
                    names.append(link.name)
    return names


def masked(root: Path, name: str) -> bool:
    path = root / UNIT_DIR / name
    return path.is_symlink() and os.readlink(path) == "/dev/null"


def read_unit(root: Path, name: str) -> dict | None:
    """The unit with its drop-ins, or None when the root has no such unit file."""
    unit_dir = root / UNIT_DIR
    template = name.split("@", 1)[0] + "@." + name.rsplit(".", 1)[1] if "@" in name else None
    candidates = [d / n for d in (unit_dir, root / VENDOR_UNIT_DIR) for n in (name, template) if n]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        return None
    unit = parse_unit_text(path.read_text())
    for dropin_dir in (unit_dir / f"{name}.d",):
        if dropin_dir.is_dir():
            for conf in sorted(dropin_dir.glob("*.conf")):
                merge_units(unit, parse_unit_text(conf.read_text()))
    return unit


def parse_env_assignments(value: str) -> list[tuple[str, str]]:
    out = []
    for word in shlex.split(value):
        if "=" in word:
            k, v = word.split("=", 1)
            out.append((k, v))
    return out


def parse_env_file(text: str) -> list[tuple[str, str]]:
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        out.append((k.strip(), v))
    return out


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_command(value: str, env: dict[str, str], specifiers: dict[str, str]) -> tuple[tuple[str, ...], bool]:
    """An ExecStart= value as argv: prefixes, %-specifiers and $VAR / ${VAR} as systemd does.

    Returns (argv, ignore_failure). `${VAR}` stays one word; a bare `$VAR` splits on spaces.
    """
    ignore = False
    value = value.strip()
    while value and value[0] in "-@+!:":
        ignore = ignore or value[0] == "-"
        value = value[1:]
    value = re.sub(r"%(.)", lambda m: "%" if m.group(1) == "%" else specifiers.get(m.group(1), m.group(0)), value)
    argv: list[str] = []
    for word in shlex.split(value):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(_VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), word))
    return tuple(argv), ignore


def condition_holds(root: Path, unit: dict) -> str | None:
    """None when every ConditionPathExists= holds, else the failing condition."""
    for cond in unit.get("Unit", {}).get("ConditionPathExists", []):
        negate = cond.startswith("!")
        path = cond.lstrip("!|")
        exists = os.path.lexists(host_view(root, path))
        if exists == negate:
            return f"ConditionPathExists={cond} is false"
    return None


def binary_present(root: Path, argv0: str, env_path: str) -> bool:
    if "/" not in argv0:
        return any(os.access(host_view(root, os.path.join(d, argv0)), os.X_OK)
                   for d in env_path.split(":") if d)
    return os.access(host_view(root, argv0), os.X_OK)


def resolve_unit(root: Path, name: str, hostname: str, machine_id: str = "") -> UnitLaunch:
    """How to start `name` from this root, or why it cannot start here."""
    unit = read_unit(root, name)
    if unit is None:
        return UnitLaunch(name=name, skip_reason="no unit file in the host's root")
    service = unit.get("Service", {})
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    for value in service.get("Environment", []):
        env.update(parse_env_assignments(value))
    for value in service.get("EnvironmentFile", []):
        optional = value.startswith("-")
        path = host_view(root, value.lstrip("-"))
        if path.is_file():
            env.update(parse_env_file(path.read_text()))
        elif not optional:
            return UnitLaunch(name=name, skip_reason=f"EnvironmentFile {value} is missing")
    instance = name.split("@", 1)[1].rsplit(".", 1)[0] if "@" in name else ""
    specifiers = {"H": hostname, "n": name, "N": name.rsplit(".", 1)[0], "p": name.split("@")[0].rsplit(".", 1)[0],
                  "i": instance, "I": instance, "m": machine_id, "t": "/run", "h": "/root"}
    pre, ignore_pre = [], []
    for value in service.get("ExecStartPre", []):
        argv, ignore = expand_command(value, env, specifiers)
        if argv:
            pre.append(argv)
            ignore_pre.append(ignore)
    starts = [expand_command(v, env, specifiers)[0] for v in service.get("ExecStart", [])]
    starts = [a for a in starts if a]
    posts = tuple(a for a in (expand_command(v, env, specifiers)[0] for v in service.get("ExecStartPost", [])) if a)
    kind = service.get("Type", ["simple"])[-1]
    after = tuple(w for v in unit.get("Unit", {}).get("After", []) for w in v.split())
    restart_sec = service.get("RestartSec", ["0.1"])[-1].rstrip("s") or "0.1"
    try:
        restart_sec_value = float(restart_sec)
    except ValueError:
        restart_sec_value = 1.0
    launch = UnitLaunch(
        name=name, type=kind, exec_start_pre=tuple(pre), exec_start=tuple(starts), exec_start_post=posts,
        runtime_directories=tuple(w for v in service.get("RuntimeDirectory", []) for w in v.split()),
        runtime_directory_mode=(service.get("RuntimeDirectoryMode") or ["0755"])[-1],
        environment=tuple(sorted(env.items())), user=(service.get("User") or [None])[-1],
        group=(service.get("Group") or [None])[-1],
        working_directory=(service.get("WorkingDirectory") or [None])[-1],
        restart=(service.get("Restart") or ["no"])[-1], restart_sec=restart_sec_value, after=after,
        ignore_failure_pre=tuple(ignore_pre))
    if not starts:
        return _skip(launch, "no ExecStart=")
    for kind, name_, db in (("User", launch.user, "passwd"), ("Group", launch.group, "group")):
        if name_ and not name_.isdigit() and not _known(host_view(root, f"/etc/{db}"), name_):
            return _skip(launch, f"{kind}={name_} does not exist on the host")
    failing = condition_holds(root, unit)
    if failing:
        return _skip(launch, failing)
    for argv, ignore in zip(pre, ignore_pre):
        if not ignore and not binary_present(root, argv[0], env["PATH"]):
            return _skip(launch, f"binary {argv[0]} is not present")
    for argv in starts:
        if not binary_present(root, argv[0], env["PATH"]):
            return _skip(launch, f"binary {argv[0]} is not present")
    return launch


def _known(db: Path, name: str) -> bool:
    try:
        return any(line.split(":", 1)[0] == name for line in db.read_text().splitlines())
    except OSError:
        return False


def _skip(launch: UnitLaunch, reason: str) -> UnitLaunch:
    from dataclasses import replace
    return replace(launch, skip_reason=reason)


def pulled_in(root: Path, names: list[str]) -> list[str]:
    """`names` and, as systemd starts them too, every unit their Requires= and Wants= name
    (transitively) that the root has a unit file for."""
    out = list(names)
    for name in out:  # grows while it runs: dependencies of dependencies
        unit = read_unit(root, name) or {}
        for key in ("Requires", "Wants"):
            for dep in (w for v in unit.get("Unit", {}).get(key, []) for w in v.split()):
                if dep not in out and dep.endswith(".service") and read_unit(root, dep) is not None:
                    out.append(dep)
    return out


def boot_order(root: Path, hostname: str) -> list[UnitLaunch]:
    """Every enabled, unmasked unit of the root with the units they require or want, ordered by
    After= among themselves."""
    names = [n for n in pulled_in(root, enabled_units(root)) if not masked(root, n) and n.endswith(".service")]
    launches = {n: resolve_unit(root, n, hostname) for n in names}
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in ordered or n in visiting:
            return
        visiting.add(n)
        for dep in launches[n].after:
            if dep in launches:
                visit(dep)
        ordered.append(n)

    for n in names:
        visit(n)
    return [launches[n] for n in ordered]

