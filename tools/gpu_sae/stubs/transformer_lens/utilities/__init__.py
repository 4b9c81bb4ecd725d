"""Stand-in: the names HookedRootModule imports (unused by SAE training)."""
Slice = SliceInput = object
def warn_if_mps(*args, **kwargs):
    pass
