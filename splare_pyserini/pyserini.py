"""``python -m splare_pyserini.pyserini <module> ...``: see :mod:`splare_pyserini.lucene.passthrough`."""
from .lucene.passthrough import main, run_module  # noqa: F401

if __name__ == "__main__":
    main()
