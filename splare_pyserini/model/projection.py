"""Projections of hidden states onto a sparse space: a sae-lens SAE, or the vocabulary (the twin).

sae-lens SAEs are loaded with sae-lens's own API; the vocabulary projection exposes the slice of
the SAE interface the encoder uses (``encode``, ``cfg.d_sae``, ``W_enc``). A TopK projection of
either kind also has a :class:`TopKPlan`, the linear form the encoder's sparse path needs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
from torch import nn

from ..errors import ArtifactError
from .artifacts import resolve_path
from .settings import DEFAULT_K

DEFAULT_VOCAB_K = DEFAULT_K  # the shipped TopK SAE's k, so both keep as many terms per token

# hook names sae-lens SAEs record, and the Hugging Face hidden_states index each one is.
_HOOK_PATTERNS = [
    (re.compile(r"blocks\.(\d+)\.hook_resid_post$"), 1),
    (re.compile(r"blocks\.(\d+)\.hook_resid_pre$"), 0),
    (re.compile(r"(?:^|\.)(?:layers|layer|h|block|blocks)\.(\d+)$"), 1),
]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "corrupt or unreadable file"


def load_sae(spec: str, sae_id: str | None = None, device: str = "cpu"):
    """A shipped SAE name, a folder written by ``SAE.save_model``, or a sae-lens release + id; float32."""
    from sae_lens import SAE

    path = Path(resolve_path(spec))
    if path.exists():
        if not path.is_dir():
            raise ArtifactError(f"SAE {spec}: expected a folder saved by sae-lens (cfg.json + weights)")
        missing = [f for f in ("cfg.json", "sae_weights.safetensors") if not (path / f).is_file()]
        if missing:
            raise ArtifactError(f"SAE {spec}: missing {', '.join(missing)}")
        try:
            return SAE.load_from_disk(path, device=device, dtype="float32")
        except Exception as err:  # corrupt json or safetensors: name the folder and the cause
            raise ArtifactError(f"SAE {spec}: cannot load ({type(err).__name__}: {_first_line(err)})") from err
    if sae_id is None:
        raise ArtifactError(f"SAE {spec!r} is not a folder or shipped SAE; for a sae-lens release also give sae_id")
    try:
        return SAE.from_pretrained(spec, sae_id, device=device, dtype="float32")
    except Exception as err:
        raise ArtifactError(f"cannot load sae-lens release {spec!r} id {sae_id!r}: {_first_line(err)}") from err


def recorded_layer(sae) -> int | None:
    """The hidden_states index the SAE was trained on, from its metadata hook name."""
    hook = sae.cfg.metadata.get("hook_name") if sae.cfg.metadata is not None else None
    if not hook:
        return None
    for pattern, offset in _HOOK_PATTERNS:
        match = pattern.search(hook)
        if match:
            return int(match.group(1)) + offset
    return None


def unexplained_variance(states: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """1 - explained variance of ``states`` (tokens x d_in) by an SAE's ``reconstruction`` of them."""
    return (states - reconstruction).pow(2).sum() / (states - states.mean(dim=0)).pow(2).sum().clamp_min(1e-12)


def require_decoder(sae, what: str, name: str | None = None) -> None:
    """Refuse an encoder-only SAE (``metadata.splare_encoder_only``, e.g. a public SAE shipped without
    its decoder, stored with zero decoder weights) where ``what`` reconstructs hidden states."""
    metadata = getattr(sae.cfg, "metadata", None) or {}
    if metadata.get("splare_encoder_only"):
        label = name or metadata.get("splare_source") or "this SAE"
        raise ArtifactError(f"SAE {label} is encoder-only (it ships no decoder): {what} needs a decoder; "
                            "use an SAE trained with its decoder (python -m splare_pyserini.train_sae)")


def recorded_model(sae) -> str | None:
    return sae.cfg.metadata.get("model_name") if sae.cfg.metadata is not None else None


class VocabProjection(nn.Module):
    """The backbone's own vocabulary as the latent space: the vocabulary-SPLADE twin.

    Hidden states are projected on the (tied) input embeddings, ``z = h E^T``, as SPLADE's MLM
    decoder does, and, like the TopK SAE it is compared with, each token keeps only its ``k``
    largest logits: raw logits of a model with no MLM head (MiniLM ships none) are positive for
    nearly every term, so max pooling would make every document hold the whole vocabulary.
    """

    def __init__(self, embeddings: nn.Embedding, k: int = DEFAULT_VOCAB_K, metadata: dict | None = None):
        super().__init__()
        self.embeddings = embeddings  # shared with the backbone, as SPLADE ties its MLM decoder
        vocab_size, hidden = embeddings.weight.shape
        self.k = k
        self.cfg = SimpleNamespace(d_in=hidden, d_sae=vocab_size, k=k, metadata=dict(metadata or {}))

    @property
    def W_enc(self) -> torch.Tensor:
        return self.embeddings.weight.T

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.embeddings.weight.T
        values, index = torch.topk(logits, min(self.k, logits.shape[-1]), dim=-1)
        return torch.zeros_like(logits).scatter(-1, index, torch.relu(values))


class MlmHeadProjection(nn.Module):
    """A SPLADE model's own vocabulary: the logits of its masked-LM head (transform + tied decoder), no
    per-token cut. With the encoder's pooling, w_j = max_t log(1 + relu(logit_tj)): SPLADE's weights.
    This is how published vocabulary-SPLADE models (e.g. SPLADE-tiny) run through the same pipeline."""

    def __init__(self, head: nn.Module, vocab_size: int, hidden: int):
        super().__init__()
        self.head = head
        self.cfg = SimpleNamespace(d_in=hidden, d_sae=vocab_size, metadata={})

    @property
    def W_enc(self) -> torch.Tensor:
        return next(self.head.parameters())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def mlm_head(model: nn.Module) -> MlmHeadProjection:
    """The MLM head of a ``*ForMaskedLM`` model (BERT's ``cls``), as a projection."""
    head = getattr(model, "cls", None)
    if head is None:
        raise ArtifactError(f"{type(model).__name__} has no BERT-style MLM head ('cls'); sae='mlm' needs one")
    return MlmHeadProjection(head, int(model.config.vocab_size), int(model.config.hidden_size))


@dataclass
class TopKPlan:
    """A TopK projection as z = topk(prepare(x) @ weight + bias): what the sparse pooling path needs."""
    prepare: Callable[[torch.Tensor], torch.Tensor]
    weight: torch.Tensor
    bias: torch.Tensor
    k: int


def topk_plan(projection: nn.Module) -> TopKPlan | None:
    """The TopK plan of a sae-lens TopK SAE or the vocabulary projection; None for other SAEs
    (ReLU, JumpReLU, gated...), which keep sae-lens's own dense ``encode``."""
    from sae_lens.saes.topk_sae import TopK

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
    raise ArtifactError(f"SAE {sae} was trained on model {recorded!r}, not {given!r}; "
                        f"use model {recorded} (or a local copy in a folder of that name)")


def model_config(model: str):
    """A backbone's Hugging Face config, read without its weights."""
    from transformers import AutoConfig

    from .fetch import fetched_path

    try:
        return AutoConfig.from_pretrained(fetched_path(model))
    except OSError as err:
        raise ArtifactError(f"cannot load model config {model!r}: {_first_line(err)}") from err


def check_model_config(model: str, d_in: int) -> None:
    """Refuse a backbone whose hidden size differs from the SAE's d_in, before loading weights."""
    config = model_config(model)
    hidden = getattr(config, "hidden_size", None)
    if hidden is not None and hidden != d_in:
        raise ArtifactError(f"model {model!r} has hidden size {hidden} but the SAE expects d_in={d_in}; "
                            "use the SAE trained for this model")
