"""``python -m splare_pyserini.search``: the command of :mod:`splare_pyserini.lucene.search`."""
from .lucene.search import *  # noqa: F401,F403  (the module's public API, under the command's name)
from .lucene.search import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
