"""Training pairs, offline: supervised (train qrels) or self-supervised (from the corpus alone),
and the sampler that turns them into batches of queries, positives and hard negatives."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import require
from ..datasets import iter_json_lines, join_text, load_beir, resolve_beir_folder

MODES = ("in-domain", "zero-shot")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


@dataclass
class Pair:
    """A query, its positive document (id and the text the model sees) and hard-negative ids."""
    query: str
    positive_id: str
    positive_text: str
    negatives: list[str] = field(default_factory=list)


def corpus_texts(folder: Path) -> dict[str, tuple[str, str]]:
    """doc id -> (title, text), raw BEIR fields."""
    return {str(obj["_id"]): ((obj.get("title") or "").strip(), (obj.get("text") or "").strip())
            for _, obj in iter_json_lines(folder / "corpus.jsonl")}


def supervised_pairs(dataset: str | Path, split: str = "train",
                     corpus: dict[str, tuple[str, str]] | None = None) -> list[Pair]:
    """One pair per judged-relevant (query, document) of ``qrels/<split>.tsv``."""
    folder = resolve_beir_folder(dataset)
    data = load_beir(folder, split, need_qrels=True)
    docs = corpus if corpus is not None else corpus_texts(folder)
    pairs = []
    for query in data.queries:
        for doc_id, rel in sorted(data.qrels[query.id].items()):
            if rel > 0 and doc_id in docs:
                pairs.append(Pair(query.text, doc_id, join_text(*docs[doc_id])))
    return pairs


def self_supervised_pairs(dataset: str | Path, seed: int = 0, per_doc: int = 1,
                          corpus: dict[str, tuple[str, str]] | None = None) -> list[Pair]:
    """Zero-shot pairs from the corpus alone (no queries, no labels): a sentence of a document
    as the query and the document without that sentence as the positive (inverse cloze task),
    or the title as the query and the text as the positive when a document has one sentence."""
    docs = corpus if corpus is not None else corpus_texts(resolve_beir_folder(dataset))
    rng = random.Random(seed)
    pairs = []
    for doc_id, (title, text) in sorted(docs.items()):
        sentences = [s for s in _SENTENCE.split(text) if len(s.split()) >= 5]
        for _ in range(per_doc):
            if len(sentences) >= 2:
                pick = rng.randrange(len(sentences))
                rest = " ".join(s for i, s in enumerate(sentences) if i != pick)
                pairs.append(Pair(sentences[pick], doc_id, join_text(title, rest)))
            elif title and text:
                pairs.append(Pair(title, doc_id, text))
    return pairs


def training_pairs(dataset: str | Path, mode: str, seed: int = 0,
                   corpus: dict[str, tuple[str, str]] | None = None) -> list[Pair]:
    """``in-domain``: the pairs of ``qrels/train.tsv``; ``zero-shot``: self-supervised pairs."""
    require(mode in MODES, f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if mode == "in-domain":
        return supervised_pairs(dataset, "train", corpus)
    return self_supervised_pairs(dataset, seed=seed, corpus=corpus)


@dataclass
class TrainingBatch:
    """B queries and 2B documents: the B positives, then one hard negative per query."""
    queries: list[str]
    documents: list[str]


class PairSampler:
    """Batches of pairs with distinct positives (a duplicate would be a false in-batch negative),
    each with a hard negative drawn from its pair's list, or from the whole corpus when the list is
    empty. One seeded RNG drives both choices; its state is part of the training state, so a
    resumed run draws exactly the batches the uninterrupted run would have."""

    def __init__(self, pairs: list[Pair], docs: dict[str, str], batch_size: int, seed: int = 0):
        distinct = len({p.positive_id for p in pairs})
        require(distinct >= batch_size, f"batch_size: {batch_size} is more than the {distinct} distinct "
                                        "positive documents of the training pairs")
        self.pairs = pairs
        self.docs = docs
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self._all_ids = sorted(docs)

    def next_pairs(self) -> list[Pair]:
        batch, seen = [], set()
        while len(batch) < self.batch_size:
            if not self.order:
                self.order = list(range(len(self.pairs)))
                self.rng.shuffle(self.order)
            pair = self.pairs[self.order.pop()]
            if pair.positive_id in seen:
                continue
            seen.add(pair.positive_id)
            batch.append(pair)
        return batch

    def negative_for(self, pair: Pair) -> str:
        """The text of a hard negative of ``pair`` (a random other document if it has none)."""
        if pair.negatives:
            return self.docs[self.rng.choice(pair.negatives)]
        doc_id = self.rng.choice(self._all_ids)
        while doc_id == pair.positive_id and len(self._all_ids) > 1:
            doc_id = self.rng.choice(self._all_ids)
        return self.docs[doc_id]

    def next_batch(self) -> TrainingBatch:
        pairs = self.next_pairs()
        return TrainingBatch([p.query for p in pairs],
                             [p.positive_text for p in pairs] + [self.negative_for(p) for p in pairs])

    def state_dict(self) -> dict:
        return {"order": list(self.order), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.order = list(state["order"])
        self.rng.setstate(state["rng"])
