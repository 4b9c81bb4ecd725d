"""Latent labels, argmax-token attribution and hit explanations (issue 16).

Unit tests use the tiny in-process BERT + TopK SAE; the integration tests build a tiny-encoder impact
index over a SciFact slice and check that the contributions sum exactly to Lucene's scores."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from splare_pyserini.errors import ArtifactError
from splare_pyserini.model.encoder import SaeSparseEncoder


@pytest.fixture(scope="module")
def texts(scifact_slice):
    from splare_pyserini.label_latents import sample_texts

    return sample_texts([str(scifact_slice)], 24, seed=0)


# --- attribution -----------------------------------------------------------------------------------

def test_argmax_tokens_reproduce_the_pooled_weights(tiny_encoder, texts):
    from splare_pyserini.model.attribution import text_activations

    acts = text_activations(tiny_encoder, texts[:3])
    weights = tiny_encoder.pooled_weights(texts[:3])
    for act, row in zip(acts, weights):
        assert sorted(act.peaks) == torch.nonzero(row).flatten().tolist()
        for latent, (_, position) in act.peaks.items():
            assert abs(act.weight(latent) - float(row[latent])) < 1e-5
            start, end = act.spans[position]
            assert act.token_text(position) == act.text[start:end]
    query = text_activations(tiny_encoder, ["  what   is a stem cell? "], query=True)[0]
    assert query.text == "what is a stem cell?" and query.tokens[:2] == ["what", "is"]


def test_argmax_tokens_of_a_windowed_document_reproduce_its_vector(tiny_encoder):
    from splare_pyserini.model.attribution import text_activations

    encoder = SaeSparseEncoder(tiny_encoder.settings.replace(max_length=16, windows=3))
    text = " ".join(f"word{i} protein folding yeast" for i in range(40))
    act = text_activations(encoder, [text])[0]
    whole = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert act.tokens == encoder.tokenizer.convert_ids_to_tokens(whole[:42])  # the three windows' tokens
    scale = encoder.settings.quant_scale
    impacts = {f"L{latent}": round(act.weight(latent) * scale) for latent in act.peaks}
    assert {t: w for t, w in impacts.items() if w > 0} == encoder.encode_documents([text])[0]
    assert max(position for _, position in act.peaks.values()) >= 28  # peaks found in the last window too


def test_context_joins_word_pieces():
    from splare_pyserini.model.labels import context, join_pieces

    assert join_pieces(["nano", "##par", "##tic", "##les", "are"]) == "nanoparticles are"
    assert context(["nano", "##par", "##tic", "##les", "are", "small"], 2, 2) == "nanopar«tic»les are …"
    assert context(["x", "y", "nano", "##par", "##tic"], 3, 1) == "… nano«par»tic"
    assert context(["a", "b"], 0, 3) == "«a» b"


# --- labels ----------------------------------------------------------------------------------------

def test_labels_are_deterministic_and_mark_dead_latents(tiny_encoder, texts, tmp_path):
    from splare_pyserini.model.labels import collect_labels, read_labels, write_labels

    first = write_labels(collect_labels(tiny_encoder, texts, batch_size=5), tmp_path / "a.json")
    second = write_labels(collect_labels(tiny_encoder, texts, batch_size=5), tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    labels = read_labels(first)
    info = tiny_encoder.info()
    assert labels.header["model_hash"] == info["model_hash"] and labels.header["sae_hash"] == info["sae_hash"]
    assert len(labels.latents) == tiny_encoder.dim
    alive = [e for e in labels.latents if not e.get("dead")]
    assert alive and all(len(e["tokens"]) <= 8 and len(e["contexts"]) <= 2 for e in alive)
    for e in alive:  # ranked by peak activation; the label is the top tokens
        peaks = [t[1] for t in e["tokens"]]
        assert peaks == sorted(peaks, reverse=True)
        assert e["label"].split("/")[0] == e["tokens"][0][0]
        assert all("«" in c for c in e["contexts"])
    # one short text cannot fire every latent: the rest are dead
    few = collect_labels(tiny_encoder, ["stem cells"], batch_size=1)
    dead = [e for e in few.latents if e.get("dead")]
    assert dead and few.header["dead"] == len(dead) and few.label(dead[0]["id"]) == "(dead)"
    fired = tiny_encoder.encode_documents(["stem cells"])[0]
    assert {f"L{e['id']}" for e in few.latents if not e.get("dead")} >= set(fired)


def test_labels_for_another_model_are_refused(tiny_encoder, texts, tmp_path):
    from splare_pyserini.model.labels import check_labels, collect_labels, read_labels, write_labels

    path = write_labels(collect_labels(tiny_encoder, texts[:4]), tmp_path / "labels.json")
    labels = read_labels(path)
    check_labels(labels, tiny_encoder.info())
    with pytest.raises(ArtifactError, match="another model") as err:
        check_labels(labels, {**tiny_encoder.info(), "model_hash": "0123456789abcdef"})
    assert "\n" not in str(err.value)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ArtifactError, match="not a valid latent labels file"):
        read_labels(tmp_path / "bad.json")
    with pytest.raises(ArtifactError, match="no such labels file"):
        read_labels(tmp_path / "missing.json")


def test_labels_are_stored_with_the_sae_without_changing_its_hash(tiny_model, tiny_sae, texts, tmp_path):
    from splare_pyserini.label_latents import label_latents
    from splare_pyserini.model.artifacts import content_hash
    from splare_pyserini.model.encoder import SaeSparseEncoder
    from splare_pyserini.model.labels import LABELS_FILE

    sae = Path(shutil.copytree(tiny_sae, tmp_path / "sae"))
    before = content_hash(str(sae))
    encoder = SaeSparseEncoder(str(tiny_model), sae=str(sae), max_length=64)
    assert encoder.latent_labels() is None and encoder.decode({"L3": 5}, labels=True) == [(3, 5.0, None)]
    labels = label_latents(encoder, texts[:6], batch_size=4)
    assert labels.path == sae / LABELS_FILE and content_hash(str(sae)) == before
    fresh = SaeSparseEncoder(str(tiny_model), sae=str(sae), max_length=64)
    vector = fresh.encode_documents([texts[0]])[0]
    decoded = fresh.decode(vector, top_k=3, labels=True)
    assert [(i, w) for i, w, _ in decoded] == fresh.decode(vector, top_k=3)
    assert all(label == labels.label(i) and label for i, _, label in decoded)


def test_vocabulary_twin_labels_are_its_tokens(tiny_model):
    from splare_pyserini.model.encoder import SaeSparseEncoder

    twin = SaeSparseEncoder(str(tiny_model), sae="vocab", layer=2, max_length=32)
    stem = twin.tokenizer.convert_tokens_to_ids("stem")
    assert twin.decode({f"L{stem}": 7}, labels=True) == [(stem, 7.0, "stem")]


def test_bad_command_lines_are_one_line_errors(capsys, tmp_path):
    from splare_pyserini import explain, label_latents

    for main, argv in ((explain.main, ["--index", str(tmp_path), "--query", "q"]),
                       (explain.main, ["--index", str(tmp_path), "--query", "q", "--docid", "1", "--hits", "2"]),
                       (explain.main, ["--index", str(tmp_path / "none"), "--query", "q", "--hits", "2"]),
                       (label_latents.main, ["--input", "scifact", "--sae", "vocab", "--layer", "4"]),
                       (label_latents.main, ["--input", str(tmp_path / "nope")])):
        with pytest.raises(SystemExit) as exit_info:
            explain.cli(argv) if main is explain.main else label_latents.cli(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err


# --- HTML ------------------------------------------------------------------------------------------

def _fake_hits():
    from splare_pyserini.explain import Contribution, HitExplanation

    query = "Do nanoparticles label stem cells?"
    doc = "Nanoparticles <b>label</b> mesenchymal stem cells & track them in vivo."
    contributions = [Contribution(17, "L17", "stem/progenitor/pluripotent", 120, 95, "stem", "stem", (23, 27), (35, 39)),
                     Contribution(4051, "L4051", "nano/##particle/quantum", 80, 60, "nanoparticles", "Nanoparticles",
                                  (3, 16), (0, 13)),
                     Contribution(9, "L9", None, 3, 2, "label", None, (17, 22), None)]
    total = sum(c.contribution for c in contributions)
    return [HitExplanation(query, "doc-42", float(total), 1, contributions, float(total), [], doc),
            HitExplanation(query, "doc-7", float(total), 2, contributions[:1] + contributions[2:], None, [], None)]


def test_html_is_self_contained_and_shows_the_explanation(tmp_path):
    from splare_pyserini.explain_html import write_html

    hits = _fake_hits()
    page = write_html(hits, tmp_path / "hits.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    for banned in ("http://", "https://", "src=", "@import", "url("):
        assert banned not in page
    for text in ("Do nanoparticles label stem cells?", "doc-42", "doc-7", "stem/progenitor/pluripotent",
                 "nano/##particle/quantum", f"{120 * 95:,}", f"{80 * 60:,}", f"{hits[0].total:,}", "L4051"):
        assert text in page, text
    assert "&lt;b&gt;label&lt;/b&gt;" in page and "&amp; track" in page  # document text is escaped
    assert page.count("<mark") >= 5 and "(document text not available)" in page


def test_html_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium on PATH (apt-get install chromium): the HTML is checked only as text")
    from splare_pyserini.explain_html import write_html

    page = write_html(_fake_hits(), tmp_path / "hits.html")
    shot = tmp_path / "hits.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400"]
    subprocess.run([browser, *flags, f"--screenshot={shot}", page.as_uri()], check=True, timeout=120,
                   capture_output=True)
    assert shot.stat().st_size > 10_000
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert "doc-42" in dom and "stem/progenitor/pluripotent" in dom and dom.count("<mark") >= 5


# --- on a real index (JVM) -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, tiny_encoder, scifact_slice, texts):
    from splare_pyserini.datasets import load_beir
    from splare_pyserini.encode import encode_corpus
    from splare_pyserini.label_latents import label_latents
    from splare_pyserini.lucene.index import index_vectors

    root = tmp_path_factory.mktemp("explain")
    data = load_beir(scifact_slice)
    encode_corpus(data.corpus, root / "vectors", tiny_encoder, 32)
    index_vectors(root / "vectors", root / "index")
    labels = label_latents(tiny_encoder, texts, root / "labels.json", batch_size=8)
    vectors = {}
    for file in sorted((root / "vectors" / "corpus").glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            vectors[obj["id"]] = obj["vector"]
    return {"index": root / "index", "labels": labels, "vectors": vectors, "queries": data.queries}


@pytest.mark.integration
def test_contributions_sum_exactly_to_lucene_scores(tiny_index, tiny_encoder):
    from splare_pyserini.explain import Explainer

    explainer = Explainer(tiny_index["index"], tiny_encoder, labels=tiny_index["labels"])
    checked = 0
    for query in tiny_index["queries"][:4]:
        for e in explainer.top_hits(query.text, 5):
            assert e.exact and float(e.total) == e.score == e.lucene_explain
            sent = tiny_encoder.encode_queries([query.text])[0]
            doc = tiny_index["vectors"][e.docid]
            for c in e.contributions:  # impacts from the index = what the encoder wrote
                assert c.doc_impact == doc[c.term] and c.query_impact == sent[c.term]
                assert c.label == tiny_index["labels"].label(c.latent)
                assert c.query_token and c.doc_token
            assert [c.contribution for c in e.contributions] == sorted((c.contribution for c in e.contributions),
                                                                       reverse=True)
            assert set(e.dropped_terms) | {c.term for c in e.contributions} <= set(sent)
            checked += 1
    assert checked == 20
    # by docid: a hit's rank and score agree with the search
    query = tiny_index["queries"][0].text
    hit = explainer.search(query, 3)[2]
    e = explainer.explain(query, hit.docid)
    assert e.rank == 3 and e.score == float(hit.score) and e.exact


@pytest.mark.integration
def test_explain_command_json_and_errors(tiny_index, tiny_model, tiny_sae, capsys, tmp_path):
    from splare_pyserini import explain

    index, query = str(tiny_index["index"]), tiny_index["queries"][1].text
    labels = str(tiny_index["labels"].path)
    explain.cli(["--index", index, "--query", query, "--hits", "3", "--json", "--labels", labels,
                 "--html", str(tmp_path / "hits.html")])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(r["exact"] and r["sum"] == r["score"] for r in rows)
    for row in rows:
        assert {"docid", "score", "contributions"} <= set(row)
        for c in row["contributions"]:
            assert {"latent", "label", "contribution", "query_token", "doc_token"} <= set(c)
    page = (tmp_path / "hits.html").read_text(encoding="utf-8")
    assert all(r["docid"] in page for r in rows)
    # an unknown docid, and labels made for another model: one-line errors
    other = json.loads(Path(labels).read_text(encoding="utf-8").replace(tiny_index["labels"].header["model_hash"],
                                                                         "ffffffffffffffff"))
    (tmp_path / "other.json").write_text(json.dumps(other))
    for argv in (["--docid", "no-such-doc"], ["--hits", "1", "--labels", str(tmp_path / "other.json")]):
        with pytest.raises(SystemExit) as exit_info:
            explain.cli(["--index", index, "--query", query, *argv])
        assert exit_info.value.code == 2
        err = [line for line in capsys.readouterr().err.strip().splitlines()
               if not line.startswith("Loading weights")]  # transformers' own progress bar as the model loads
        assert len(err) == 1 and err[0].startswith("error:"), err
        assert ("no-such-doc" in err[0]) if "--docid" in argv else ("another model" in err[0])


@pytest.mark.integration
def test_vocabulary_twin_explanations_are_labelled_by_their_terms(tmp_path, tiny_model, scifact_slice):
    from splare_pyserini.datasets import load_beir
    from splare_pyserini.encode import encode_corpus
    from splare_pyserini.explain import explain
    from splare_pyserini.lucene.index import index_vectors
    from splare_pyserini.model.encoder import SaeSparseEncoder

    twin = SaeSparseEncoder(str(tiny_model), sae="vocab", layer=2, max_length=64)
    data = load_beir(scifact_slice)
    encode_corpus(data.corpus[:80], tmp_path / "vectors", twin, 32)
    index_vectors(tmp_path / "vectors", tmp_path / "index")
    query = data.queries[0].text
    from splare_pyserini.lucene.search import open_searcher

    searcher = open_searcher(tmp_path / "index", twin)
    docid = searcher.search(query, 1)[0].docid
    e = explain(searcher, query, docid)
    assert e.exact and e.rank == 1 and e.vocabulary
    names = twin.tokenizer.convert_ids_to_tokens([c.latent for c in e.contributions])
    assert [c.label for c in e.contributions] == names
