"""The LLM-prose corpus tool: topics from a vocabulary, the document plan, and a killed run that resumes to the
same file (a tiny random causal LM built in-process)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from helpers import build_tiny_tokenizer

TOOL = Path(__file__).resolve().parents[1] / "tools" / "corpora" / "llm_prose.py"
spec = importlib.util.spec_from_file_location("llm_prose", TOOL)
llm_prose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(llm_prose)


def test_topics_are_whole_words_past_the_frequent_ids() -> None:
    vocab = {"the": 10, "cathedral": 3000, "##dral": 3001, "[unused5]": 3002, "x1y2": 3003, "tax": 3004,
             "volcano": 2999, "glacier": 2600, "which": 1200, "café": 3005}
    assert llm_prose.vocabulary_topics(vocab) == ["glacier", "volcano", "cathedral"]


def test_plan_is_seeded_and_cycles_genres() -> None:
    topics = ["alpha", "bravo", "charlie"]
    plan = llm_prose.requests(topics, 7, seed=3)
    assert plan == llm_prose.requests(topics, 7, seed=3)
    assert [r[0] for r in plan] == [f"prose-{i:06d}" for i in range(7)]
    assert sorted(r[1] for r in plan[:3]) == topics and [r[1] for r in plan[3:6]] == [r[1] for r in plan[:3]]
    assert [r[2] for r in plan[:5]] == ["encyclopedia", "news", "explanation", "history", "encyclopedia"]
    assert plan[1][3] == f"Write a news report about {plan[1][1]}."
    letters = [chr(c) * 4 for c in range(ord("a"), ord("z") + 1)]
    assert [r[1] for r in llm_prose.requests(letters, 26, seed=3)] != [r[1] for r in llm_prose.requests(
        letters, 26, seed=4)]
    with pytest.raises(ValueError, match="no topics"):
        llm_prose.requests([], 3, seed=0)


def test_resume_point_cuts_a_torn_line_and_a_short_batch(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [json.dumps({"_id": f"prose-{i:06d}", "text": f"t{i}"}) + "\n" for i in range(5)]
    path.write_text("".join(lines) + '{"_id": "prose-0000')  # killed inside the sixth line
    assert llm_prose.resume_point(path, batch_size=2) == 4
    assert path.read_text() == "".join(lines[:4])
    assert llm_prose.resume_point(path, batch_size=4) == 4 and llm_prose.resume_point(tmp_path / "none", 4) == 0
    path.write_text(lines[0] + "garbage\n" + lines[2])  # not torn by a kill: refused, nothing cut
    with pytest.raises(ValueError, match=r"p.jsonl:2: not a JSON record"):
        llm_prose.resume_point(path, batch_size=1)
    assert path.read_text() == lines[0] + "garbage\n" + lines[2]


def build_tiny_causal_lm(path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(path, add_bos=False)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256, head_dim=8,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2)
    LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


def test_killed_run_resumes_to_the_same_corpus(tmp_path: Path) -> None:
    model = build_tiny_causal_lm(tmp_path / "lm")
    argv = ["--model", str(model), "--docs", "6", "--batch-size", "2", "--max-new-tokens", "6", "--threads", "1"]
    whole, killed = tmp_path / "whole.jsonl", tmp_path / "killed.jsonl"
    assert llm_prose.main(argv + ["--output", str(whole)]) == 0
    records = [json.loads(line) for line in whole.read_text().splitlines()]
    assert json.loads((tmp_path / "whole.jsonl.plan.json").read_text())["batch_size"] == 2  # kept for a resume
    assert [r["_id"] for r in records] == [f"prose-{i:06d}" for i in range(6)]
    assert all(r["text"].strip() and r["genre"] in {g for g, _ in llm_prose.GENRES} for r in records)
    assert [r["topic"] for r in records] == [r[1] for r in llm_prose.requests(
        llm_prose.vocabulary_topics(_minilm_vocab()), 6, seed=0)]
    text = whole.read_text()
    cut = text.index("prose-000003") + 20  # inside the fourth record: the second batch was half written
    killed.write_text(text[:cut])
    assert llm_prose.main(argv + ["--output", str(killed)]) == 0
    assert killed.read_text() == text
    assert llm_prose.main(argv + ["--output", str(killed)]) == 0  # finished: a rerun adds nothing
    assert killed.read_text() == text
    assert llm_prose.main(argv + ["--seed", "1", "--output", str(killed)]) == 2  # another plan: refused, untouched
    assert killed.read_text() == text
    assert llm_prose.main(argv[:4] + ["--batch-size", "3"] + argv[6:] + ["--output", str(killed)]) == 2
    assert killed.read_text() == text  # other batches would sample other text: refused too


def test_settings_are_kept_and_a_resume_under_others_is_refused(tmp_path: Path) -> None:
    plan = tmp_path / "c.jsonl.plan.json"
    settings = {"model": "smollm2-135m", "topics_from": None, "batch_size": 64, "max_new_tokens": 256, "seed": 0}
    llm_prose.check_settings(plan, settings)  # a first run: nothing to check, nothing written yet
    assert not plan.exists()
    llm_prose.record_settings(plan, settings)
    assert json.loads(plan.read_text()) == settings
    llm_prose.check_settings(plan, dict(settings))  # the same settings: a resume goes on
    with pytest.raises(ValueError, match=r"c\.jsonl\.plan\.json: batch_size is 64 for this corpus, not 32"):
        llm_prose.check_settings(plan, {**settings, "batch_size": 32})
    for bad in ("{torn", "[64]"):
        plan.write_text(bad)
        with pytest.raises(ValueError, match="not a JSON object"):
            llm_prose.check_settings(plan, settings)


def _minilm_vocab() -> dict[str, int]:
    from transformers import AutoTokenizer

    from splare_pyserini.model.artifacts import BASE_MODEL, resolve_path

    return AutoTokenizer.from_pretrained(resolve_path(BASE_MODEL)).get_vocab()
