"""``python -m splare_pyserini.evaluate``: the command of :mod:`splare_pyserini.lucene.evaluate`."""
from .lucene.evaluate import *  # noqa: F401,F403  (the module's public API, under the command's name)
from .lucene.evaluate import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
