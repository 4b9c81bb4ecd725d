"""One training run over several sources: each batch from one source, weights honoured, resumable;
and the dense teacher's embeddings computed once, kept on disk."""
import pytest
import torch

from helpers import TOPICS, assert_resume_is_exact, build_tiny_beir
from splare_pyserini.errors import InputError
from splare_pyserini.train import TrainConfig, Trainer
from splare_pyserini.training.sources import SourceSpec
from splare_pyserini.training.teacher import CachedTeacher


COMPUTING = ["compiler design", "operating systems", "database indexes", "network protocols",
             "garbage collection", "cache memory", "file systems", "parallel algorithms"]


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    medical = build_tiny_beir(root / "medical")
    computing = build_tiny_beir(root / "computing", COMPUTING, prefix="c")
    return medical, computing


def config(tmp_path, two_sets, tiny_model, tiny_sae, **changes):
    medical, computing = two_sets
    base = dict(sources=(f"{medical}:train=3", f"{computing}:corpus"), output=str(tmp_path / "run"),
                model=str(tiny_model), sae=str(tiny_sae), steps=6, batch_size=4, warmup_steps=1, flops_warmup=2,
                doc_max_length=48, query_max_length=16, save_every=3, negatives="none")
    return TrainConfig(**{**base, **changes})


def test_source_specs():
    assert SourceSpec.parse("scifact") == SourceSpec("scifact", "train", 1.0)
    assert SourceSpec.parse("nfcorpus:corpus=0.5") == SourceSpec("nfcorpus", "corpus", 0.5)
    assert SourceSpec.parse("/data/my:set:train=2") == SourceSpec("/data/my:set", "train", 2.0)
    for bad in ("scifact=0", "scifact=x", ":train", "=2"):
        with pytest.raises(InputError, match="sources: .* is not <dataset>"):
            SourceSpec.parse(bad)
    with pytest.raises(InputError, match="sources:"):
        TrainConfig(sources=("scifact=-1",))


def test_each_batch_comes_from_one_source_and_resume_is_exact(tmp_path, two_sets, tiny_model, tiny_sae):
    trainer = Trainer(config(tmp_path / "a", two_sets, tiny_model, tiny_sae, steps=40))
    names = []
    for _ in range(40):
        batch = trainer.sampler.next_batch()
        names.append(trainer.sampler.last)
        topics = TOPICS if trainer.sampler.last.endswith(":train") else COMPUTING
        assert all(any(t in doc for t in topics) for doc in batch.documents)  # in-batch negatives share a domain
    assert 20 <= names.count("medical:train") <= 38  # weight 3 against 1
    assert "computing:corpus" in names

    assert_resume_is_exact(config(tmp_path / "b", two_sets, tiny_model, tiny_sae),
                           config(tmp_path / "c", two_sets, tiny_model, tiny_sae), steps_before_death=3)


class CountingEncoder:
    def __init__(self):
        self.seen = []

    def encode(self, texts, batch_size=32):
        self.seen.extend(texts)
        return torch.nn.functional.normalize(torch.stack([torch.tensor([float(len(t)), 1.0, t.count("a")])
                                                          for t in texts]), dim=-1)


def test_teacher_embeddings_are_computed_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.setattr("splare_pyserini.training.teacher.FLUSH_EVERY", 2)
    first = CachedTeacher(CountingEncoder(), tmp_path)
    scores = first.scores(["a query", "another query"], ["doc a", "doc b", "doc a"])
    assert scores.shape == (2, 3) and torch.allclose(scores[:, 0], scores[:, 2])
    assert len(first.encoder.seen) == 4  # "doc a" twice in the request, embedded once
    first.flush()
    again = CachedTeacher(CountingEncoder(), tmp_path)  # a rerun, or another model on the same texts
    assert torch.equal(again.scores(["a query", "another query"], ["doc a", "doc b", "doc a"]), scores)
    assert again.encoder.seen == []
    again.embed(["new text"])
    assert again.encoder.seen == ["new text"]


def test_a_prompted_teacher_embeds_queries_and_documents_with_its_prefixes(tmp_path):
    encoder = CountingEncoder()
    encoder.query_prefix, encoder.document_prefix = "query: ", "passage: "
    teacher = CachedTeacher(encoder, tmp_path)
    scores = teacher.scores(["same text"], ["same text", "doc b"])
    assert sorted(encoder.seen) == ["passage: doc b", "passage: same text", "query: same text"]
    query = encoder.encode(["query: same text"]).half().float()
    documents = encoder.encode(["passage: same text", "passage: doc b"]).half().float()
    assert torch.equal(scores, query @ documents.T)
    unprompted = CachedTeacher(CountingEncoder(), tmp_path / "plain")
    unprompted.scores(["same text"], ["same text"])
    assert unprompted.encoder.seen == ["same text"]  # one text, one embedding: the keys of an unprompted teacher


def test_runs_sharing_a_teacher_cache_read_each_others_new_embeddings(tmp_path):
    """SPLARE and its twin trained at once on one cache: what one embedded, the other does not embed again."""
    first = CachedTeacher(CountingEncoder(), tmp_path)
    second = CachedTeacher(CountingEncoder(), tmp_path)  # started before the first wrote anything
    expected = first.embed(["shared text", "first only"])
    first.flush()
    assert torch.equal(second.embed(["shared text", "new text"])[0], expected[0])
    assert second.encoder.seen == ["new text"]
    second.flush()
    first.embed(["new text"])
    assert first.encoder.seen == ["first only", "shared text"]  # read the second's part instead
    assert len(first.parts) == len(second.parts) == 2


def test_a_live_writers_temp_survives_another_runs_start(tmp_path):
    """Only a killed run's temp is stale: a run starting on a shared folder leaves a live writer's temp alone."""
    import socket
    import subprocess
    import sys

    from splare_pyserini.io import remove_stale_temps, tmp_name

    live = tmp_name(tmp_path / "part-00000-live.pt")  # this process: alive
    dead_process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True)
    dead = tmp_path / f".part-00001-dead.pt.tmp-{socket.gethostname()}-{dead_process.stdout.strip()}"
    for path in (live, dead):
        path.write_bytes(b"partial")
    CachedTeacher(CountingEncoder(), tmp_path)
    assert live.exists() and not dead.exists()
    remove_stale_temps(tmp_path)
    assert live.exists()


def test_dense_batches_by_length_keep_each_texts_own_embedding(tiny_model):
    """Length-sorted batches (a short query never padded to a long document) return the texts in their order,
    each as it embeds alone."""
    from splare_pyserini.model.dense import DenseEncoder

    encoder = DenseEncoder(str(tiny_model))
    texts = ["a short one", "a much longer text " * 12, "mid length text here", "x", "another longer text " * 5]
    together = encoder.encode(texts, batch_size=2)
    alone = torch.cat([encoder.encode([t]) for t in texts])
    assert together.shape == (5, encoder.model.config.hidden_size)
    assert torch.allclose(together, alone, atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.model.config.hidden_size)


def test_a_bfloat16_teacher_is_close_and_cached_apart(tmp_path, tiny_model):
    from splare_pyserini.config import parse_config
    from splare_pyserini.errors import InputError
    from splare_pyserini.model.dense import DenseEncoder
    from splare_pyserini.training.trainer import TrainConfig

    texts = ["a query about cells", "a document about the immune response of cells " * 4]
    exact = DenseEncoder(str(tiny_model)).encode(texts)
    fast = DenseEncoder(str(tiny_model), dtype="bfloat16").encode(texts)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)  # autocast did run in bfloat16
    assert torch.nn.functional.cosine_similarity(fast, exact).min() > 0.99
    plain = CachedTeacher.for_model(str(tiny_model), tmp_path)
    bf16 = CachedTeacher.for_model(str(tiny_model), tmp_path, dtype="bfloat16")
    assert bf16.folder.name == plain.folder.name + "-bfloat16"
    with pytest.raises(InputError, match="teacher_dtype"):
        parse_config(TrainConfig, ["--teacher-dtype", "float16"], "train")
