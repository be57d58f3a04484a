"""Expert- and tensor-parallel loading: the ranks' slices put back together
are the full tensors, gate and up rows interleave per rank, and each rank
reads only its own bytes."""

import pytest
import torch

import moepack
from conftest import DSV3_FP8, QWEN_BF16, QWEN_FUSED, VL_BF16, same_bits

SOURCES = {"per-expert": QWEN_BF16, "fused": QWEN_FUSED, "fused-transposed": VL_BF16, "fp8": DSV3_FP8}
GRIDS = [(2, 1), (4, 1), (1, 2), (2, 2), (4, 2)]


def is_expert(name):
    return ".experts.gate_up_proj" in name or ".experts.down_proj" in name


def load_rank(src, ep, er, tp, tr):
    stream = moepack.load(src, ep_rank=er, ep_size=ep, tp_rank=tr, tp_size=tp)
    return stream, stream.state_dict()


def reassemble(name, parts, ep, tp):
    """parts[er][tr] -> the full tensor."""
    per_ep = []
    for er in range(ep):
        ts = parts[er]
        if "gate_up_proj" in name:
            half = [t.shape[1] // 2 for t in ts]
            gates = [t[:, :h] for t, h in zip(ts, half)]
            ups = [t[:, h:] for t, h in zip(ts, half)]
            per_ep.append(torch.cat(gates + ups, dim=1))
        else:
            per_ep.append(torch.cat(ts, dim=2))
    return torch.cat(per_ep, dim=0)


def bits(t):
    # cat on uint8 bit patterns works for every dtype, float8 fallbacks included.
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(width)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_ranks_reassemble_to_the_full_tensors(synth, source):
    src = synth(*SOURCES[source])
    full_stream = moepack.load(src)
    full = full_stream.state_dict()
    expert_bytes = sum(t.numel() * t.element_size() for n, t in full.items() if is_expert(n))
    other_bytes = full_stream.total_bytes - expert_bytes
    assert expert_bytes > 0
    for ep, tp in GRIDS:
        parts = {}
        for er in range(ep):
            for tr in range(tp):
                stream, sd = load_rank(src, ep, er, tp, tr)
                assert sd.keys() == full.keys()
                for name, t in sd.items():
                    if is_expert(name):
                        assert t.shape[0] == full[name].shape[0] // ep
                        parts.setdefault(name, [[None] * tp for _ in range(ep)])[er][tr] = bits(t)
                    else:
                        assert same_bits(t, full[name]), name
                # Only the rank's bytes come off the disk: 1/size of the experts.
                assert stream.bytes_read == stream.rank_bytes == other_bytes + expert_bytes // (ep * tp)
        for name, p in parts.items():
            assert torch.equal(reassemble(name, p, ep, tp), bits(full[name])), (source, name, ep, tp)


def test_gate_and_up_of_the_same_range(synth):
    src = synth(*QWEN_BF16)  # E = 8, I = 16, H = 32
    full = moepack.load(src).state_dict()
    name = "model.layers.1.mlp.experts.gate_up_proj"
    down = "model.layers.1.mlp.experts.down_proj"
    for ep_rank in range(2):
        for tp_rank in range(4):
            sd = moepack.load(src, ep_rank=ep_rank, ep_size=2, tp_rank=tp_rank, tp_size=4).state_dict()
            e = slice(ep_rank * 4, ep_rank * 4 + 4)
            lo, hi = tp_rank * 4, tp_rank * 4 + 4
            assert sd[name].shape == (4, 8, 32)
            assert torch.equal(sd[name][:, :4], full[name][e, lo:hi])  # gate rows
            assert torch.equal(sd[name][:, 4:], full[name][e, 16 + lo:16 + hi])  # up rows, same range
            assert sd[down].shape == (4, 32, 4)
            assert torch.equal(sd[down], full[down][e, :, lo:hi])


def test_fp8_scales_are_cut_by_block(synth):
    src = synth(*DSV3_FP8)  # E = 4, I = H = 256, 128x128 blocks
    full = moepack.load(src).state_dict()
    sd = moepack.load(src, ep_rank=1, ep_size=2, tp_rank=1, tp_size=2).state_dict()
    s = "model.layers.1.mlp.experts.gate_up_proj_scale_inv"
    d = "model.layers.1.mlp.experts.down_proj_scale_inv"
    assert full[s].shape == (4, 4, 2) and sd[s].shape == (2, 2, 2)
    assert torch.equal(sd[s][:, 0], full[s][2:, 1]) and torch.equal(sd[s][:, 1], full[s][2:, 3])
    assert full[d].shape == (4, 2, 2) and sd[d].shape == (2, 2, 1)
    assert torch.equal(sd[d], full[d][2:, :, 1:])
    with pytest.raises(moepack.InvalidArgumentError,
                       match=r"tp_size 4 cuts the intermediate size 256 .* into slices of 64, which do not fall "
                             r"on the 128-wide quantization blocks"):
        moepack.load(src, tp_size=4)


def test_bytes_read_scale_with_one_over_size(synth):
    src = synth(*QWEN_BF16)
    base = moepack.load(src)
    list(base)
    expert = sum(i["nbytes"] for i in base.tensors() if is_expert(i["name"]))
    other = base.bytes_read - expert
    for size in (2, 4, 8):
        s = moepack.load(src, ep_size=size, ep_rank=size - 1)
        list(s)
        assert s.bytes_read - other == expert // size
    for size in (2, 4, 8, 16):
        s = moepack.load(src, tp_size=size, tp_rank=0)
        list(s)
        assert s.bytes_read - other == expert // size
    assert all(i["split"] == "tp" for i in s.tensors() if is_expert(i["name"]))


def test_parallel_errors(synth):
    src = synth(*QWEN_BF16)  # E = 8, I = 16
    cases = [
        (dict(ep_size=3), "ep_size 3 does not divide the 8 experts of 'model.layers.0.mlp.experts."),
        (dict(tp_size=3), "tp_size 3 does not divide the expert intermediate size 16 of 'model.layers.0.mlp.experts."),
        (dict(ep_size=2, ep_rank=2), r"ep_rank 2 is outside \[0, 2\)"),
        (dict(tp_size=2, tp_rank=-1), r"tp_rank -1 is outside \[0, 2\)"),
        (dict(ep_size=0), "ep_size must be at least 1"),
        (dict(ep_size=2, layout="per-expert"), "load to the fused layout"),
    ]
    for kwargs, message in cases:
        with pytest.raises(moepack.InvalidArgumentError, match=message):
            moepack.load(src, **kwargs)


def test_max_gap_merges_reads(synth):
    src = synth(*QWEN_BF16)
    exact = moepack.load(src, tp_size=4, tp_rank=1)
    merged = moepack.load(src, tp_size=4, tp_rank=1, max_gap=1 << 20)
    a, b = exact.state_dict(), merged.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert exact.bytes_read == exact.rank_bytes < merged.bytes_read
    assert merged.read_calls < exact.read_calls
    with pytest.raises(moepack.InvalidArgumentError, match="max_gap must not be negative"):
        moepack.load(src, max_gap=-1)
