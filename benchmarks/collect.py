"""Combine the benchmark environments' JSON files into one table and one plot.

In:  a results directory holding ``<env-name>.json`` files written by
     ``benchmarks.run`` (other JSON files there are skipped with a note).
Out: one Markdown table for all environments, printed and written to
     ``<dir>/report.md``, and one PNG, ``<dir>/benchmark.png``.

Usage::

    python -m benchmarks.collect /work/main/results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import report


def load_results(directory: Path) -> list[dict[str, Any]]:
    """Read every runner JSON in ``directory``, in the canonical environment order.

    Files that are not runner output (no ``env_name``/``workloads``) or do not
    parse are skipped with a note on stderr.
    """
    docs = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"collect: skipping {path}: {exc}", file=sys.stderr)
            continue
        if not isinstance(doc, dict) or "env_name" not in doc or "workloads" not in doc:
            print(f"collect: skipping {path}: not a benchmarks.run result", file=sys.stderr)
            continue
        docs.append(doc)
    return report.sort_envs(docs)


def main(argv: list[str] | None = None) -> int:
    """Write ``report.md`` and ``benchmark.png`` for a results directory; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="?", default=Path("results"), help="results directory")
    args = parser.parse_args(argv)
    docs = load_results(args.results)
    if not docs:
        print(f"collect: no benchmark results in {args.results}", file=sys.stderr)
        return 1
    text = "# threadloader benchmarks\n\n" + report.markdown(docs)
    (args.results / "report.md").write_text(text)
    from .plot import plot  # matplotlib only here: the runner never imports it

    png = plot(docs, args.results / "benchmark.png")
    print(text)
    print(f"wrote {args.results / 'report.md'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
