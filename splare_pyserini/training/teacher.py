"""A dense teacher whose embeddings of training texts are computed once and kept on disk.

The teacher (e.g. all-mpnet-base-v2) is slower than the student on a CPU; every text it embeds is
stored, keyed by the text's hash, in ``part-NNNNN.pt`` files written atomically, so a resumed run,
a rerun, and every leave-one-out model trained on the same texts reuse what was computed. A run that
misses a text first reads the parts written since it started: two models trained at once on one cache
(SPLARE and its twin) embed each text once, not once each.
Scores are cosines (its embeddings are L2-normalized), divided by the teacher temperature in the loss.
A teacher trained with instructions (multilingual-e5: ``query: `` / ``passage: ``) embeds queries and
documents with its own prefixes, as it was trained to; the cache key is the prefixed text, so a teacher
without prefixes (all-mpnet-base-v2) keeps the keys it always had.
"""
from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Sequence

import torch

from ..io import atomic_write, remove_stale_temps
from ..model.artifacts import content_hash

FLUSH_EVERY = 256  # new embeddings per part file


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class CachedTeacher:
    def __init__(self, encoder, folder: str | Path, batch_size: int = 32):
        self.encoder = encoder
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.folder)
        self.batch_size = batch_size
        self.rows: dict[str, torch.Tensor] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.parts: list[Path] = []
        self.load_new_parts()
        self.computed = 0

    def load_new_parts(self) -> None:
        """Read the part files not read yet: those of an earlier run, or of a run sharing the cache now."""
        known = set(self.parts)
        for part in sorted(self.folder.glob("part-*.pt")):
            if part not in known:
                saved = torch.load(part)
                self.rows.update(zip(saved["keys"], saved["embeddings"].float()))
                self.parts.append(part)

    @classmethod
    def for_model(cls, model: str, root: str | Path, max_length: int = 256,
                  dtype: str = "float32") -> "CachedTeacher":
        """The teacher ``model`` with its cache under ``root/teacher-<model content hash>`` (``-bfloat16``
        appended for a bfloat16 teacher: its embeddings differ in the last digits, so the caches never mix)."""
        from ..model.dense import DenseEncoder

        suffix = "" if dtype == "float32" else f"-{dtype}"
        return cls(DenseEncoder(model, max_length=max_length, dtype=dtype),
                   Path(root) / f"teacher-{content_hash(model)}{suffix}")

    def embed(self, texts: Sequence[str], prefix: str = "") -> torch.Tensor:
        """Embeddings of ``prefix + text`` (the teacher's query or document instruction, or none)."""
        texts = [prefix + t for t in texts]
        keys = [_key(t) for t in texts]
        missing = self._missing(keys, texts)
        if missing:  # another run sharing the cache (the twin trained beside SPLARE) may have embedded them
            self.load_new_parts()
            missing = self._missing(keys, texts)
        if missing:
            # rounded to fp16 at once, as stored: a resumed run sees exactly the values the first run saw
            new = self.encoder.encode([t for _, t in missing], self.batch_size).half().float()
            self.pending.update(zip((k for k, _ in missing), new))
            self.computed += len(missing)
            if len(self.pending) >= FLUSH_EVERY:
                self.flush()
        return torch.stack([self.rows[k] if k in self.rows else self.pending[k] for k in keys])

    def _missing(self, keys: list[str], texts: list[str]) -> list[tuple[str, str]]:
        return sorted({k: t for k, t in zip(keys, texts) if k not in self.rows and k not in self.pending}.items())

    def scores(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        """(len(queries), len(documents)) cosine similarities."""
        query_prefix = getattr(self.encoder, "query_prefix", "")
        document_prefix = getattr(self.encoder, "document_prefix", "")
        return self.embed(queries, query_prefix) @ self.embed(documents, document_prefix).T

    def flush(self) -> None:
        """Write the pending embeddings as a new part file (fp16) and move them to the loaded rows."""
        if not self.pending:
            return
        # a random suffix: runs sharing the cache (leave-one-out models trained at once) never overwrite a part
        path = self.folder / f"part-{len(self.parts):05d}-{uuid.uuid4().hex[:8]}.pt"
        keys = list(self.pending)
        with atomic_write(path, "wb") as out:
            torch.save({"keys": keys, "embeddings": torch.stack([self.pending[k] for k in keys]).half()}, out)
        self.parts.append(path)
        self.rows.update(self.pending)
        self.pending.clear()
