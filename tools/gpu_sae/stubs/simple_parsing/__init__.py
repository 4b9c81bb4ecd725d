from . import helpers  # noqa
