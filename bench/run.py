"""Run every benchmark in bench/ (modules named bench_*.py with a `run()` returning a dict
of figures and ratios) and print them side by side; `--json` prints one document."""
from __future__ import annotations

import importlib.util
import json
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
    only = [a for a in argv if not a.startswith("-")]
    results = []
    for path in sorted(HERE.glob("bench_*.py")):
        if only and not any(o in path.stem for o in only):
            continue
        print(f"running {path.stem} ...", file=sys.stderr)
        results.append(load(path).run())
    if "--json" in argv:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r.get("name", "?"))
        if r.get("table"):  # a benchmark's own table (e.g. the headroom trace table)
            print(r["table"])
        for section in ("figures", "ratios"):
            for key, value in r.get(section, {}).items():
                print(f"  {key:<48} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
