"""Stand-in: sae-lens imports HookedRootModule from here; the real module pulls in the whole of transformer_lens."""
from transformer_lens.HookedRootModule import HookedRootModule  # noqa: F401
