"""`python -m bench [name ...] [--option ...]`: run every benchmark module in bench/ (or the named ones).

Arguments from the first one starting with `-` on go to the named benchmark(s), e.g.
`python -m bench forecast --data DIR --windows 2`; options without a benchmark name are refused."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(benchmark names, options for them): names are the arguments before the first `-...` one."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            return argv[:i], argv[i:]
    return list(argv), []


def main(argv: list[str]) -> int:
    names, options = split_args(argv)
    if options and not names:
        print(
            f"options {' '.join(options)} need a benchmark name: python -m bench NAME [--option ...]",
            file=sys.stderr,
        )
        return 2
    names = names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}",
            file=sys.stderr,
        )
        return 2
    if not names:
        print("no benchmarks yet", file=sys.stderr)
        return 0
    worst = 0
    for name in names:
        print(f"== bench/{name}.py", flush=True)
        module = importlib.import_module(f"bench.{name}")
        code = module.main(list(options))
        worst = max(worst, code or 0)
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
