"""How far fine-tuning moves MiniLM's layer-6 states off the frozen SAE's training distribution (README,
"More fine-tuning (GPU)"): the SAE's explained variance on the states each model gives, on 200 NFCorpus and 200
SciFact documents, and the mean cosine of each token's state to the base model's.

    python tools/sae_fit/drift.py "<label>=<checkpoint>" ...      # the base MiniLM is always the first row
"""
import json, sys
import torch
from splare_pyserini.encode import load_input
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.model.backbone import collect_activations
from splare_pyserini.model.projection import load_sae
from splare_pyserini.training.sae import reconstruction_stats

torch.manual_seed(0)
SAE = "minilm-l6-layer6-topk-sae-v3"
BASE = "base MiniLM (no fine-tuning)"
MODELS = {BASE: "sentence-transformers/all-MiniLM-L6-v2"} | dict(a.split("=", 1) for a in sys.argv[1:])
sae = load_sae(SAE)
texts = {}
for ds in ("nfcorpus", "scifact"):
    docs, _, _ = load_input(ds, "corpus", "test")
    texts[ds] = [d.text for d in docs[::max(1, len(docs) // 200)][:200]]
base = {}
for label, model in MODELS.items():
    enc = SaeSparseEncoder(model, sae=SAE) if label == BASE else SaeSparseEncoder(model)  # a checkpoint: its own SAE
    row = {"model": label}
    for ds, tx in texts.items():
        with torch.no_grad():
            x = collect_activations(enc.batcher, enc.model.backbone, tx, 192, max_tokens=20000)
        row[f"ev_{ds}"] = reconstruction_stats(sae, x)["explained_variance"]
        base.setdefault(ds, x)
        row[f"cos_base_{ds}"] = round(torch.nn.functional.cosine_similarity(x, base[ds], dim=-1).mean().item(), 4)
    print(json.dumps(row), flush=True)
