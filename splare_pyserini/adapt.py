"""``python -m splare_pyserini.adapt``: the command of :mod:`splare_pyserini.training.adapt`."""
from .training.adapt import *  # noqa: F401,F403  (the module's public API, under the command's name)
from .training.adapt import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
