"""Exact per-row top-k by strided blocks (``model.topk.row_topk``) against ``torch.topk``."""
import pytest
import torch

from splare_pyserini.model.topk import row_topk


@pytest.mark.parametrize("d,k", [(8192, 32), (16384, 32), (2048, 16), (1024, 64), (30522, 32), (8192, 1)])
def test_row_topk_picks_torch_topks_winners(d, k):
    """The same index set and values on every row: wide SAE shapes, a width the blocks do not divide (the twin's
    vocabulary), and k too large for the blocks (both fall back to torch.topk), a sparse-ish shifted matrix."""
    g = torch.Generator().manual_seed(d + k)
    z = torch.randn(300, d, generator=g) * torch.rand(d, generator=g) - 0.5
    z[:7] = -z[:7].abs()  # rows where every entry is negative: winners are still the k largest
    values, index = row_topk(z, k)
    ref_values, ref_index = z.topk(k, dim=1, sorted=False)
    assert torch.equal(index.sort(dim=1).values, ref_index.sort(dim=1).values)
    assert torch.equal(values.sort(dim=1).values, ref_values.sort(dim=1).values)
    assert torch.equal(z.gather(1, index), values)


def test_row_topk_keeps_the_gradient_path_of_torch_topk():
    z = torch.randn(4, 4096, requires_grad=True)
    values, index = row_topk(z, 8)
    values.sum().backward()
    assert int((z.grad != 0).sum()) == 32 and torch.equal(z.grad.nonzero()[:, 1].sort().values,
                                                          index.flatten().sort().values)
