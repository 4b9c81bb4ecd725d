"""Training pairs, the batch sampler (its state resumes exactly) and the sources of hard negatives."""
import pytest

from helpers import write_jsonl
from splare_pyserini.errors import InputError
from splare_pyserini.training.negatives import (FileNegatives, InMemoryNegatives, NoNegatives, attach_negatives,
                                                negative_source)
from splare_pyserini.training.pairs import Pair, PairSampler, self_supervised_pairs, supervised_pairs, training_pairs


def pairs_and_docs(n: int = 6) -> tuple[list[Pair], dict[str, str]]:
    docs = {f"d{i}": f"document {i}" for i in range(n)}
    pairs = [Pair(f"query {i}", f"d{i}", docs[f"d{i}"]) for i in range(n)]
    pairs.append(Pair("query 0 again", "d0", docs["d0"]))  # a second pair with the same positive
    return pairs, docs


def test_supervised_and_self_supervised_pairs(scifact_slice):
    pairs = supervised_pairs(scifact_slice, "test")
    assert len({p.query for p in pairs}) == 40 and all(p.positive_text for p in pairs)
    zero_shot = self_supervised_pairs(scifact_slice, seed=0)
    assert len(zero_shot) > 250 and all(p.query not in p.positive_text for p in zero_shot[:50])
    assert [p.query for p in self_supervised_pairs(scifact_slice, seed=0)] == [p.query for p in zero_shot]
    with pytest.raises(InputError, match="mode: 'few-shot' is not one of in-domain, zero-shot"):
        training_pairs(scifact_slice, "few-shot")


def test_batches_have_distinct_positives_and_state_resumes_the_draws():
    pairs, docs = pairs_and_docs()
    sampler = PairSampler(pairs, docs, batch_size=4, seed=3)
    for _ in range(5):
        batch = sampler.next_pairs()
        assert len({p.positive_id for p in batch}) == 4
    saved = sampler.state_dict()
    ahead = [sampler.next_batch() for _ in range(4)]
    again = PairSampler(pairs, docs, batch_size=4, seed=99)
    again.load_state_dict(saved)
    assert [again.next_batch() for _ in range(4)] == ahead


def test_negative_is_from_the_pair_list_else_another_document():
    pairs, docs = pairs_and_docs()
    sampler = PairSampler(pairs, docs, batch_size=2)
    pairs[1].negatives = ["d4", "d5"]
    assert {sampler.negative_for(pairs[1]) for _ in range(30)} == {"document 4", "document 5"}
    others = {sampler.negative_for(pairs[2]) for _ in range(60)}
    assert "document 2" not in others and len(others) > 1
    batch = sampler.next_batch()
    assert len(batch.queries) == 2 and len(batch.documents) == 4


def test_a_batch_larger_than_the_distinct_positives_is_refused():
    pairs, docs = pairs_and_docs(3)
    with pytest.raises(InputError, match="batch_size: 4 is more than the 3 distinct positive documents"):
        PairSampler(pairs, docs, batch_size=4)


def test_attach_negatives_drops_positives_and_keeps_the_first_ones():
    pairs, docs = pairs_and_docs()
    source = InMemoryNegatives({"query  0": ["d0", "d3", "d3", "d4", "d5"], "query 1": ["d2"]})
    attach_negatives(pairs, source, depth=2, corpus_ids=docs)
    assert pairs[0].negatives == ["d3", "d4"]  # whitespace-normalized key, positive and repeat dropped
    assert pairs[1].negatives == ["d2"] and pairs[2].negatives == []
    attach_negatives(pairs, NoNegatives(), depth=2)
    assert all(p.negatives == [] for p in pairs)
    with pytest.raises(InputError, match="hard negative 'd99' of query 'query 1' is not a document of the corpus"):
        attach_negatives(pairs, InMemoryNegatives({"query 1": ["d99"]}), depth=2, corpus_ids=docs)


def test_file_negatives(tmp_path):
    path = write_jsonl(tmp_path / "negatives.jsonl", [{"query": "query 1", "negatives": ["d2", 3]},
                                                      {"query": "query 1", "negatives": ["d4"]}])
    assert FileNegatives(path).mine(["query 1", "query 2"]) == [["d2", "3", "d4"], []]
    assert isinstance(negative_source(str(path), tmp_path, tmp_path, 5), FileNegatives)
    assert isinstance(negative_source("none", tmp_path, tmp_path, 5), NoNegatives)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "negatives": "d1"}])
    with pytest.raises(InputError, match=r"bad.jsonl:1: expected"):
        FileNegatives(bad)
