"""SAE-latent sparse encoder: one code path for documents, queries and training.

text -> backbone hidden states at one layer -> projection latents per real token -> pooled
weights (see ``sparse``) -> optional top-k -> integer impacts round(w * scale), zeros dropped ->
{"L1234": 87, ...}. The API follows sentence-transformers' ``SparseEncoder``
(``encode_queries`` / ``encode_documents`` / ``decode``): the query side applies the query
settings itself, so the Python API and the CLI encode queries identically.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import ArtifactError
from .artifacts import content_hash
from .backbone import TextBatcher, length_sorted_batches, load_backbone
from .checkpoint import Checkpoint, apply_checkpoint, read_checkpoint
from .projection import (DEFAULT_VOCAB_K, VocabProjection, check_model_config, check_same_model, load_sae, topk_plan,
                         mlm_head, model_config, recorded_layer, recorded_model)
from .quantize import DEFAULT_QUANT_SCALE, quantize
from .settings import DEFAULT_SAE, MLM, VOCAB, VOCABULARY_PROJECTIONS, EncoderSettings
from .sparse import SparseLatentModel

Progress = Callable[[int], None]
log = logging.getLogger(__name__)


def normalize_query(text: str) -> str:
    """One line of text: what topics.tsv holds and what every query path encodes."""
    return " ".join(text.split())


@dataclass
class LoadedModel:
    tokenizer: object
    model: SparseLatentModel
    settings: EncoderSettings  # with the projection, layer and scale resolved
    sae_model_name: str | None  # the backbone the SAE records it was trained on
    checkpoint: Checkpoint | None


def load_sparse_model(settings: EncoderSettings, device: str = "cpu") -> LoadedModel:
    """Any settings: a plain model + SAE, a trained checkpoint (its own projection unless ``sae`` is
    given), or the vocabulary twin (``sae="vocab"``). Mismatches are refused before backbone weights load."""
    ckpt = read_checkpoint(settings.model)
    base_model = ckpt.base_model if ckpt else settings.model
    if ckpt is not None and ckpt.lora and ckpt.provenance.get("base_model_hash"):
        check_adapter_base(ckpt, base_model)
    pooling = settings.pooling or (ckpt.pooling if ckpt else "max")
    if settings.windows > 1 and pooling != "max":
        raise ArtifactError(f"windows: {settings.windows} windows are max-pooled into one vector, which needs "
                            f"max pooling; this model pools by {pooling}")
    spec = settings.sae if settings.sae is not None else (ckpt.projection_spec if ckpt else DEFAULT_SAE)
    bundled = ckpt is not None and spec == ckpt.projection_spec
    if ckpt is not None and not bundled:
        # legitimate (an SAE swapped under a fine-tuned backbone), but easy to fall into: EncoderSettings()
        # names the shipped fine-tuned default, not its base model
        log.warning("checkpoint %s was fine-tuned through %s; encoding its backbone through %s instead (give "
                    "model=%s for the base model)", settings.model, ckpt.projection_spec, spec, base_model)
    sae, recorded, recorded_scale, recorded_saturation, recorded_attention = None, None, None, None, None
    if spec == MLM:
        layer = settings.layer if settings.layer is not None else int(model_config(base_model).num_hidden_layers)
    elif spec == VOCAB:
        layer = settings.layer if settings.layer is not None else (ckpt.layer if ckpt else None)
        if layer is None:
            raise ArtifactError("the vocabulary projection (sae='vocab') needs a layer")
    else:
        sae = load_sae(spec, settings.sae_id, device=device)
        sae_layer = recorded_layer(sae)
        layer = settings.layer if settings.layer is not None else sae_layer
        if layer is None:
            raise ArtifactError(f"SAE {spec} records no layer; give the layer")
        if sae_layer is not None and layer != sae_layer:
            raise ArtifactError(f"layer {layer} differs from the layer the SAE was trained on "
                                f"({sae_layer}, hook {sae.cfg.metadata.get('hook_name')!r})")
        recorded = recorded_model(sae)
        if not bundled:
            check_same_model(base_model, recorded, spec)
        check_model_config(base_model, int(sae.cfg.d_in))
        recorded_scale = sae.cfg.metadata.get("splare_quant_scale")
        recorded_saturation = sae.cfg.metadata.get("splare_saturation")
        recorded_attention = sae.cfg.metadata.get("splare_attention")
    if ckpt is not None and layer != ckpt.layer:
        raise ArtifactError(f"layer {layer} differs from the checkpoint's layer {ckpt.layer}")
    scale = settings.quant_scale
    if scale is None:
        scale = float((ckpt.quant_scale if bundled else None) or recorded_scale or DEFAULT_QUANT_SCALE)
    attention = settings.attention or (ckpt.attention if ckpt else None) or recorded_attention
    tokenizer, backbone = load_backbone(base_model, layer, device=device, dtype=getattr(torch, settings.dtype),
                                        masked_lm=spec == MLM, attention=attention)
    if ckpt is not None:
        apply_checkpoint(backbone.model, ckpt)
    if spec == MLM:
        projection = mlm_head(backbone.model)
    elif spec == VOCAB:
        k = ckpt.vocab_k if bundled else DEFAULT_VOCAB_K
        projection = VocabProjection(backbone.model.get_input_embeddings(), k=k)
    else:
        projection = sae
    saturation = settings.saturation or recorded_saturation or "log1p"
    # a checkpoint trained with pruning encodes with it unless asked otherwise (0: keep all); without
    # one, "all" is recorded as None either way, so equal settings are recorded alike
    topk = resolve_topk(settings.topk, ckpt.topk if ckpt else None)
    query_topk = resolve_topk(settings.query_topk, ckpt.query_topk if ckpt else None)
    token_k = settings.token_k or (ckpt.token_k if ckpt else None)
    plan = topk_plan(projection)
    if plan is not None and token_k == plan.k and not (ckpt and ckpt.token_k):
        token_k = None  # the SAE's own k: recorded alike whether asked for or not (unless it overrides a trained K)
    resolved = settings.replace(sae=spec, layer=layer, quant_scale=scale, pooling=pooling, saturation=saturation,
                                attention=backbone.attention, topk=topk, query_topk=query_topk, token_k=token_k)
    model = SparseLatentModel(backbone, projection, pooling, getattr(torch, settings.sae_dtype), saturation, token_k)
    return LoadedModel(tokenizer, model, resolved, recorded, ckpt)


def resolve_topk(asked: int | None, trained: int | None) -> int | None:
    """The top-k an encoder applies: asked for, else the checkpoint's trained one; 0 (all) stays 0 only
    where it overrides a trained one."""
    k = asked if asked is not None else trained
    return None if k == 0 and not trained else k


def check_adapter_base(ckpt: Checkpoint, base_model: str) -> None:
    """Refuse a LoRA adapter on a base other than the one it was trained on (by content)."""
    from .fetch import fetched_path

    recorded = ckpt.provenance["base_model_hash"]
    found = content_hash(fetched_path(base_model))
    if found != recorded:
        raise ArtifactError(f"{ckpt.path}: its LoRA adapter was trained on {base_model!r} with content hash "
                            f"{recorded}, but {base_model!r} here hashes to {found}")


class WindowMerge:
    """Max-pools the windows of each text as they come out of length-sorted batches (a text's windows
    land in different batches); kept sparse until a text's last window, since most latents are zero."""

    def __init__(self, owner: Sequence[int], dim: int):
        self.owner, self.dim = owner, dim
        self.left = Counter(owner)
        self.parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def add(self, idx: Sequence[int], weights: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """The texts completed by this batch of windows (``idx``: window indices) and their weights."""
        done, rows = [], []
        for i, row in zip(idx, weights):
            text = self.owner[i]
            nonzero = row.nonzero().flatten()
            self.parts.setdefault(text, []).append((nonzero, row[nonzero]))
            self.left[text] -= 1
            if self.left[text] == 0:
                merged = torch.zeros(self.dim, dtype=weights.dtype)
                for ids, values in self.parts.pop(text):
                    merged[ids] = torch.maximum(merged[ids], values)
                done.append(text)
                rows.append(merged)
        return done, torch.stack(rows) if rows else weights[:0]


class SaeSparseEncoder:
    """Encode texts to integer impact vectors over SAE latents (or vocabulary terms).

    ``SaeSparseEncoder()`` is the shipped default; ``SaeSparseEncoder("<name or folder>", topk=400)``
    any model, checkpoint or shipped name with settings changed; ``SaeSparseEncoder(settings)`` a
    full :class:`EncoderSettings`.
    """

    def __init__(self, model: str | EncoderSettings | None = None, *, device: str = "cpu", **settings):
        if isinstance(model, EncoderSettings):
            resolved = model.replace(**settings) if settings else model
        else:
            resolved = EncoderSettings(**({"model": model} if model else {}), **settings)
        loaded = load_sparse_model(resolved, device)
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model.eval()
        self.settings = loaded.settings
        self.sae_model_name = loaded.sae_model_name
        self.checkpoint = loaded.checkpoint
        self.device = device
        self.batcher = TextBatcher.for_backbone(self.tokenizer, self.model.backbone, device)

    @classmethod
    def from_pretrained(cls, model: str, **kwargs) -> "SaeSparseEncoder":
        return cls(model, **kwargs)

    @property
    def dim(self) -> int:
        return self.model.dim

    # --- one batch -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], query: bool = False) -> dict[str, torch.Tensor]:
        return self.batcher(texts, self.settings.side(query)[0])

    def token_lengths(self, texts: Sequence[str], query: bool = False) -> list[int]:
        return self.batcher.lengths(texts, self.settings.side(query)[0])

    def pooled_weights(self, texts: Sequence[str], query: bool = False) -> torch.Tensor:
        """Float pooled latent weights (texts x d_sae) for one batch, before top-k and quantization."""
        return self._pooled(self.tokenize(texts, query))

    @torch.inference_mode()
    def _pooled(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**batch).float().cpu()

    def _quantize(self, weights: torch.Tensor, query: bool) -> list[dict[str, int]]:
        s = self.settings
        return quantize(weights, s.quant_scale, s.side(query)[1], s.prefix)

    # --- many texts -------------------------------------------------------------------------
    def encode_with_stats(self, texts: Sequence[str], query: bool = False, batch_size: int = 32,
                          progress: Progress | None = None) -> tuple[list[dict[str, int]], int]:
        """Vectors in input order (length-sorted batches inside, less padding) and how many texts
        reached the side's max length (were truncated). Documents longer than ``max_length`` are cut
        into up to ``windows`` windows, whose pooled weights are max-pooled into the document's."""
        if query:
            texts = [normalize_query(t) for t in texts]
        max_length = self.settings.side(query)[0]
        windows = 1 if query else self.settings.windows
        items, owner, truncated = self.batcher.encode_windows(texts, max_length, windows)  # tokenized once
        lengths = [len(ids) for ids, _ in items]
        vectors: list[dict[str, int] | None] = [None] * len(texts)
        merge = WindowMerge(owner, self.dim) if len(items) > len(texts) else None
        for idx in length_sorted_batches(lengths, batch_size):
            weights = self._pooled(self.batcher.collate([items[i] for i in idx]))
            if merge is not None:
                idx, weights = merge.add(idx, weights)
                if not idx:
                    continue
            for i, vec in zip(idx, self._quantize(weights, query)):
                vectors[i] = vec
            if progress:
                progress(len(idx))
        return vectors, truncated  # type: ignore[return-value]

    def encode_documents(self, texts: Sequence[str], batch_size: int = 32,
                         progress: Progress | None = None) -> list[dict[str, int]]:
        """Document vectors: ``max_length`` and ``topk``."""
        return self.encode_with_stats(texts, False, batch_size, progress)[0]

    def encode_queries(self, texts: Sequence[str], batch_size: int = 1,
                       progress: Progress | None = None) -> list[dict[str, int]]:
        """Query vectors: ``query_max_length`` and ``query_topk``, whitespace normalized. One query per
        batch by default, as the on-the-fly Pyserini encoder runs, so both give bit-identical vectors."""
        return self.encode_with_stats(texts, True, batch_size, progress)[0]

    def encode(self, texts: Sequence[str], batch_size: int = 32, query: bool = False) -> list[dict[str, int]]:
        return self.encode_with_stats(texts, query, batch_size)[0]

    def latent_labels(self):
        """The ``LatentLabels`` of this model (``latent_labels.json`` stored with it, checked against its
        content hashes; the vocabulary twin's tokens), or None if it has not been labelled."""
        if not hasattr(self, "_labels"):
            from .labels import find_labels, vocab_labels

            self._labels = (vocab_labels(self.tokenizer, self.dim) if self.settings.sae in VOCABULARY_PROJECTIONS
                            else find_labels(self.info()))
        return self._labels

    def decode(self, vector: dict[str, int] | torch.Tensor, top_k: int | None = None,
               labels: bool = False) -> list[tuple]:
        """(latent id, weight) pairs of a vector, largest first: an impact dict or a row of weights.
        With ``labels=True``, (latent id, weight, label) triples: the label from
        :meth:`latent_labels` (the token itself for the vocabulary twin; None when unlabelled)."""
        pairs = self._decode(vector, top_k)
        if not labels:
            return pairs
        names = self.latent_labels()
        return [(i, w, names.label(i) if names is not None else None) for i, w in pairs]

    def _decode(self, vector: dict[str, int] | torch.Tensor, top_k: int | None = None) -> list[tuple[int, float]]:
        if isinstance(vector, torch.Tensor):
            ids = torch.nonzero(vector > 0).flatten().tolist()
            pairs = [(i, float(vector[i])) for i in ids]
        else:
            prefix = self.settings.prefix
            pairs = [(int(term[len(prefix):]), float(w)) for term, w in vector.items() if term.startswith(prefix)]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        return pairs[:top_k] if top_k is not None else pairs

    def info(self) -> dict:
        """The settings recorded with every output, with the model and SAE identified by content."""
        return {**self.settings.to_json(), "d_sae": self.dim, "sae_model_name": self.sae_model_name,
                "model_hash": content_hash(self.settings.model),
                "sae_hash": (self.settings.sae if self.settings.sae in VOCABULARY_PROJECTIONS
                             else content_hash(self.settings.sae))}
