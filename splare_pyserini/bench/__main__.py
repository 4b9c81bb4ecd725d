"""``python -m splare_pyserini.bench``: see the package docstring and ``--help``."""
from . import cli

cli()
