"""Stand-in: dataclass fields sae-lens's configs declare through simple_parsing."""
import dataclasses
def field(default=None, type=None, **kwargs):
    return dataclasses.field(default=default)
def dict_field(default=None, type=None, **kwargs):
    return dataclasses.field(default_factory=lambda: dict(default or {}))
