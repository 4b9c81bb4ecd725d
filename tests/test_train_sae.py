import json

import torch

from conftest import write_jsonl
from splare_pyserini.encoder import EncoderSettings, SaeSparseEncoder
from splare_pyserini.train_sae import train_sae


def test_train_sae_round_trips_through_sae_lens(tmp_path, tiny_model):
    from sae_lens import SAE

    corpus = write_jsonl(tmp_path / "c.jsonl", [{"_id": str(i), "text": f"cells {i} protein folding in yeast " * 3}
                                                for i in range(40)])
    out = train_sae(str(corpus), tmp_path / "sae", model=str(tiny_model), layer=2, d_sae=48, k=4, steps=6,
                    batch_size=64, max_length=32, max_tokens=2000)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "cfg.json", "sae_weights.safetensors",
                                                     "training.json"]
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["dtype"] == "float16" and cfg["d_sae"] == 48 and cfg["k"] == 4
    assert cfg["metadata"]["hook_name"] == "encoder.layer.1" and cfg["metadata"]["splare_quant_scale"] > 0
    sae = SAE.load_from_disk(out)
    assert sae.W_enc.dtype == torch.float16 and sae.W_enc.shape == (32, 48)
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 6 and record["distinct_tokens"] <= 2000
    # the encoder picks up layer and quantization scale from the SAE's own metadata
    encoder = SaeSparseEncoder(EncoderSettings(model=str(tiny_model), sae=str(out)))
    assert encoder.settings.layer == 2
    assert encoder.settings.quant_scale == cfg["metadata"]["splare_quant_scale"]
    assert all(len(v) <= 48 for v in encoder.encode(["protein folding in yeast cells"]))
