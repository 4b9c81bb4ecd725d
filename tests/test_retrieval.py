"""Real Anserini indexing and search on a slice of the shipped SciFact, with the shipped default model."""
import json
import shutil
import subprocess
import sys

import pytest

from splare_pyserini.beir import BeirConfig, run_beir
from splare_pyserini.errors import ArtifactError, InputError
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.pipeline import RunSettings

pytestmark = pytest.mark.integration
BM25_SLICE_NDCG, BM25_SLICE_RECALL = 0.9083, 0.975  # trec_eval on the 40-query slice, Anserini defaults


@pytest.fixture(scope="module")
def default_encoder():
    return SaeSparseEncoder()


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory, scifact_slice, default_encoder):
    out = tmp_path_factory.mktemp("slice-run")
    cfg = BeirConfig(output=str(out), dataset=str(scifact_slice), run=RunSettings(chunk_size=128),
                     baselines=("splade-tiny", "dense"))
    return out, run_beir(cfg, default_encoder)


def test_retrieval_quality_on_real_data(slice_run):
    _, results = slice_run
    splare, bm25 = results["SPLARE"], results["BM25"]
    # 40 real SciFact test claims against 300 abstracts (their relevant ones and 261 others); a random
    # ranking scores nDCG@10 ~ 0.02 here. BM25 is deterministic (one indexing thread): its figures are
    # pinned, as Pyserini's regressions pin theirs. The learned model is a guard, not a pin.
    assert (bm25["nDCG@10"], bm25["R@100"]) == (pytest.approx(BM25_SLICE_NDCG, abs=1e-4),
                                                pytest.approx(BM25_SLICE_RECALL, abs=1e-4))
    assert splare["nDCG@10"] > 0.8 and splare["R@100"] > 0.95
    # the baselines no one here trained (SPLADE-tiny on MS MARCO, MiniLM's own dense embeddings) find them too
    assert list(results) == ["SPLARE", "BM25", "CombSUM(SPLARE, BM25)", "RRF(SPLARE, BM25)", "SPLADE-tiny",
                             "dense MiniLM"]
    assert results["SPLADE-tiny"]["nDCG@10"] > 0.7 and results["dense MiniLM"]["nDCG@10"] > 0.7
    assert results["SPLADE-tiny"]["doc nnz"] > 0 and (slice_run[0] / "dense" / "run.trec").is_file()
    for row in results.values():  # trec_eval (through Pyserini) and ir-measures agree
        assert row["nDCG@10"] == pytest.approx(row["nDCG@10 (ir-measures)"], abs=1e-4)
        assert row["R@100"] == pytest.approx(row["R@100 (ir-measures)"], abs=1e-4)
    saved = json.loads((slice_run[0] / "scores.json").read_text())
    assert saved["results"]["SPLARE"]["nDCG@10"] == splare["nDCG@10"] and saved["encoder"]["model_hash"]


def read_run(path) -> dict[str, list[str]]:
    ranked: dict[str, list[tuple[int, str]]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, rank, _, _ = line.split(" ")
        ranked.setdefault(qid, []).append((int(rank), docid))
    return {q: [d for _, d in sorted(hits)] for q, hits in ranked.items()}


def read_scored_run(path) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split(" ")
        scores.setdefault(qid, {})[docid] = float(score)
    return scores


def test_hybrid_rows_are_combsum_and_rrf_of_the_two_runs(slice_run):
    """The hybrid row's run is CombSUM of SPLARE's and BM25's runs (each query's scores min-max normalized per
    run, summed), and the row beside it their RRF (k = 60): both computed here independently."""
    out, results = slice_run
    runs = [(read_scored_run(out / name / "run.trec"), read_run(out / name / "run.trec"))
            for name in ("splare", "bm25")]  # (scores, ranked docids) per query
    for folder, fusion in ((out / "hybrid", "normalize"), (out / "hybrid-rrf", "rrf")):
        fused = read_run(folder / "run.trec")
        assert set(fused) == set(runs[0][0]) == set(runs[1][0])
        for qid, ranking in fused.items():
            score: dict[str, float] = {}
            for scores, ranked in runs:
                low, high = min(scores[qid].values()), max(scores[qid].values())
                for rank, docid in enumerate(ranked[qid], start=1):
                    part = ((scores[qid][docid] - low) / (high - low) * 0.5 if fusion == "normalize"
                            else 1.0 / (60 + rank))
                    score[docid] = score.get(docid, 0.0) + part
            expected = sorted(score, key=lambda d: (-score[d], d))
            assert [round(score[d], 9) for d in ranking[:10]] == [round(score[d], 9) for d in expected[:10]], qid
    assert results["CombSUM(SPLARE, BM25)"]["nDCG@10"] > 0.8 and results["RRF(SPLARE, BM25)"]["nDCG@10"] > 0.8


def test_hybrid_searcher_ranks_as_the_fused_runs(slice_run, tmp_path):
    """search --bm25-index (HybridSearcher: both indexes searched per query, fused in memory) writes the run
    that fusing the two systems' run files gives (beir's hybrid rows), for CombSUM and for RRF."""
    from splare_pyserini.lucene.search import main as search_main

    out, _ = slice_run
    for fusion, fused_run in (("normalize", out / "hybrid" / "run.trec"), ("rrf", out / "hybrid-rrf" / "run.trec")):
        written = tmp_path / f"hybrid-{fusion}.trec"
        search_main(["--index", str(out / "splare" / "index"), "--bm25-index", str(out / "bm25" / "index"),
                     "--topics", str(out / "splare" / "vectors" / "topics.tsv"), "--output", str(written),
                     "--fusion", fusion])
        expected, got = read_run(fused_run), read_run(written)
        expected_scores, got_scores = read_scored_run(fused_run), read_scored_run(written)
        assert set(got) == set(expected)
        for qid in expected:
            assert got[qid][:10] == expected[qid][:10], qid
            assert [got_scores[qid][d] for d in got[qid][:10]] == pytest.approx(
                [expected_scores[qid][d] for d in expected[qid][:10]], abs=2e-6), qid


def test_run_file_is_trec_format(slice_run):
    out, _ = slice_run
    lines = (out / "splare" / "run.trec").read_text().splitlines()
    by_query = {}
    for line in lines:
        qid, q0, docid, rank, score, tag = line.split(" ")
        assert q0 == "Q0" and tag == "Anserini" and float(score) > 0
        by_query.setdefault(qid, []).append((int(rank), float(score)))
    assert len(by_query) == 40
    for hits in by_query.values():
        assert [r for r, _ in hits] == list(range(1, len(hits) + 1))
        assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))


def test_on_the_fly_query_encoder_gives_the_identical_run(slice_run, default_encoder, tmp_path):
    from splare_pyserini import SaeQueryEncoder, open_searcher, search_topics

    out, _ = slice_run
    vectors = out / "splare" / "vectors"
    expected = (out / "splare" / "run.trec").read_bytes()
    for encoder in (SaeQueryEncoder(default_encoder), default_encoder):  # either form open_searcher takes
        run = search_topics(open_searcher(out / "splare" / "index", encoder), vectors / "topics.tsv",
                            tmp_path / "fly.trec", hits=1000)
        assert run.read_bytes() == expected


def test_batched_and_threaded_search_gives_the_identical_run(slice_run, tmp_path):
    from splare_pyserini import open_searcher, search_topics

    out, _ = slice_run
    vectors = out / "splare" / "vectors"
    searcher = open_searcher(out / "splare" / "index", str(vectors / "queries.jsonl"))
    run = search_topics(searcher, vectors / "topics.tsv", tmp_path / "batch.trec", hits=1000, threads=2,
                        batch_size=16)
    assert run.read_bytes() == (out / "splare" / "run.trec").read_bytes()


def test_pyserini_cli_passthrough_gives_the_identical_run(slice_run, tmp_path):
    out, _ = slice_run
    vectors = out / "splare" / "vectors"
    common = [sys.executable, "-m", "splare_pyserini.pyserini", "search.lucene", "--index",
              str(out / "splare" / "index"), "--impact", "--hits", "1000"]
    subprocess.run(common + ["--encoder", str(vectors / "queries.jsonl"), "--topics", str(vectors / "topics.tsv"),
                             "--output", str(tmp_path / "cli.trec")], check=True, capture_output=True)
    subprocess.run(common + ["--pretokenized", "--topics", str(vectors / "queries.tsv"),
                             "--output", str(tmp_path / "pretok.trec")], check=True, capture_output=True)
    expected = (out / "splare" / "run.trec").read_bytes()
    assert (tmp_path / "cli.trec").read_bytes() == expected
    assert (tmp_path / "pretok.trec").read_bytes() == expected


def test_topics_under_a_path_that_names_another_collection(slice_run, tmp_path):
    """Pyserini's get_query_iterator picks a reader by path substrings ('cacm', 'beir'...); ours does not."""
    from splare_pyserini.search import main as search_main

    out, _ = slice_run
    topics = tmp_path / "cacm" / "beir" / "vectors" / "topics.tsv"
    topics.parent.mkdir(parents=True)
    shutil.copy(out / "splare" / "vectors" / "topics.tsv", topics)
    search_main(["--index", str(out / "splare" / "index"), "--topics", str(topics), "--output",
                 str(tmp_path / "cacm" / "run.trec"), "--encoded-queries", str(out / "splare" / "vectors" / "queries.jsonl")])
    assert (tmp_path / "cacm" / "run.trec").read_bytes() == (out / "splare" / "run.trec").read_bytes()


def test_remove_query_drops_hits_named_like_the_query(slice_run, tmp_path):
    from splare_pyserini import open_searcher, search_topics
    from splare_pyserini.datasets import TextRecord, read_tsv_topics

    out, _ = slice_run
    searcher = open_searcher(out / "splare" / "index", str(out / "splare" / "vectors" / "queries.jsonl"))
    query = read_tsv_topics(out / "splare" / "vectors" / "topics.tsv")[0]
    top = searcher.search(query.text, 1)[0].docid
    renamed = [TextRecord(top, query.text)]  # a query whose id is its own top hit's docid
    kept = search_topics(searcher, renamed, tmp_path / "kept.trec", hits=10).read_text().splitlines()
    dropped = search_topics(searcher, renamed, tmp_path / "dropped.trec", hits=10,
                            remove_query=True).read_text().splitlines()
    assert kept[0].split(" ")[2] == top and len(dropped) == len(kept) - 1
    assert top not in [line.split(" ")[2] for line in dropped]


def test_index_records_settings_and_refuses_other_queries(slice_run, default_encoder, tmp_path):
    from splare_pyserini import open_searcher
    from splare_pyserini.lucene.index import read_index_info
    from splare_pyserini.lucene.search import check_compatible

    out, _ = slice_run
    index = out / "splare" / "index"
    info = read_index_info(index)
    assert info["kind"] == "splare-impact" and info["encoder"]["d_sae"] == default_encoder.dim
    check_compatible(index, default_encoder.info())
    with pytest.raises(ArtifactError, match="quant_scale"):
        check_compatible(index, {**default_encoder.info(), "quant_scale": 1.0})
    # the Python API runs the same check as the CLI
    with pytest.raises(ArtifactError, match="different settings: quant_scale"):
        open_searcher(index, SaeSparseEncoder(quant_scale=1.0))
    # the same checkpoint copied elsewhere is the same model (compared by content, not path) ...
    copy = shutil.copytree(default_encoder.checkpoint.path, tmp_path / "copy")
    check_compatible(index, SaeSparseEncoder(str(copy)).info())
    # ... and a changed one is not
    weights = copy / "backbone.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model_hash"):
        check_compatible(index, SaeSparseEncoder(str(copy)).info())


def test_index_lists_what_anserini_indexed(slice_run):
    from splare_pyserini.lucene.jvm import import_pyserini

    out, _ = slice_run
    reader = import_pyserini("pyserini.index.lucene").LuceneIndexReader(str(out / "splare" / "index"))
    assert reader.stats()["documents"] == 300
    terms = [term.term for term in reader.terms()]
    indexed = {t for f in (out / "splare" / "vectors" / "corpus").glob("*.jsonl")
               for line in f.read_text().splitlines() for t in json.loads(line)["vector"]}
    assert set(terms) == indexed and all(t.startswith("L") for t in terms)


def test_partial_corpus_is_refused_by_the_indexer(slice_run, tmp_path):
    from splare_pyserini.lucene.index import index_vectors

    out, _ = slice_run
    partial = shutil.copytree(out / "splare" / "vectors", tmp_path / "vectors")
    next(iter(sorted((partial / "corpus").glob("*.jsonl")))).unlink()
    with pytest.raises(ArtifactError, match=r"holds \d+ of 300 documents; finish encoding"):
        index_vectors(partial, tmp_path / "index")
    assert not (tmp_path / "index").exists()
    with pytest.raises(InputError, match="no such folder"):
        index_vectors(tmp_path / "nope", tmp_path / "index")
