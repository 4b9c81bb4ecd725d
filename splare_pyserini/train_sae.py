"""``python -m splare_pyserini.train_sae``: the command of :mod:`splare_pyserini.training.sae`."""
from .training.sae import *  # noqa: F401,F403  (the module's public API, under the command's name)
from .training.sae import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
