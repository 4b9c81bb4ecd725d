"""Where training pairs come from, when one run mixes several collections.

A source is ``<dataset>[:train|:corpus][=<weight>]``: ``train`` pairs each judged query of
``qrels/train.tsv`` with its relevant documents; ``corpus`` makes self-supervised pairs from the
corpus text alone (inverse cloze; title -> text), so any unlabeled BEIR folder can be a source.
Each step draws its whole batch from one source, chosen with probability proportional to the
weights, so in-batch negatives share a domain (a cross-domain negative is too easy to teach).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..config import require
from ..datasets import join_text, resolve_beir_folder
from .negatives import NegativeSource, attach_negatives, negative_source
from .pairs import Pair, PairSampler, TrainingBatch, corpus_texts, training_pairs

KINDS = {"train": "in-domain", "corpus": "zero-shot"}  # source kind -> pair mode


@dataclass(frozen=True)
class SourceSpec:
    dataset: str
    kind: str = "train"
    weight: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "SourceSpec":
        body, _, weight = spec.partition("=")
        dataset, _, kind = body.rpartition(":") if body.rsplit(":", 1)[-1] in KINDS else (body, "", "train")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        require(bool(dataset) and value > 0,
                f"sources: {spec!r} is not <dataset>[:train|:corpus][=<positive weight>]")
        return cls(dataset, kind, value)

    @property
    def name(self) -> str:
        return f"{Path(self.dataset).name}:{self.kind}"


@dataclass
class LoadedSource:
    spec: SourceSpec
    pairs: list[Pair]
    docs: dict[str, str]
    sampler: PairSampler


def load_source(spec: SourceSpec, batch_size: int, seed: int, cache: Path, negatives: str, depth: int,
                override: NegativeSource | None = None) -> LoadedSource:
    """Pairs of one source with hard negatives from its own corpus, and its batch sampler."""
    folder = resolve_beir_folder(spec.dataset)
    corpus = corpus_texts(folder)
    pairs = training_pairs(folder, KINDS[spec.kind], seed, corpus)
    require(bool(pairs), f"sources: {spec.dataset} gives no {spec.kind} pairs")
    attach_negatives(pairs, override or negative_source(negatives, folder, cache, depth), depth, corpus)
    docs = {doc_id: join_text(*fields) for doc_id, fields in corpus.items()}
    return LoadedSource(spec, pairs, docs, PairSampler(pairs, docs, batch_size, seed))


class SourceMixer:
    """Picks a source per step (seeded, by weight) and delegates the batch to its sampler; its state
    (its RNG and every sampler's) is part of the training state, so resuming draws the same batches."""

    def __init__(self, sources: Sequence[LoadedSource], seed: int = 0):
        self.sources = list(sources)
        self.weights = [s.spec.weight for s in self.sources]
        self.rng = random.Random(seed)
        self.last: str = ""

    def next_batch(self) -> TrainingBatch:
        source = self.sources[0] if len(self.sources) == 1 else self.rng.choices(self.sources, self.weights)[0]
        self.last = source.spec.name
        return source.sampler.next_batch()

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "samplers": [s.sampler.state_dict() for s in self.sources]}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        for source, sampler_state in zip(self.sources, state["samplers"]):
            source.sampler.load_state_dict(sampler_state)
