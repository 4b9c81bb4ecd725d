"""A trained encoder -> a checkpoint folder, through the checkpoint module's only writer.

Everything the reader honours is written from the model itself: layer, pooling, the twin's k, the
top-k pruning training applied, a quantization scale calibrated on the trained weights, and the
SAE: a frozen *shipped* SAE is referenced by name (the checkpoint does not store it twice), any
other frozen SAE is saved in ``sae/`` in the dtype it came in, and a trained one in fp16 unless
``fp16=False``.
"""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from ..io import atomic_dir
from ..model.backbone import collect_activations
from ..model.artifacts import content_hash, resolve_path, shipped, shipped_names
from ..model.checkpoint import Checkpoint, write_checkpoint
from ..model.encoder import SaeSparseEncoder
from ..model.projection import DEFAULT_VOCAB_K
from ..model.quantize import CALIBRATION_TEXTS, CALIBRATION_TOKENS, calibrate_quant_scale
from ..model.settings import VOCAB

TRAINING_LOG = "training_log.jsonl"


def shipped_sae_reference(encoder: SaeSparseEncoder, sae_trained: bool) -> str | None:
    """The name of the shipped SAE the encoder's frozen SAE is, by content: given by name, or a folder
    holding the same files (e.g. the run that became the shipped copy), so the checkpoint names it
    instead of storing it twice."""
    spec = encoder.settings.sae
    if sae_trained or spec in (None, VOCAB):
        return None
    if shipped(spec) is not None:
        return spec
    found = content_hash(spec)
    return next((name for name in shipped_names() if (shipped(name) / "cfg.json").is_file()
                 and content_hash(name) == found), None)


def stored_dtype(spec: str) -> torch.dtype:
    """The dtype of a saved SAE's weights (float32 for anything else): a frozen SAE is stored as it
    came, so the checkpoint computes exactly what training saw."""
    cfg = Path(resolve_path(spec)) / "cfg.json"
    if cfg.is_file():
        name = json.loads(cfg.read_text(encoding="utf-8")).get("dtype", "float32")
        if name in ("float16", "bfloat16", "float32"):
            return getattr(torch, name)
    return torch.float32


@torch.no_grad()
def export_checkpoint(folder: str | Path, encoder: SaeSparseEncoder, names: list[str], base_model: str,
                      calibration_texts: Sequence[str], *, sae_trained: bool = False, fp16: bool = True,
                      provenance: dict | None = None, log_records: Sequence[dict] = (),
                      lora: dict | None = None) -> Path:
    """Write ``folder`` atomically: ``splare.json``, the ``names`` backbone parameters, the SAE (or a
    reference to a shipped one) and ``training_log.jsonl``. ``lora``: the adapter's description when
    ``names`` are LoRA matrices (an adapter checkpoint). Returns ``folder``."""
    folder = Path(folder)
    model = encoder.model.eval()
    settings = encoder.settings
    texts = list(calibration_texts)[:CALIBRATION_TEXTS]
    acts = collect_activations(encoder.batcher, model.backbone, texts, settings.max_length,
                               max_tokens=CALIBRATION_TOKENS)
    projection = VOCAB if settings.sae == VOCAB else "sae"
    reference = shipped_sae_reference(encoder, sae_trained)
    backbone = model.backbone
    attention = backbone.attention if backbone.native_attention == "causal" else None
    checkpoint = Checkpoint(folder, base_model, int(settings.layer), projection,
                            calibrate_quant_scale(model.projection, acts, saturation=model.saturation), settings.pooling,
                            getattr(model.projection, "k", DEFAULT_VOCAB_K) if projection == VOCAB else DEFAULT_VOCAB_K,
                            reference, attention=attention, provenance=dict(provenance or {}), lora=lora,
                            topk=settings.topk or None, query_topk=settings.query_topk or None,
                            token_k=settings.token_k)
    sae = None
    if projection == "sae" and reference is None:
        dtype = (torch.float16 if fp16 else torch.float32) if sae_trained else stored_dtype(settings.sae)
        sae = copy.deepcopy(model.projection).to(dtype)
    with atomic_dir(folder) as tmp:
        write_checkpoint(tmp, replace(checkpoint, path=tmp), model.backbone.model, names, fp16, sae=sae)
        (tmp / TRAINING_LOG).write_text("".join(json.dumps(r) + "\n" for r in log_records), encoding="utf-8")
    return folder
