#!/usr/bin/env python
"""Causal language-model loss of a converted decoder on a shipped collection's documents: a check that the
weights as converted (4-bit GGUF, dequantized) still model text, apart from anything retrieval does with them.

    python tools/probes/lm_loss.py smollm2-135m --dataset scifact --docs 8 --max-length 128
"""
from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from splare_pyserini.datasets import load_beir, resolve_beir_folder
from splare_pyserini.model.fetch import fetched_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model name (smollm2-135m, gemma-3-270m) or folder")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--docs", type=int, default=8, help="first N documents of the corpus")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--prompt", default="The capital of France is", help="greedy continuation printed last")
    args = parser.parse_args()
    path = fetched_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    corpus = load_beir(resolve_beir_folder(args.dataset), "test").corpus[:args.docs]
    nats = tokens = 0.0
    for record in corpus:
        ids = tokenizer(record.text, return_tensors="pt", truncation=True, max_length=args.max_length).input_ids
        with torch.inference_mode():
            loss = model(ids, labels=ids).loss.item()
        nats += loss * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
    print(f"{args.model}: {nats / tokens:.3f} nats per token over {int(tokens)} predicted tokens of "
          f"{len(corpus)} {args.dataset} documents (a uniform guess: {torch.log(torch.tensor(float(len(tokenizer)))):.1f})")
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    print(repr(tokenizer.decode(out[0])))


if __name__ == "__main__":
    main()
