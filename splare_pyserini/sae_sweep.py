"""``python -m splare_pyserini.sae_sweep``: the command of :mod:`splare_pyserini.training.sweep`."""
from .training.sweep import *  # noqa: F401,F403  (the module's public API, under the command's name)
from .training.sweep import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
