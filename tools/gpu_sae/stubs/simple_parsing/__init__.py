from . import helpers  # noqa: F401
