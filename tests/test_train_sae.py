import json

import torch

from helpers import write_jsonl
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


def test_sae_sweep_varies_one_factor_at_a_time_and_caches(tmp_path, tiny_model, monkeypatch):
    from helpers import make_beir_slice
    from splare_pyserini import sae_sweep
    from splare_pyserini.sae_sweep import SweepConfig, SweepPoint, run_sweep, sweep_points

    base = SweepPoint(2, 48, 4)
    assert sweep_points(base, layers=[1, 2], widths=[48, 96], ks=[8]) == [
        base, SweepPoint(1, 48, 4), SweepPoint(2, 96, 4), SweepPoint(2, 48, 8)]

    beir = make_beir_slice(tmp_path / "beir", n_queries=8, n_docs=60)  # test split only: the sweep falls back to it
    cfg = SweepConfig(model=str(tiny_model), steps=4, batch_size=64, max_tokens=3000, max_length=64,
                      n_queries=5, n_docs=30)
    points = [base, SweepPoint(1, 48, 4)]
    rows = run_sweep(beir, tmp_path / "sweep", points, cfg)
    assert [(r["layer"], r["d_sae"], r["k"]) for r in rows] == [(2, 48, 4), (1, 48, 4)]
    for row in rows:
        assert 0 <= row["nDCG@10"] <= 1 and 0 < row["alive latents"] <= 1 and row["doc nnz"] > 0
        assert json.loads((tmp_path / "sweep" / f"L{row['layer']}-d48-k4" / "sae" / "cfg.json").read_text())["k"] == 4
    assert len((tmp_path / "sweep" / "slice-test" / "queries.jsonl").read_text().splitlines()) == 5
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| layer | d_sae | k | nDCG@10 |" in table and "test slice (5 queries, 30 documents)" in table

    monkeypatch.setattr(sae_sweep, "run_point", lambda *a, **k: (_ for _ in ()).throw(AssertionError("reran")))
    assert run_sweep(beir, tmp_path / "sweep", points, cfg) == rows
