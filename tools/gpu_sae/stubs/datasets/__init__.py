"""Stand-in: sae-lens's config imports these names; SAE training from in-memory states never uses them."""
class Dataset: pass
class DatasetDict(dict): pass
class IterableDataset: pass
class IterableDatasetDict(dict): pass
def load_dataset(*a, **k): raise RuntimeError("datasets is not available here")
