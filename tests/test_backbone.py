import pytest
import torch
from transformers import AutoModel, LlamaConfig, LlamaModel

from splare_pyserini.model.backbone import LayerBackbone
from splare_pyserini.errors import ArtifactError


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_encoder_layer_matches_hidden_states(tiny_model, layer):
    full = AutoModel.from_pretrained(tiny_model).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    with torch.no_grad():
        expected = full(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
        cut = LayerBackbone(AutoModel.from_pretrained(tiny_model).eval(), layer)
        got = cut(ids, mask)
    assert len(cut.model.encoder.layer) == layer  # later blocks are gone, not just skipped
    torch.testing.assert_close(got, expected)


def test_decoder_layer_is_the_residual_stream_before_the_final_norm():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2)
    full = LlamaModel(config).eval()
    ids = torch.tensor([[1, 5, 7, 9]])
    mask = torch.ones_like(ids)
    captured = {}
    full.layers[1].register_forward_hook(lambda m, i, o: captured.setdefault("h", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        full(input_ids=ids, attention_mask=mask)
        clone = LlamaModel(config).eval()
        clone.load_state_dict(full.state_dict())
        got = LayerBackbone(clone, 2)(ids, mask)
    torch.testing.assert_close(got, captured["h"])


def test_layer_out_of_range_is_refused(tiny_model):
    with pytest.raises(ArtifactError, match="out of range.*3 layers"):
        LayerBackbone(AutoModel.from_pretrained(tiny_model), 4)
