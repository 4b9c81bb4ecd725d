"""SAE-latent learned sparse retrieval (SPLARE) as a Pyserini/Anserini plugin.

The main classes are re-exported lazily, so ``import splare_pyserini`` loads neither torch nor a JVM.
"""
from __future__ import annotations

import importlib
import os
import sys

# Large tensors on transparent huge pages (PyTorch's own switch, read once, at torch's first
# allocation, hence here, before torch is imported): encoding allocates the same large blocks batch
# after batch, and on 4 KiB pages each one is page-faulted and zeroed again page by page. Same values,
# fewer faults; THP_MEM_ALLOC_ENABLE=0 in the environment keeps PyTorch's default.
if "torch" not in sys.modules:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"

_EXPORTS = {
    "SaeSparseEncoder": "splare_pyserini.model.encoder",
    "EncoderSettings": "splare_pyserini.model.settings",
    "SaeQueryEncoder": "splare_pyserini.lucene.search",
    "SaeDocumentEncoder": "splare_pyserini.lucene.search",
    "open_searcher": "splare_pyserini.lucene.search",
    "HybridSearcher": "splare_pyserini.lucene.hybrid",
    "open_bm25_searcher": "splare_pyserini.lucene.search",
    "search_topics": "splare_pyserini.lucene.search",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'splare_pyserini' has no attribute {name!r}")
