"""What an impact index of the vectors holds: terms, how broad a posting's term is, postings a query reads."""
import json
import math

from splare_pyserini.lucene.postings import document_frequencies, mean_nonzeros, posting_stats, searched


def write_vectors(path, vectors):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": str(i), "contents": "", "vector": v}) + "\n"
                            for i, v in enumerate(vectors)), encoding="utf-8")


def test_posting_stats_by_hand(tmp_path):
    # four documents over two files; L1 in all four, L2 in two, L3 in one
    write_vectors(tmp_path / "corpus" / "part-0.jsonl", [{"L1": 5, "L2": 1}, {"L1": 2, "L3": 7}])
    write_vectors(tmp_path / "corpus" / "part-1.jsonl", [{"L1": 1}, {"L1": 9, "L2": 3}])
    write_vectors(tmp_path / "queries.jsonl", [{"L1": 1, "L3": 2}, {"L2": 4}, {"L9": 1}])
    freq, documents = document_frequencies(tmp_path / "corpus")
    assert documents == 4 and freq == {"L1": 4, "L2": 2, "L3": 1}
    stats = posting_stats(tmp_path / "corpus", tmp_path / "queries.jsonl")
    # 7 postings: four on L1 (df 4/4), two on L2 (2/4), one on L3 (1/4) -> (4*1 + 2*0.5 + 0.25) / 7
    assert stats.terms == 3
    assert abs(stats.posting_df - (4 + 1 + 0.25) / 7) < 1e-12
    # Pyserini searches no term held by every document (idf ln(4/4) = 0 is not above min idf 0): the
    # queries read 1 (L3; L1 left out), 2 and 0 postings (L9 is in no document)
    assert abs(stats.postings_per_query - 3 / 3) < 1e-12
    assert stats.row() == {"terms": 3, "posting df": 0.75, "postings per query": 1}
    # at min idf ln 2 (L2's idf: ln(4/2), not above it) only L3 (ln 4) is searched
    assert abs(posting_stats(tmp_path / "corpus", tmp_path / "queries.jsonl", math.log(2) + 1e-9).postings_per_query
               - 1 / 3) < 1e-12
    assert searched(freq, documents, 0.0) == {"L2", "L3"} and searched(freq, documents, 2.0) == set()
    assert mean_nonzeros(tmp_path / "corpus") == 7 / 4 and mean_nonzeros(tmp_path / "queries.jsonl") == 4 / 3
