"""torch.library registration: opcheck on every op, and one graph under torch.compile."""

import pytest
import torch

from facegen_rt.ops import masked_cross_attention, shared_self_attention, spade_norm

from .test_masked_cross_attention import make_mask
from .test_shared_self_attention import make_keep


def op_cases():
    x, g, b = torch.randn(3, 2, 64, 5, 7)
    q, k_self, v_self = torch.randn(3, 2, 3, 97, 40)
    k, v = torch.randn(2, 2, 3, 19, 40)
    k_ref, v_ref = torch.randn(2, 2, 3, 147, 40)
    return [
        ("spade_norm", torch.ops.facegen.spade_norm.default, (x, g, b, 32, 1e-5, "silu", "")),
        ("masked_cross_attention", torch.ops.facegen.masked_cross_attention.default,
         (q, k, v, make_mask("onehot_with_empty_rows", 2, 97, 19), 40 ** -0.5, "")),
        ("shared_self_attention", torch.ops.facegen.shared_self_attention.default,
         (q, k_self, v_self, k_ref, v_ref, make_keep("blob"), 40 ** -0.5, False, "")),
    ]


@pytest.mark.parametrize("name,op,args", op_cases(), ids=[c[0] for c in op_cases()])
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


class Block(torch.nn.Module):
    """A toy SCA-DM + Parts2Whole block using all three ops: SPADE norm, masked
    cross-attention to region tokens, then shared self-attention with references."""

    def __init__(self, c=64, heads=2):
        super().__init__()
        self.heads = heads
        self.to_qkv = torch.nn.Linear(c, 3 * c, bias=False)
        self.to_kv_regions = torch.nn.Linear(c, 2 * c, bias=False)

    def split(self, t):  # [B, n, c] -> [B, heads, n, c / heads]
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x, gamma, beta, regions, mask, k_ref, v_ref, keep):
        h = spade_norm(x, gamma, beta, groups=32, act="silu")
        tokens = h.flatten(2).transpose(1, 2)  # [B, HW, c]
        q, k_self, v_self = map(self.split, self.to_qkv(tokens).chunk(3, dim=-1))
        k, v = map(self.split, self.to_kv_regions(regions).chunk(2, dim=-1))
        a = masked_cross_attention(q, k, v, mask)
        s = shared_self_attention(q, k_self, v_self, k_ref, v_ref, keep)
        return (a + s).transpose(1, 2).flatten(2)


def test_compiles_fullgraph_and_matches_eager():
    block = Block().eval()
    B, c, side, R = 2, 64, 9, 19
    L = side * side
    args = (torch.randn(B, c, side, side), torch.randn(B, c, side, side),
            torch.randn(B, c, side, side), torch.randn(B, R, c),
            make_mask("onehot", B, L, R), torch.randn(B, 2, 3 * 49, c // 2),
            torch.randn(B, 2, 3 * 49, c // 2), make_keep("blob"))
    with torch.no_grad():
        eager = block(*args)
        compiled = torch.compile(block, fullgraph=True, backend="inductor")(*args)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
