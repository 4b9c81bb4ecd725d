"""General English running prose written by a small local LLM, as a JSONL corpus for training an SAE offline.

The SAEs trained here on the shipped collections' text tie their vocabulary twins out of domain, while a
public SAE trained on general text beats its twin; WordNet's one-line definitions, the one broad English
text this machine can install, made a worse SAE, perhaps because they are not running prose. This machine
reaches no web corpus, but it has decoder LLMs that load offline (``smollm2-135m``, ``gemma-3-270m``): this
writes prose with one of them over topics spread across the language, so an SAE can be trained on general
running text. The text is the LLM's: fluent, general in vocabulary and subject, and not factual (it is
training text for a feature dictionary, never a source of facts).

Topics are the whole words of a tokenizer's vocabulary (default MiniLM's WordPiece vocabulary, itself drawn
from Wikipedia and books), past its most frequent ids (function words), shuffled by ``--seed``; each
document asks for one of a few genres (encyclopedia article, news report, explanation, history). One record
per document, ``{"_id": "prose-000017", "text": ..., "topic": ..., "genre": ...}``, in batches of
``--batch-size``; killed, the same command resumes after the last whole batch and writes the same text it
would have (each batch's sampling is seeded by its index). The settings that shape the text (model, batch size,
token budget, seed, topic vocabulary) are kept beside the corpus in ``<output>.plan.json``; a resume with
other settings is refused, since it would write different text than the corpus's first run.

    python tools/corpora/llm_prose.py --model smollm2-135m --docs 2000 --output runs/corpora/prose.jsonl
    python -m splare_pyserini.train_sae --input nfcorpus cranfield cacm runs/corpora/prose.jsonl --layer 6 \
        --d-sae 8192 --k 32 --steps 5000 --output runs/prose-sae
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

GENRES = (
    ("encyclopedia", "Write an encyclopedia article about {topic}."),
    ("news", "Write a news report about {topic}."),
    ("explanation", "Explain {topic} to a high-school student."),
    ("history", "Write a short history of {topic}."),
)
SKIP_MOST_FREQUENT = 2500  # WordPiece ids below this are mostly function words and punctuation
MIN_TOPIC_CHARS = 4


def vocabulary_topics(vocab: dict[str, int], skip_below: int = SKIP_MOST_FREQUENT) -> list[str]:
    """Whole alphabetic words of a WordPiece vocabulary (no ``##`` pieces, no ``[unused]``), in id order."""
    words = [(i, w) for w, i in vocab.items()
             if i >= skip_below and w.isascii() and w.isalpha() and len(w) >= MIN_TOPIC_CHARS]
    return [w for _, w in sorted(words)]


def requests(topics: Sequence[str], docs: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(id, topic, genre, prompt) of each document: topics shuffled by ``seed``, genres in turn."""
    if not topics:
        raise ValueError("no topics: the vocabulary gave no whole words")
    order = list(topics)
    random.Random(seed).shuffle(order)
    out = []
    for i in range(docs):
        topic = order[i % len(order)]
        genre, template = GENRES[i % len(GENRES)]
        out.append((f"prose-{i:06d}", topic, genre, template.format(topic=topic)))
    return out


def resume_point(path: Path, batch_size: int, plan: Sequence[tuple[str, str, str, str]] = ()) -> int:
    """Documents already written in whole batches; what follows them (a batch cut short, a torn last line) is
    cut off the file, so the next batch starts clean. A record that is not the plan's (another ``--seed`` or
    ``--topics-from``), or a malformed line before the last, is an error naming the line: nothing is cut."""
    if not path.exists():
        return 0
    ends = [0]
    with open(path, "rb") as handle:
        lines = handle.readlines()
    for lineno, line in enumerate(lines, start=1):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            record = None
        if record is None:
            if lineno < len(lines):
                raise ValueError(f"{path}:{lineno}: not a JSON record (not a file this tool wrote?)")
            break  # the last line, torn by a kill
        if lineno <= len(plan) and (record.get("_id"), record.get("topic")) != plan[lineno - 1][:2]:
            raise ValueError(f"{path}:{lineno}: {record.get('_id')} on {record.get('topic')!r} is not this plan's "
                             f"{plan[lineno - 1][0]} on {plan[lineno - 1][1]!r} (another --seed or --topics-from?)")
        ends.append(ends[-1] + len(line))
    kept = len(ends) - 1
    whole = kept - kept % batch_size
    with open(path, "r+b") as handle:
        handle.truncate(ends[whole])
    return whole


def check_settings(path: Path, settings: dict) -> None:
    """Refuse, naming the first differing field, to resume a corpus under other settings than those kept in
    ``path`` (``<output>.plan.json``) when it was started; nothing to check before a first run."""
    if not path.exists():
        return
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        kept = None
    if not isinstance(kept, dict):
        raise ValueError(f"{path}: not a JSON object (not a file this tool wrote?)")
    for field, value in settings.items():
        if kept.get(field) != value:
            raise ValueError(f"{path}: {field} is {kept.get(field)!r} for this corpus, not {value!r} "
                             f"(resume it with the same settings, or write to another --output)")


def record_settings(path: Path, settings: dict) -> None:
    """Keep the settings a corpus is written with beside it, for :func:`check_settings` on a resume."""
    if not path.exists():
        path.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")


def prompt_texts(tokenizer, prompts: Sequence[str]) -> list[str]:
    """Each prompt as the model expects it: through its chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    return list(prompts)


def generate_batch(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, seed: int) -> list[str]:
    import torch

    enc = tokenizer(prompt_texts(tokenizer, prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8, top_p=0.95,
                             repetition_penalty=1.1, pad_token_id=tokenizer.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    return [" ".join(tokenizer.decode(row, skip_special_tokens=True).split()) for row in new]


def write_corpus(model, tokenizer, todo: list[tuple[str, str, str, str]], output: Path, start: int,
                 batch_size: int, max_new_tokens: int, seed: int) -> Iterator[int]:
    """Append ``todo``'s documents from ``start`` (a :func:`resume_point`) batch by batch (each batch one
    write, flushed to disk); yields after each."""
    with open(output, "a", encoding="utf-8") as handle:
        for first in range(start, len(todo), batch_size):
            batch = todo[first:first + batch_size]
            texts = generate_batch(model, tokenizer, [r[3] for r in batch], max_new_tokens,
                                   seed * 1_000_003 + first // batch_size)
            handle.write("".join(json.dumps({"_id": doc_id, "text": text, "topic": topic, "genre": genre},
                                            ensure_ascii=False) + "\n"
                                 for (doc_id, topic, genre, _), text in zip(batch, texts)))
            handle.flush()
            os.fsync(handle.fileno())
            yield len(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a causal LM: offline name, folder or hub id")
    parser.add_argument("--topics-from", default=None, help="a WordPiece tokenizer whose whole words are the topics "
                        "(default: MiniLM's)")
    parser.add_argument("--docs", type=int, required=True, help="documents to write in all (a rerun resumes)")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts generated together")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens generated per document at most")
    parser.add_argument("--seed", type=int, default=0, help="topic order and sampling")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", required=True, help="JSONL file (appended to; a rerun resumes)")
    args = parser.parse_args(argv)
    if args.docs < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        parser.error("--docs, --batch-size and --max-new-tokens must be at least 1")

    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from splare_pyserini.model.artifacts import BASE_MODEL, resolve_path

    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = AutoTokenizer.from_pretrained(resolve_path(args.topics_from or BASE_MODEL)).get_vocab()
    todo = requests(vocabulary_topics(vocab), args.docs, args.seed)
    path = resolve_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # generation continues each prompt from its last real token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"model": args.model, "topics_from": args.topics_from, "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    plan = out.with_name(out.name + ".plan.json")
    try:
        check_settings(plan, settings)
        done = resume_point(out, args.batch_size, todo)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    record_settings(plan, settings)  # only once the output is known good: a refused run writes nothing
    started = time.time()
    with tqdm(total=len(todo), initial=min(done, len(todo)), unit="doc", desc="prose") as bar:
        for n in write_corpus(model, tokenizer, todo, out, done, args.batch_size, args.max_new_tokens, args.seed):
            bar.update(n)
    print(f"{len(todo)} documents in {out} ({time.time() - started:.0f} s this run)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
