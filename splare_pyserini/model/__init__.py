"""The sparse model: a backbone cut at a layer, a projection (sae-lens SAE or the vocabulary),
pooling, quantization, settings, the encoder, and the checkpoint reader and writer. No JVM here."""
from .encoder import SaeSparseEncoder, load_sparse_model
from .settings import EncoderSettings

__all__ = ["EncoderSettings", "SaeSparseEncoder", "load_sparse_model"]
