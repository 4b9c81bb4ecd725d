"""The sparse model: a backbone cut at a layer, a projection (sae-lens SAE or the vocabulary),
pooling, quantization, settings, the encoder, and the checkpoint reader and writer. No JVM here.

Re-exported lazily, as the package's top level is, so ``model.settings`` (read by the CLIs' configs and
the Lucene side) imports without torch."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SaeSparseEncoder": "splare_pyserini.model.encoder",
    "load_sparse_model": "splare_pyserini.model.encoder",
    "EncoderSettings": "splare_pyserini.model.settings",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'splare_pyserini.model' has no attribute {name!r}")
