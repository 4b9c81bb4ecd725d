"""splare-pyserini: SAE-latent learned sparse retrieval on Pyserini/Anserini."""
__version__ = "0.1.0"
