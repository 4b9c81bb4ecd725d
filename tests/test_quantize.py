import torch

from splare_pyserini.model.quantize import pretokenize, quantize


def test_quantize_rounds_scales_and_drops_zeros():
    weights = torch.tensor([[0.0, 0.004, 0.006, 1.234, 2.5], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert quantize(weights, scale=100) == [{"L2": 1, "L3": 123, "L4": 250}, {}]


def test_quantize_topk_keeps_largest_and_prefix():
    weights = torch.tensor([[0.5, 0.1, 0.9, 0.3]])
    assert quantize(weights, scale=10, topk=2, prefix="sae") == [{"sae0": 5, "sae2": 9}]


def test_quantize_keys_sorted_by_latent_id():
    weights = torch.zeros(1, 2000)
    weights[0, [1500, 3, 999]] = torch.tensor([1.0, 2.0, 3.0])
    assert list(quantize(weights, scale=1)[0]) == ["L3", "L999", "L1500"]


def test_pretokenize_repeats_each_latent_by_its_impact():
    assert pretokenize({"L7": 3, "L12": 1}) == "L7 L7 L7 L12"
    assert pretokenize({}) == ""


def test_keep_topk_is_the_encoding_cut_and_passes_gradients_only_to_kept_latents():
    from splare_pyserini.model.quantize import keep_topk

    weights = torch.tensor([[0.5, 0.125, 0.75, 0.25], [0.25, 0.875, 0.0, 0.375]], requires_grad=True)
    kept = keep_topk(weights, 2)
    assert kept.tolist() == [[0.5, 0.0, 0.75, 0.0], [0.0, 0.875, 0.0, 0.375]]
    (kept * torch.arange(1.0, 5.0)).sum().backward()
    assert weights.grad.tolist() == [[1.0, 0.0, 3.0, 0.0], [0.0, 2.0, 0.0, 4.0]]
    assert keep_topk(weights, None) is weights and keep_topk(weights, 0) is weights and keep_topk(weights, 9) is weights
    assert quantize(weights.detach(), scale=10, topk=0) == quantize(weights.detach(), scale=10)


def test_calibration_in_slices_equals_all_at_once(monkeypatch):
    """A 250k-term vocabulary cannot hold 20k tokens' weights at once: calibration slices the tokens,
    and the scale must not depend on the slicing."""
    from splare_pyserini.model import quantize as q
    from splare_pyserini.model.projection import VocabProjection

    torch.manual_seed(0)
    projection = VocabProjection(torch.nn.Embedding(300, 16), k=8)
    acts = torch.randn(97, 16)
    whole = q.calibrate_quant_scale(projection, acts)
    monkeypatch.setattr(q, "CALIBRATION_CHUNK", 300 * 5)  # 5 tokens a slice, the last one short
    assert q.calibrate_quant_scale(projection, acts) == whole
    assert q.calibrate_quant_scale(projection, acts, saturation="none") != whole
