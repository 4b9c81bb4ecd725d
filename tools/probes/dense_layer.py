#!/usr/bin/env python
"""Dense retrieval from one layer's hidden states, mean-pooled over real tokens (special and prepended sink tokens
left out, as SAE training and pooling leave them out), cosine similarity, exact search: what a layer's states
carry for retrieval before any SAE or fine-tuning reads them. Scored by ir-measures on a BEIR folder.

    python tools/probes/dense_layer.py --model smollm2-135m --layers 8 15 22 --beir runs/sae-sweep/slice-train \
        --split train --max-length 128
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from splare_pyserini.datasets import load_beir
from splare_pyserini.lucene.evaluate import ir_measures_scores
from splare_pyserini.model.backbone import TextBatcher, length_sorted_batches, load_backbone


@torch.inference_mode()
def embed(batcher: TextBatcher, backbone, texts: list[str], max_length: int) -> torch.Tensor:
    items = batcher.encode_all(texts, max_length)
    out = torch.zeros(len(texts), backbone.hidden_size)
    for idx in length_sorted_batches([len(ids) for ids, _ in items], 16):
        batch = batcher.collate([items[i] for i in idx])
        hidden = backbone(batch["input_ids"], batch["attention_mask"]).float()
        mask = batch["token_mask"].unsqueeze(-1).float()
        out[idx] = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--layers", type=int, nargs="+", required=True)
    parser.add_argument("--beir", required=True, help="a BEIR folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    data = load_beir(Path(args.beir), args.split, need_qrels=True)
    docs, queries = [r.text for r in data.corpus], [q.text for q in data.queries]
    for layer in args.layers:
        tokenizer, backbone = load_backbone(args.model, layer)
        batcher = TextBatcher.for_backbone(tokenizer, backbone)
        d, q = embed(batcher, backbone, docs, args.max_length), embed(batcher, backbone, queries, args.max_length)
        for centred in (False, True):  # LLM states share a large mean: cosine after removing the corpus mean too
            mean = d.mean(0) if centred else torch.zeros(d.shape[1])
            dn = torch.nn.functional.normalize(d - mean, dim=-1)
            qn = torch.nn.functional.normalize(q - mean, dim=-1)
            scores = qn @ dn.T
            top = scores.topk(min(100, len(docs)), dim=1)
            with tempfile.NamedTemporaryFile("w", suffix=".trec", delete=False) as run:
                for qi, rec in enumerate(data.queries):
                    for rank, (s, di) in enumerate(zip(top.values[qi].tolist(), top.indices[qi].tolist()), 1):
                        run.write(f"{rec.id} Q0 {data.corpus[di].id} {rank} {s:.6f} dense\n")
            got = ir_measures_scores(data.qrels, run.name, ["nDCG@10", "R@100"])
            print(f"{args.model} layer {layer}{' centred' if centred else ''}: nDCG@10 {got['nDCG@10']:.4f} "
                  f"R@100 {got['R@100']:.4f}", flush=True)


if __name__ == "__main__":
    main()
