"""Run every benchmark in bench/ (modules named bench_*.py with a `run()` returning a dict
of figures and ratios) and print them side by side in one table; the same figures are written
as JSON to bench/results.json (or $BENCH_JSON) with the machine they ran on. `--json` prints
the document instead. Name parts as arguments to run only those (`bench/run.py p3`); their
results replace theirs in the JSON and the others' stay."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE.parent))
    for noisy in ("werkzeug", "moto", "botocore", "pyinfra"):  # server logs stay out of the table
        logging.getLogger(noisy).setLevel(logging.ERROR)
    only = [a for a in argv if not a.startswith("-")]
    results = []
    for path in selected(sorted(HERE.glob("bench_*.py")), only):
        print(f"running {path.stem} ...", file=sys.stderr)
        results.append(load(path).run())
    if "--json" in argv:
        print(json.dumps(results, indent=2))
        return 0
    out = Path(os.environ.get("BENCH_JSON", HERE / "results.json"))
    ran_on = machine()
    for r in results:
        r["machine"] = ran_on
    if only:  # a part run: the other benchmarks' figures stay as their own run wrote them
        results = merged(out, results)
    out.write_text(json.dumps({"machine": ran_on, "results": results}, indent=2) + "\n")
    print(table(results))
    print(f"machine: {machine()}; JSON written to {out}", file=sys.stderr)
    return 0


def selected(paths: list[Path], only: list[str]) -> list[Path]:
    """The benchmarks named: a name that is a benchmark's whole name (with or without `bench_`)
    picks that one (`headroom` is not also `headroom_traces`); any other picks those containing it."""
    if not only:
        return paths
    chosen: set[Path] = set()
    for name in only:
        exact = [p for p in paths if name in (p.stem, p.stem.removeprefix("bench_"))]
        chosen.update(exact or [p for p in paths if name in p.stem])
    return [p for p in paths if p in chosen]


def merged(path: Path, fresh: list[dict]) -> list[dict]:
    """The results already in `path` with those of `fresh` put in their place (by name), each
    keeping the machine line of the run that measured it."""
    try:
        kept = json.loads(path.read_text()).get("results") or []
    except (OSError, ValueError):
        kept = []
    names = {r.get("name") for r in fresh}
    return [r for r in kept if r.get("name") not in names] + fresh


def machine() -> str:
    """What the figures were measured on (they mean little without it)."""
    cpus = os.cpu_count()
    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{platform.system()} {platform.release()}, {cpus} CPUs ({model}), Python {platform.python_version()}, load {load}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def table(results: list[dict]) -> str:
    """One section per benchmark: its figures, then its ratios, in aligned columns."""
    width = max([len(k) for r in results for s in ("figures", "ratios") for k in r.get(s, {})] + [20])
    lines = []
    for r in results:
        lines.append(r.get("name", "?"))
        if r.get("table"):  # a benchmark's own table (e.g. the headroom trace table)
            lines.append(r["table"])
        for section in ("figures", "ratios"):
            items = r.get(section, {})
            if items:
                lines.append(f"  {section}")
            for key, value in items.items():
                lines.append(f"    {key:<{width}}  {value}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
