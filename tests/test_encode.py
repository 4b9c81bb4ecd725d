import json
import re

import pytest
import torch

from helpers import build_tiny_bert, write_jsonl
from splare_pyserini.datasets import TextRecord
from splare_pyserini.encode import encode_corpus, encode_queries, main as encode_main
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.model.quantize import pretokenize
from splare_pyserini.model.settings import EncoderSettings
from splare_pyserini.errors import ArtifactError, InputError

DOCS = [{"_id": f"d{i}", "title": f"Title {i}", "text": "protein folding " * (i % 7 + 1) + f"doc {i}"}
        for i in range(23)]


def read_lines(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_corpus_output_is_json_vector_collection(tmp_path, tiny_encoder):
    records = [TextRecord(d["_id"], f"{d['title']} {d['text']}") for d in DOCS[:5]]
    summary = encode_corpus(records, tmp_path, tiny_encoder, batch_size=2, chunk_size=3)
    files = sorted((tmp_path / "corpus").iterdir())
    assert [f.name for f in files] == ["part-000-00000.jsonl", "part-000-00001.jsonl"]
    rows = [row for f in files for row in read_lines(f)]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(5)]  # input order despite length sorting
    for row in rows:
        assert list(row) == ["id", "contents", "vector"]
        assert row["vector"] and all(re.fullmatch(r"L\d+", t) for t in row["vector"])
        assert all(isinstance(w, int) and w > 0 for w in row["vector"].values())
        assert max(int(t[1:]) for t in row["vector"]) < 64
    assert summary.encoded == 5 and summary.empty == 0
    info = json.loads((tmp_path / "encode_info.json").read_text())
    assert info["layer"] == 2 and info["d_sae"] == 64 and info["quant_scale"] == 100.0


def test_vectors_do_not_depend_on_batching(tiny_encoder):
    texts = [f"{d['title']} {d['text']}" for d in DOCS[:9]]
    batched = tiny_encoder.encode_documents(texts, batch_size=4)
    single = [tiny_encoder.encode_documents([t], batch_size=1)[0] for t in texts]
    assert batched == single


def test_one_pass_batches_equal_the_tokenizers_own_padded_batch(tiny_encoder):
    """Encoding tokenizes every text once and pads batches itself: the same ids, attention and real-token
    mask as the tokenizer's padded call, for empty, short, truncated and multilingual texts."""
    import torch

    batcher = tiny_encoder.batcher
    texts = ["", "x", "sparse latents " * 400, "مرحبا بالعالم 你好", "a short text"]
    for max_length in (64, 8):
        ref = batcher.tokenize(texts, max_length)
        got = batcher(texts, max_length)
        assert torch.equal(got["input_ids"], ref["input_ids"])
        assert torch.equal(got["attention_mask"], ref["attention_mask"])
        assert torch.equal(got["token_mask"], ref["attention_mask"].bool() & ~ref["special_tokens_mask"].bool())
        assert batcher.lengths(texts, max_length) == ref["attention_mask"].sum(dim=1).tolist()


def test_query_outputs_agree(tmp_path, tiny_encoder):
    from splare_pyserini.datasets import TextRecord

    queries = [TextRecord("q1", "what\tis  protein\nfolding?"), TextRecord("q2", "")]
    summary = encode_queries(queries, tmp_path, tiny_encoder)
    assert (tmp_path / "topics.tsv").read_text() == "q1\twhat is protein folding?\nq2\t\n"
    rows = read_lines(tmp_path / "queries.jsonl")
    assert [r["contents"] for r in rows] == ["what is protein folding?", ""]
    assert rows[1]["vector"] == {} and summary.empty == 1  # empty text: empty vector, counted
    pretok = (tmp_path / "queries.tsv").read_text().splitlines()
    assert pretok[0] == "q1\t" + pretokenize(rows[0]["vector"])


def test_empty_document_gives_empty_vector_and_is_counted(tmp_path, tiny_model, tiny_sae):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "a", "title": "", "text": ""}, DOCS[0]])
    encode_main(["--input", str(path), "--output", str(tmp_path / "out"), "--model", str(tiny_model),
                 "--sae", str(tiny_sae)])
    rows = read_lines(tmp_path / "out" / "corpus" / "part-000-00000.jsonl")
    assert rows[0] == {"id": "a", "contents": "", "vector": {}} and rows[1]["vector"]
    assert json.loads((tmp_path / "out" / "stats" / "part-000-00000.json").read_text())["empty"] == 1


def test_shards_partition_the_corpus_and_resume_is_byte_identical(tmp_path, tiny_model, tiny_sae):
    path = write_jsonl(tmp_path / "c.jsonl", DOCS)
    common = ["--input", str(path), "--model", str(tiny_model), "--sae", str(tiny_sae), "--chunk-size", "5"]
    encode_main(common + ["--output", str(tmp_path / "whole")])
    for shard in ("0", "1"):
        encode_main(common + ["--output", str(tmp_path / "sharded"), "--shard-id", shard, "--shard-num", "2"])
    whole = [r for f in sorted((tmp_path / "whole" / "corpus").iterdir()) for r in read_lines(f)]
    sharded = [r for f in sorted((tmp_path / "sharded" / "corpus").iterdir()) for r in read_lines(f)]
    assert sharded == whole and len(whole) == len(DOCS)
    # an interrupted run: a chunk is missing and a stale temp file is left behind
    corpus = tmp_path / "whole" / "corpus"
    before = {f.name: f.read_bytes() for f in corpus.iterdir()}
    (corpus / "part-000-00002.jsonl").unlink()
    (corpus / ".part-000-00003.jsonl.tmp-999").write_text('{"id": "half')
    mtimes = {f.name: f.stat().st_mtime_ns for f in corpus.iterdir() if not f.name.startswith(".")}
    encode_main(common + ["--output", str(tmp_path / "whole")])
    assert {f.name: f.read_bytes() for f in corpus.iterdir()} == before
    assert all(corpus.joinpath(n).stat().st_mtime_ns == t for n, t in mtimes.items())  # finished chunks untouched


def test_other_settings_in_same_output_are_refused(tmp_path, tiny_model, tiny_sae):
    path = write_jsonl(tmp_path / "c.jsonl", DOCS[:3])
    args = ["--input", str(path), "--output", str(tmp_path / "o"), "--model", str(tiny_model), "--sae", str(tiny_sae)]
    encode_main(args)
    with pytest.raises(ArtifactError, match="quant_scale"):
        encode_main(args + ["--quant-scale", "7"])
    with pytest.raises(ArtifactError, match=r"holds a corpus encoded from other input or with other options .*'windows': 2"):
        encode_main(args + ["--windows", "2"])  # documents only: not a compatibility key of queries
    info = json.loads((tmp_path / "o" / "encode_info.json").read_text())
    assert "windows" not in info["corpus"] and info["windows"] == 1


def test_hidden_size_mismatch_is_refused_before_any_work(tmp_path, monkeypatch):
    from helpers import build_tiny_sae

    wide = build_tiny_bert(tmp_path / "wide-bert", hidden=48)
    tiny_sae = build_tiny_sae(tmp_path / "sae", d_in=32, model_name=str(wide))
    import splare_pyserini.model.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "load_backbone", lambda *a, **k: pytest.fail("weights were loaded"))
    with pytest.raises(ArtifactError, match=r"hidden size 48 but the SAE expects d_in=32"):
        SaeSparseEncoder(EncoderSettings(model=str(wide), sae=str(tiny_sae)))


def test_layer_other_than_the_saes_is_refused(tiny_model, tiny_sae):
    with pytest.raises(ArtifactError, match=r"layer 3 differs from the layer the SAE was trained on \(2"):
        SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tiny_sae), layer=3))


def test_sae_recorded_for_another_model_is_refused(tmp_path, tiny_model):
    from helpers import build_tiny_sae

    other = build_tiny_sae(tmp_path / "sae", model_name="google/gemma-2-2b")
    with pytest.raises(ArtifactError, match=r"trained on model 'google/gemma-2-2b', not"):
        SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(other)))


def test_corrupt_sae_weights_are_reported(tmp_path, tiny_model, tiny_sae):
    import shutil

    shutil.copytree(tiny_sae, tmp_path / "sae")
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"SAE .*sae: cannot load"):
        SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tmp_path / "sae")))


def test_missing_sae_weights_are_reported(tmp_path, tiny_model):
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text("{}")
    with pytest.raises(ArtifactError, match="missing sae_weights.safetensors"):
        SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tmp_path / "sae")))


def test_cli_user_error_is_one_line_without_traceback(tmp_path, tiny_model, tiny_sae):
    import subprocess
    import sys

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"_id": "a", "text": "x"}, "{oops"])
    proc = subprocess.run([sys.executable, "-m", "splare_pyserini.encode", "--input", str(bad), "--output",
                           str(tmp_path / "o"), "--model", str(tiny_model), "--sae", str(tiny_sae)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {bad}:2: malformed JSON (Expecting property name " \
                                                   "enclosed in double quotes at column 2)"
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_one_megabyte_document_is_truncated_and_counted(tmp_path, tiny_model, tiny_sae):
    huge = "protein " * 131_072  # 1 MiB of text
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "huge", "text": huge}, {"_id": "small", "text": "yeast"}])
    encode_main(["--input", str(path), "--output", str(tmp_path / "o"), "--model", str(tiny_model),
                 "--sae", str(tiny_sae), "--max-length", "64"])
    stats = json.loads((tmp_path / "o" / "stats" / "part-000-00000.json").read_text())
    assert stats == {**stats, "encoded": 2, "truncated": 1, "empty": 0}
    rows = read_lines(tmp_path / "o" / "corpus" / "part-000-00000.jsonl")
    assert rows[0]["id"] == "huge" and rows[0]["vector"]


def test_pooling_is_max_over_real_tokens_of_log1p_relu(tiny_encoder):
    texts = ["short text", "a somewhat longer text about protein folding in yeast"]
    batch = tiny_encoder.tokenize(texts)
    model = tiny_encoder.model
    with torch.no_grad():
        hidden = model.backbone(batch["input_ids"], batch["attention_mask"])
        got = model(**batch)
        for row, text in enumerate(texts):
            n = len(tiny_encoder.tokenizer(text)["input_ids"])
            real = hidden[row, 1:n - 1]  # drop [CLS] and [SEP]; padding lies beyond n
            expected = torch.log1p(torch.relu(model.projection.encode(real))).amax(dim=0)
            torch.testing.assert_close(got[row], expected)
    sum_model = type(model)(model.backbone, model.projection, "sum")
    with torch.no_grad():
        total = sum_model(**batch)[0]
        real = hidden[0, 1:len(tiny_encoder.tokenizer(texts[0])["input_ids"]) - 1]
        torch.testing.assert_close(total, torch.log1p(torch.relu(model.projection.encode(real))).sum(dim=0))


def test_token_k_keeps_each_tokens_largest_latents_by_hand(tiny_model, tiny_sae):
    """``token_k``: each real token keeps its token_k largest pre-activations of the TopK SAE (not its k),
    then relu, max over the text's tokens, log1p."""
    from splare_pyserini.model.projection import topk_plan

    texts = ["protein folding in yeast", "a second, somewhat longer text about heat shock chaperones"]
    encoder = SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), max_length=64, token_k=2)
    plan = topk_plan(encoder.model.projection)
    assert plan.k > 2 and encoder.settings.token_k == 2
    batch = encoder.tokenize(texts)
    with torch.no_grad():
        hidden = encoder.model.backbone(batch["input_ids"], batch["attention_mask"])
        got = encoder.model(**batch)
    for row in range(len(texts)):
        real = hidden[row][batch["token_mask"][row].bool()]
        pre = plan.prepare(real) @ plan.weight + plan.bias
        kept = torch.zeros_like(pre).scatter(1, pre.topk(2, dim=1).indices, pre.topk(2, dim=1).values)
        torch.testing.assert_close(got[row], torch.log1p(torch.relu(kept).amax(dim=0)))
    own = SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), max_length=64, token_k=plan.k)
    assert own.settings.token_k is None  # the SAE's own k is recorded as no override
    with pytest.raises(InputError, match=f"token_k: {plan.k + 1} needs a TopK projection with k >= {plan.k + 1}"):
        SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), token_k=plan.k + 1)


def test_corrupt_model_weights_are_reported(tmp_path, tiny_model, tiny_sae):
    import shutil

    from splare_pyserini.model.backbone import load_backbone

    shutil.copytree(tiny_model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=r"cannot load model '.*m' \("):
        load_backbone(str(tmp_path / "m"), layer=1)


def _dense_and_sparse(model, batch):
    """Pooled weights and gradients (backbone and projection) of sae-lens's dense ``encode`` path
    and of the TopK path, on one batch; plus the TopK path under inference mode."""
    from splare_pyserini.model.projection import topk_plan

    for param in model.parameters():
        param.requires_grad_(True)
    upstream = None
    out = {}
    for path in ("dense", "topk"):
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            hidden = model.backbone(batch["input_ids"], batch["attention_mask"])
            mask = batch["token_mask"].bool()
            tokens, lengths = hidden[mask], mask.sum(dim=1).tolist()
            pooled = (model.pool_dense(tokens, lengths) if path == "dense"
                      else model.pool_topk(topk_plan(model.projection), tokens, lengths))
            if upstream is None:
                upstream = torch.randn(pooled.shape, generator=torch.Generator().manual_seed(0))
            (pooled * upstream).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[path] = (pooled.detach(), grads)
    with torch.inference_mode():
        inference = model(**batch)
    return out["dense"], out["topk"], inference


@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_topk_path_matches_sae_lens_dense_encode_values_and_gradients(tmp_path, tiny_model, pooling):
    """b_dec subtracted from the input and decoder-norm rescaling must carry over to the fast path."""
    from sae_lens import SAE
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    from splare_pyserini.model.projection import topk_plan
    from splare_pyserini.model.projection import VocabProjection

    torch.manual_seed(3)
    cfg = TopKSAEConfig(d_in=32, d_sae=256, k=8, apply_b_dec_to_input=True, rescale_acts_by_decoder_norm=True,
                        metadata=SAEMetadata(model_name=str(tiny_model), hook_name="encoder.layer.1"))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            p.normal_(0, 0.5)
    sae.save_model(tmp_path / "sae")
    encoder = SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(tmp_path / "sae"),
                                               max_length=64, pooling=pooling))
    assert topk_plan(encoder.model.projection) is not None and isinstance(SAE.load_from_disk(tmp_path / "sae"), TopKSAE)
    batch = encoder.tokenize(["short text", "", "a somewhat longer text about protein folding in yeast"])
    for model in (encoder.model, type(encoder.model)(
            encoder.model.backbone, VocabProjection(encoder.model.backbone.model.get_input_embeddings()), pooling)):
        (dense, dense_grads), (sparse, sparse_grads), inference = _dense_and_sparse(model, batch)
        assert dense.count_nonzero() > 0 and sparse[1].count_nonzero() == 0
        torch.testing.assert_close(sparse, dense)
        torch.testing.assert_close(inference, dense)
        assert dense_grads.keys() == sparse_grads.keys()
        assert any(name.startswith("projection.") for name in dense_grads) or isinstance(model.projection, VocabProjection)
        assert sum(float(g.abs().sum()) for g in dense_grads.values()) > 0
        for name, grad in dense_grads.items():
            torch.testing.assert_close(sparse_grads[name], grad, msg=lambda m, n=name: f"{n}: {m}")
