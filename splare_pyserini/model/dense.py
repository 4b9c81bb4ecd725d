"""Dense bi-encoder (mean pooling, cosine), e.g. all-MiniLM-L6-v2: a distillation teacher and a baseline.

Models trained with instructions before their texts (multilingual-e5: ``query: `` / ``passage: ``)
record them as sentence-transformers does, in ``config_sentence_transformers.json`` ``prompts``
(``query``, and ``document`` or ``passage``); ``encode_queries`` / ``encode_documents`` prepend them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..config import require
from .artifacts import BASE_MODEL, resolve_path

PROMPTS_FILE = "config_sentence_transformers.json"
COMPUTE_DTYPES = ("float32", "bfloat16")


def recorded_prompts(folder: str | Path) -> tuple[str, str]:
    """(query prefix, document prefix) a model folder records; empty when it records none."""
    path = Path(folder) / PROMPTS_FILE
    prompts = json.loads(path.read_text(encoding="utf-8")).get("prompts") or {} if path.is_file() else {}
    return prompts.get("query", ""), prompts.get("document", prompts.get("passage", ""))


class DenseEncoder:
    def __init__(self, model: str = BASE_MODEL, max_length: int = 256, device: str = "cpu",
                 query_prefix: str | None = None, document_prefix: str | None = None, dtype: str = "float32"):
        from transformers import AutoModel, AutoTokenizer

        from .fetch import PIECED_MODELS, cached_folder, fetch

        path = str(fetch(model)) if model in PIECED_MODELS and cached_folder(model) is None else resolve_path(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().to(device)
        self.max_length = max_length
        self.device = device
        require(dtype in COMPUTE_DTYPES, f"dtype: one of {', '.join(COMPUTE_DTYPES)}, got {dtype!r}")
        self.dtype = dtype  # bfloat16: matmuls under autocast (weights stay float32), for a teacher on a CPU
        recorded = recorded_prompts(path)
        self.query_prefix = recorded[0] if query_prefix is None else query_prefix
        self.document_prefix = recorded[1] if document_prefix is None else document_prefix

    def token_lengths(self, texts: Sequence[str], prefix: str = "") -> list[int]:
        texts = [prefix + t for t in texts]
        return [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 32, prefix: str = "") -> torch.Tensor:
        """L2-normalized mean-pooled embeddings, (len(texts), hidden), of ``prefix + text``.

        Batches are cut from the texts sorted by length (as sentence-transformers does), so a short text is
        not padded to the longest one of its batch."""
        out = torch.zeros(len(texts), self.model.config.hidden_size)
        if not texts:
            return out
        encoded = self.tokenizer([prefix + t for t in texts], truncation=True, max_length=self.max_length)
        order = sorted(range(len(texts)), key=lambda i: -len(encoded["input_ids"][i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = self.tokenizer.pad({name: [values[i] for i in rows] for name, values in encoded.items()},
                                       return_tensors="pt").to(self.device)
            with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                                enabled=self.dtype == "bfloat16"):
                hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[rows] = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1).cpu()
        return out

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        return self.encode(texts, batch_size, self.query_prefix)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        return self.encode(texts, batch_size, self.document_prefix)
