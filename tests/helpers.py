"""Builders shared by the tests: a tiny random backbone and SAE made in-process, real SciFact slices."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from splare_pyserini.datasets import PACKAGED_BEIR, write_beir_slice
from splare_pyserini.model.artifacts import BASE_MODEL, resolve_path

TINY_HIDDEN = 32
TINY_LAYERS = 3
TINY_LAYER = 2
TINY_D_SAE = 64


def build_tiny_bert(path: Path, hidden: int = TINY_HIDDEN) -> Path:
    """A random 3-layer BERT with the real MiniLM tokenizer (offline)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(BASE_MODEL))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=TINY_LAYERS,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_sae(path: Path, d_in: int = TINY_HIDDEN, layer: int = TINY_LAYER, k: int = 8,
                   model_name: str = "tiny-bert") -> Path:
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    torch.manual_seed(1)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=TINY_D_SAE, k=k,
                        metadata=SAEMetadata(model_name=model_name, hook_name=f"encoder.layer.{layer - 1}"))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 1.0)
        sae.b_enc.zero_()
    sae.save_model(path)
    return path


def make_beir_slice(dest: Path, n_queries: int = 40, n_docs: int = 300, seed: int = 0) -> Path:
    """A BEIR folder: the first n test queries of the shipped SciFact, their relevant
    documents, and random other documents up to n_docs."""
    return write_beir_slice(PACKAGED_BEIR / "scifact", dest, n_queries, n_docs, seed=seed)


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


TOPICS = ["protein folding", "yeast genetics", "cancer immunotherapy", "gut microbiome", "malaria vaccine",
          "stem cells", "insulin resistance", "antibiotic resistance", "sleep deprivation", "gene editing"]


def build_tiny_beir(root: Path, topics: list[str] = TOPICS, prefix: str = "") -> Path:
    """A BEIR folder with a train split: three documents per topic, one judged query per topic."""
    docs, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for i, topic in enumerate(topics):
        for j in range(3):
            docs.append({"_id": f"{prefix}d{i}-{j}", "title": f"Study {j} of {topic}",
                         "text": f"We examine {topic} in cohort {j}. The {topic} results were significant. "
                                 f"Further work on {topic} is needed in sample {j}."})
        queries.append({"_id": f"{prefix}q{i}", "text": f"what is known about {topic}"})
        qrels.append(f"{prefix}q{i}\t{prefix}d{i}-0\t1")
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", docs)
    write_jsonl(root / "queries.jsonl", queries)
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    return root


def fail_if_called(what: str):
    """A stand-in for something a test says must not run (e.g. loading a model before validation)."""
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was called")
    return fail


def assert_resume_is_exact(whole_cfg, killed_cfg, steps_before_death: int) -> tuple[Path, Path]:
    """A run killed after ``steps_before_death`` steps and rerun exports the uninterrupted run's weights;
    returns both checkpoints."""
    from safetensors.torch import load_file

    from splare_pyserini.train import Trainer, train

    whole = train(whole_cfg)
    first = Trainer(killed_cfg)
    for _ in range(steps_before_death):
        first.log.append(first.train_step())
    first.save_state()  # then the process "dies"
    resumed = train(killed_cfg)
    a, b = load_file(str(whole / "backbone.safetensors")), load_file(str(resumed / "backbone.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return whole, resumed


DECODER_WORDS = sorted({w for topic in TOPICS for w in topic.split()} | set(
    "we examine in cohort the results were significant further work on is needed sample what known about "
    "study of a an and to".split()))


def build_tiny_tokenizer(path: Path, add_bos: bool):
    """A word-level decoder tokenizer built in-process: ``<bos>`` first when ``add_bos`` (as Gemma's), else
    no special token at all (as SmolLM2's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + DECODER_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                        unk_token="<unk>", pad_token="<pad>",
                                        padding_side="left" if add_bos else "right")
    tokenizer.save_pretrained(path)
    return tokenizer


def build_tiny_decoder(path: Path, kind: str = "llama", layers: int = TINY_LAYERS, sliding_window: int = 2,
                       attn_implementation: str = "sdpa") -> Path:
    """A random decoder built in-process: ``llama`` (SmolLM2's architecture; its tokenizer adds no BOS)
    or ``gemma3`` (Gemma-3's text model, every layer sliding-window with a tiny window but the last; its
    tokenizer adds <bos> and pads on the left, as Gemma's does)."""
    from transformers import Gemma3TextConfig, Gemma3TextModel, LlamaConfig, LlamaModel

    tokenizer = build_tiny_tokenizer(path, add_bos=kind == "gemma3")
    torch.manual_seed(0)
    common = dict(vocab_size=len(tokenizer), hidden_size=TINY_HIDDEN, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if kind == "llama":
        model = LlamaModel(LlamaConfig(**common, head_dim=8))
    elif kind == "gemma3":
        types = ["sliding_attention"] * (layers - 1) + ["full_attention"] if layers > 1 else ["sliding_attention"]
        model = Gemma3TextModel(Gemma3TextConfig(**common, head_dim=8, sliding_window=sliding_window,
                                                 layer_types=types, query_pre_attn_scalar=8))
    else:
        raise ValueError(kind)
    model.config._attn_implementation = attn_implementation
    model.eval().save_pretrained(path)
    return path
