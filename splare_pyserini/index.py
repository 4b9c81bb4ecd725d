"""``python -m splare_pyserini.index``: the command of :mod:`splare_pyserini.lucene.index`."""
from .lucene.index import *  # noqa: F401,F403  (the module's public API, under the command's name)
from .lucene.index import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
