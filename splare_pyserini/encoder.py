"""SAE-latent sparse encoder: one code path for documents, queries and training.

text -> backbone hidden states at one layer -> SAE latents z per token ->
w = max_t log(1 + relu(z_t)) over real tokens (SPLADE pooling; ``sum`` optional)
-> optional top-k -> integer impacts round(w * scale), zeros dropped ->
{"L1234": 87, ...}.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from . import __version__
from .backbone import load_backbone
from .errors import ArtifactError
from .sae import DEFAULT_SAE, PACKAGED_MODELS, load_sae, recorded_layer, recorded_model

# The shipped default: MiniLM fine-tuned for retrieval through the frozen shipped SAE (a checkpoint).
DEFAULT_ENCODER_MODEL = str(PACKAGED_MODELS / "splare-minilm-scifact")
DEFAULT_QUANT_SCALE = 100.0  # SPLADE's choice, used when the SAE records no splare_quant_scale
TOKEN_CHUNK = 8192  # tokens per SAE call: bounds the (tokens x d_sae) latent matrix
TOPK_CHUNK = 1024  # tokens per matmul in the sparse TopK path (measured: 1024 beats 256 and 4096)
MAX_CHARS_PER_TOKEN = 50  # texts are cut to max_length * this many characters before tokenizing


@dataclass(frozen=True)
class EncoderSettings:
    """Everything that determines the integer vectors; recorded next to every output."""
    model: str = DEFAULT_ENCODER_MODEL
    sae: str | None = None  # None: the checkpoint's own SAE, else the shipped default SAE
    sae_id: str | None = None
    layer: int | None = None
    pooling: str = "max"
    topk: int | None = None
    quant_scale: float | None = None  # None: the SAE's recorded splare_quant_scale, else 100
    max_length: int = 256
    prefix: str = "L"
    dtype: str = "float32"
    sae_dtype: str = "float32"  # SAE matmul precision at inference; bfloat16 is faster on CPUs with AVX512-BF16

    def fingerprint(self) -> dict:
        """The settings that must agree between query and document vectors."""
        return {k: v for k, v in asdict(self).items() if k not in ("max_length", "dtype", "sae_dtype", "topk")}

    def to_json(self) -> dict:
        return {**asdict(self), "splare_pyserini_version": __version__}


def quantize(weights: torch.Tensor, scale: float, topk: int | None = None, prefix: str = "L") -> list[dict[str, int]]:
    """Rows of float weights -> {prefix+latent id: round(w * scale)} with zeros dropped."""
    if topk is not None and topk < weights.shape[1]:
        values, idx = torch.topk(weights, topk, dim=1)
        weights = torch.zeros_like(weights).scatter_(1, idx, values)
    impacts = torch.round(weights * scale).to(torch.int64)
    vectors = []
    for row in impacts:
        ids = torch.nonzero(row > 0).flatten().tolist()
        vals = row[ids].tolist()
        vectors.append({f"{prefix}{i}": int(v) for i, v in zip(ids, vals)})
    return vectors


class SparseLatentModel(nn.Module):
    """Differentiable part: token ids -> pooled non-negative latent weights (B, d_sae)."""

    def __init__(self, backbone: nn.Module, sae: nn.Module, pooling: str = "max",
                 sae_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.sae_dtype = sae_dtype  # matmul precision of the inference TopK path only
        if pooling not in ("max", "sum"):
            raise ArtifactError(f"--pooling must be 'max' or 'sum', got {pooling!r}")
        self.backbone = backbone
        self.sae = sae
        self.pooling = pooling

    @property
    def dim(self) -> int:
        return int(self.sae.cfg.d_sae)

    def token_latents(self, hidden: torch.Tensor) -> torch.Tensor:
        """SAE latents z for a (N, d_in) matrix of token states, in chunks."""
        sae_dtype = self.sae.W_enc.dtype  # SAE or vocabulary projection
        parts = [self.sae.encode(chunk.to(sae_dtype)) for chunk in hidden.split(TOKEN_CHUNK)]
        return torch.cat(parts) if parts else hidden.new_zeros((0, self.dim))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids, attention_mask)
        mask = token_mask.bool()
        tokens = hidden[mask]  # only real tokens reach the SAE
        lengths = mask.sum(dim=1).tolist()
        plan = topk_plan(self.sae)
        if plan is not None:
            return self.pool_topk(plan, tokens, lengths)
        return self.pool_dense(tokens, lengths)

    def pool_dense(self, tokens: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Pooled weights from sae-lens's own ``encode``: any SAE architecture."""
        latents = self.token_latents(tokens)
        pooled = []
        for segment in latents.split(lengths):
            if segment.shape[0] == 0:
                pooled.append(latents.new_zeros(self.dim))
            elif self.pooling == "max":
                # log1p and relu are monotone: max_t log(1 + relu(z_t)) = log(1 + relu(max_t z_t)),
                # so the transform runs on d_sae values per text instead of tokens x d_sae.
                pooled.append(torch.log1p(torch.relu(segment.amax(dim=0))))
            else:
                pooled.append(torch.log1p(torch.relu(segment)).sum(dim=0))
        return torch.stack(pooled)

    def pool_topk(self, plan: "TopKPlan", tokens: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Pooled weights of a TopK projection without the (tokens x d_sae) latent matrix: each
        token's k winners are scattered straight into the (texts x d_sae) pool (amax, or sum of
        log1p). Equal to the dense path (tested, values and gradients); dense latents made the
        SAE cost 2.1x the backbone's forward pass on SciFact, this path 1.4x in float32
        (``--sae-dtype bfloat16``: ~1.2x on CPUs with AVX512-BF16). Under autograd the winners
        are picked without gradient and their values recomputed from the k gathered columns,
        which is all TopK's gradient reaches: training no longer builds or back-propagates
        through the dense latents either (30,522 columns for the vocabulary twin)."""
        d = self.dim
        train = torch.is_grad_enabled()
        segment = torch.repeat_interleave(torch.arange(len(lengths), device=tokens.device),
                                          torch.tensor(lengths, device=tokens.device))
        pooled = tokens.new_zeros(len(lengths) * d, dtype=torch.float32)
        dtype = torch.float32 if train else self.sae_dtype
        weight, bias = plan.weight.to(dtype), plan.bias.to(dtype)
        for start in range(0, tokens.shape[0], TOPK_CHUNK):
            x = plan.prepare(tokens[start:start + TOPK_CHUNK].to(plan.weight.dtype)).to(dtype)
            with torch.no_grad():
                values, index = torch.addmm(bias, x, weight).topk(plan.k, dim=1, sorted=False)
            if train:  # the same k values, now differentiable in x (and in the projection)
                columns = weight.T[index]  # (tokens, k, d_in)
                values = torch.einsum("nd,nkd->nk", x, columns) + bias[index]
            values = torch.relu(values.float())
            flat = (segment[start:start + TOPK_CHUNK, None] * d + index).flatten()
            if self.pooling == "max":
                pooled = pooled.scatter_reduce(0, flat, values.flatten(), "amax")
            else:
                pooled = pooled.scatter_add(0, flat, torch.log1p(values).flatten())
        pooled = pooled.view(len(lengths), d)
        return torch.log1p(pooled) if self.pooling == "max" else pooled


@dataclass
class TopKPlan:
    """A TopK projection as z = topk(prepare(x) @ weight + bias): what ``pool_topk`` needs."""
    prepare: Callable[[torch.Tensor], torch.Tensor]
    weight: torch.Tensor
    bias: torch.Tensor
    k: int


def topk_plan(projection: nn.Module) -> TopKPlan | None:
    """The TopK plan of a sae-lens TopK SAE or the vocabulary projection; None for other SAEs
    (ReLU, JumpReLU, gated...), which keep sae-lens's own dense ``encode``."""
    from sae_lens.saes.topk_sae import TopK

    from .vocab import VocabProjection

    if isinstance(projection, VocabProjection):
        weight = projection.W_enc
        return TopKPlan(lambda x: x, weight, weight.new_zeros(weight.shape[1]), min(projection.k, weight.shape[1]))
    activation = getattr(projection, "activation_fn", None)
    if not isinstance(activation, TopK) or getattr(activation, "use_sparse_activations", False):
        return None
    weight, bias = projection.W_enc, projection.b_enc
    if getattr(projection.cfg, "rescale_acts_by_decoder_norm", False):
        norms = projection.W_dec.norm(dim=-1)  # sae-lens scales pre-activations by decoder row norms
        weight, bias = weight * norms, bias * norms
    return TopKPlan(projection.process_sae_in, weight, bias, activation.k)


def check_same_model(given: str, recorded: str | None, sae: str) -> None:
    """Refuse an SAE recorded for another backbone (same hub id, or same folder name, passes)."""
    if not recorded:
        return
    names = [name.rstrip("/").lower() for name in (given, recorded)]
    if names[0] == names[1] or names[0].rsplit("/", 1)[-1] == names[1].rsplit("/", 1)[-1]:
        return
    raise ArtifactError(f"--sae {sae} was trained on model {recorded!r}, not {given!r}; "
                        f"pass --model {recorded} (or a local copy in a folder of that name)")


def check_model_config(model: str, d_in: int) -> None:
    """Refuse a backbone whose hidden size differs from the SAE's d_in, before loading weights."""
    from transformers import AutoConfig

    from .backbone import resolve_model_path

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(model))
    except OSError as err:
        raise ArtifactError(f"cannot load model config {model!r}: {str(err).splitlines()[0]}") from None
    hidden = getattr(config, "hidden_size", None)
    if hidden is not None and hidden != d_in:
        raise ArtifactError(f"model {model!r} has hidden size {hidden} but the SAE expects d_in={d_in}; "
                            "use the SAE trained for this model")


def load_sparse_model(settings: EncoderSettings, device: str = "cpu"):
    """(tokenizer, SparseLatentModel, resolved settings, SAE's recorded model) for any settings:
    a plain model + SAE, a trained checkpoint (its own SAE unless --sae is given), or the
    vocabulary twin (``--sae vocab``). Mismatches are refused before backbone weights load."""
    from .checkpoint import apply_checkpoint, read_checkpoint
    from .vocab import VOCAB, VocabProjection

    ckpt = read_checkpoint(settings.model)
    base_model = ckpt.base_model if ckpt else settings.model
    spec = settings.sae if settings.sae is not None else (ckpt.projection_spec if ckpt else DEFAULT_SAE)
    bundled = ckpt is not None and spec == ckpt.projection_spec
    sae, recorded = None, None
    if spec == VOCAB:
        layer = settings.layer if settings.layer is not None else (ckpt.layer if ckpt else None)
        if layer is None:
            raise ArtifactError("--sae vocab needs --layer")
        recorded_scale = None
    else:
        sae = load_sae(spec, settings.sae_id, device=device)
        sae_layer = recorded_layer(sae)
        layer = settings.layer if settings.layer is not None else sae_layer
        if layer is None:
            raise ArtifactError(f"--sae {spec} records no layer; give --layer")
        if sae_layer is not None and layer != sae_layer:
            raise ArtifactError(f"--layer {layer} differs from the layer the SAE was trained on "
                                f"({sae_layer}, hook {sae.cfg.metadata.get('hook_name')!r})")
        recorded = recorded_model(sae)
        if not bundled:
            check_same_model(base_model, recorded, spec)
        check_model_config(base_model, int(sae.cfg.d_in))
        recorded_scale = sae.cfg.metadata.get("splare_quant_scale")
    if ckpt is not None and layer != ckpt.layer:
        raise ArtifactError(f"--layer {layer} differs from the checkpoint's layer {ckpt.layer}")
    scale = settings.quant_scale
    if scale is None:
        scale = float((ckpt.quant_scale if bundled else None) or recorded_scale or DEFAULT_QUANT_SCALE)
    tokenizer, backbone = load_backbone(base_model, layer, device=device, dtype=getattr(torch, settings.dtype))
    if ckpt is not None:
        apply_checkpoint(backbone.model, ckpt)
    projection = VocabProjection(backbone.model.get_input_embeddings()) if spec == VOCAB else sae
    resolved = EncoderSettings(**{**asdict(settings), "sae": spec, "layer": layer, "quant_scale": scale})
    return tokenizer, SparseLatentModel(backbone, projection, settings.pooling,
                                            getattr(torch, settings.sae_dtype)), resolved, recorded


class SaeSparseEncoder:
    """Encode texts to integer impact vectors over SAE latents (or vocabulary terms)."""

    def __init__(self, settings: EncoderSettings | None = None, device: str = "cpu", **overrides):
        settings = settings or EncoderSettings()
        if overrides:
            settings = EncoderSettings(**{**asdict(settings), **overrides})
        self.tokenizer, model, self.settings, self.sae_model_name = load_sparse_model(settings, device)
        self.model = model.eval()
        self.device = device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        cap = self.settings.max_length * MAX_CHARS_PER_TOKEN
        batch = self.tokenizer([t[:cap] for t in texts], padding=True, truncation=True,
                               max_length=self.settings.max_length, return_tensors="pt",
                               return_special_tokens_mask=True)
        token_mask = batch["attention_mask"].bool() & ~batch["special_tokens_mask"].bool()
        return {"input_ids": batch["input_ids"].to(self.device),
                "attention_mask": batch["attention_mask"].to(self.device),
                "token_mask": token_mask.to(self.device)}

    @torch.inference_mode()
    def weights(self, texts: Sequence[str]) -> torch.Tensor:
        """Float pooled weights (B, d_sae) for one batch."""
        return self.model(**self.tokenize(texts)).float().cpu()

    def encode(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """Integer impact vectors for one batch, in input order."""
        s = self.settings
        return quantize(self.weights(texts), s.quant_scale, s.topk, s.prefix)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        cap = self.settings.max_length * MAX_CHARS_PER_TOKEN
        enc = self.tokenizer([t[:cap] for t in texts], truncation=True, max_length=self.settings.max_length,
                             add_special_tokens=True)
        return [len(ids) for ids in enc["input_ids"]]

    def encode_sorted(self, texts: Sequence[str], batch_size: int,
                      progress: Callable[[int], None] | None = None) -> tuple[list[dict[str, int]], int]:
        """Encode with length-sorted batches (less padding); returns vectors in input order
        and how many texts reached --max-length (were truncated)."""
        lengths = self.token_lengths(texts)
        order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
        vectors: list[dict[str, int] | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            for i, vec in zip(idx, self.encode([texts[i] for i in idx])):
                vectors[i] = vec
            if progress:
                progress(len(idx))
        truncated = sum(1 for n in lengths if n >= self.settings.max_length)
        return vectors, truncated  # type: ignore[return-value]

    def with_options(self, **changes) -> "SaeSparseEncoder":
        """A view sharing the loaded model, with other topk/max_length (e.g. for queries)."""
        view = object.__new__(SaeSparseEncoder)
        view.__dict__.update(self.__dict__)
        view.settings = EncoderSettings(**{**asdict(self.settings), **changes})
        return view

    def info(self) -> dict:
        return {**self.settings.to_json(), "d_sae": self.model.dim, "sae_model_name": self.sae_model_name}
