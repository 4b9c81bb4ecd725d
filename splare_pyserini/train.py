"""``python -m splare_pyserini.train``: the command of :mod:`splare_pyserini.training.trainer`."""
from .training.trainer import *  # noqa: F401,F403  (the module's public API, under the command's name)
from .training.trainer import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
