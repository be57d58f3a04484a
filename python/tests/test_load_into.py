"""moepack.load_into reads a checkpoint straight into existing tensors: the
result equals load + copy_ bit for bit for every source family and layout,
expert- and tensor-parallel slices included; a target that cannot take the
bytes is refused before any read and left as it was; the device ring
(tested on CPU with a copy function of its own) gets the same bytes through
a bounded number of slots."""

import numpy as np
import pytest
import torch

import moepack
from moepack import _moepack
from conftest import DSV3_FP8, MIXTRAL_F16, QWEN_BF16, QWEN_FUSED, VL_BF16, as_storage

SOURCES = {"qwen3_bf16": QWEN_BF16, "qwen3_fused_f32": QWEN_FUSED, "qwen3_vl_transposed": VL_BF16,
           "mixtral_f16": MIXTRAL_F16, "deepseek_v3_fp8": DSV3_FP8}
GRIDS = [(1, 1, 0, 0), (2, 1, 1, 0), (1, 2, 0, 1), (2, 2, 1, 1)]


def blank_like(stream, fill=7):
    """name -> a tensor of the stream's dtype and shape holding `fill` bytes."""
    out = {}
    for info in stream.tensors():
        t = torch.empty(info["shape"], dtype=moepack.torch_dtype(info["dtype"]))
        t.view(torch.uint8).fill_(fill) if t.numel() else None
        out[info["name"]] = t
    return out


def bits(t):
    return as_storage(t).tobytes()


def snapshot(sd):
    return {n: bits(t) for n, t in sd.items()}


def module_of(sd):
    """A torch.nn.Module whose state_dict names are sd's, holding sd's tensors as parameters."""
    root = torch.nn.Module()
    for name, t in sd.items():
        *path, leaf = name.split(".")
        m = root
        for p in path:
            if not hasattr(m, p):
                m.add_module(p, torch.nn.Module())
            m = getattr(m, p)
        m.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=t.is_floating_point()))
    return root


@pytest.mark.parametrize("layout", ["fused", "per-expert"])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_equals_load_and_copy(synth, source, layout):
    src = synth(*SOURCES[source])
    grids = GRIDS if layout == "fused" else GRIDS[:1]
    for ep, tp, er, tr in grids:
        kw = dict(layout=layout, ep_size=ep, ep_rank=er, tp_size=tp, tp_rank=tr)
        stream = moepack.load(src, **kw)
        want = blank_like(stream)
        for name, t in stream:
            want[name].copy_(t)
        for threads in (1, 3):
            got = blank_like(stream, fill=0x33)
            r = moepack.load_into(got, src, threads=threads, **kw)
            assert r == moepack.LoadResult([], [], [])
            assert snapshot(got) == snapshot(want), (source, layout, ep, tp)


def test_module_target_and_numpy_target(synth):
    src = synth(*QWEN_BF16)
    want = moepack.load(src).state_dict()
    model = module_of(blank_like(moepack.load(src)))
    r = moepack.load_into(model, src)
    assert not r.missing_keys and not r.unexpected_keys and not r.mismatched
    assert snapshot(model.state_dict()) == snapshot(want)
    assert all(p.requires_grad for p in model.parameters())  # parameters stay parameters

    arrays = {}
    for info in moepack.load(src).tensors():
        arrays[info["name"]] = np.zeros(info["shape"], dtype=moepack.numpy_dtype(info["dtype"]))
    moepack.load_into(arrays, src)
    assert {n: a.tobytes() for n, a in arrays.items()} == snapshot(want)


class SpyLoader(_moepack.Loader):
    """The C++ loader, counting the calls that read tensor bytes."""
    reads = 0

    def read_many(self, *a):
        SpyLoader.reads += 1
        return super().read_many(*a)

    def read_range(self, *a):
        SpyLoader.reads += 1
        return super().read_range(*a)

    def read_into(self, *a):
        SpyLoader.reads += 1
        return super().read_into(*a)


def test_a_mismatched_target_is_refused_before_any_read(synth, monkeypatch):
    src = synth(*QWEN_BF16)
    monkeypatch.setattr(_moepack, "Loader", SpyLoader)
    gate_up = "model.layers.0.mlp.experts.gate_up_proj"
    down = "model.layers.1.mlp.experts.down_proj"

    def base():
        return blank_like(moepack.load(src))

    def wrong_dtype(sd):
        sd[gate_up] = sd[gate_up].float()

    def wrong_shape(sd):
        sd[gate_up] = sd[gate_up][:, :-1].clone()

    def missing(sd):
        sd["model.layers.0.mlp.experts.extra"] = torch.zeros(2)

    def unexpected(sd):
        del sd[down]

    def not_contiguous(sd):
        sd[down] = sd[down].transpose(1, 2).contiguous().transpose(1, 2)

    def overlapping(sd):
        g = gate_up.replace("layers.0", "layers.1")
        big = torch.zeros(sd[down].numel() + sd[g].numel(), dtype=sd[down].dtype)
        sd[down] = big[:sd[down].numel()].view(sd[down].shape)
        sd[g] = big[8:8 + sd[g].numel()].view(sd[g].shape)

    def on_meta(sd):
        sd[down] = torch.empty(sd[down].shape, dtype=sd[down].dtype, device="meta")

    cases = [(wrong_dtype, "mismatched: '" + gate_up + "' (checkpoint BF16 [8, 32, 32], target float32 [8, 32, 32])"),
             (wrong_shape, "target bfloat16 [8, 31, 32]"),
             (missing, "1 missing (in the target, not in the checkpoint): 'model.layers.0.mlp.experts.extra'"),
             (unexpected, "1 unexpected (in the checkpoint, not in the target): '" + down + "'"),
             (not_contiguous, "(not contiguous)"),
             (overlapping, "overlaps the memory of"),
             (on_meta, "on meta; pass device='meta'")]
    for spoil, message in cases:
        sd = base()
        spoil(sd)
        before = snapshot({n: t for n, t in sd.items() if t.device.type != "meta"})
        SpyLoader.reads = 0
        with pytest.raises(moepack.InvalidArgumentError, match="load_into: nothing was read") as e:
            moepack.load_into(sd, src)
        assert message in str(e.value), (spoil.__name__, str(e.value))
        assert SpyLoader.reads == 0, spoil.__name__
        assert snapshot({n: t for n, t in sd.items() if t.device.type != "meta"}) == before, spoil.__name__


def test_strict_false_loads_what_matches_and_reports_the_rest(synth):
    src = synth(*QWEN_BF16)
    want = moepack.load(src).state_dict()
    gate_up = "model.layers.0.mlp.experts.gate_up_proj"
    down = "model.layers.1.mlp.experts.down_proj"
    sd = blank_like(moepack.load(src))
    sd[gate_up] = torch.zeros(sd[gate_up].shape, dtype=torch.float32)
    del sd[down]
    sd["extra"] = torch.ones(3)
    r = moepack.load_into(sd, src, strict=False)
    assert r.missing_keys == ["extra"]
    assert r.unexpected_keys == [down]
    assert r.mismatched == [(gate_up, "BF16 [8, 32, 32]", "float32 [8, 32, 32]")]
    assert torch.equal(sd[gate_up], torch.zeros_like(sd[gate_up])) and torch.equal(sd["extra"], torch.ones(3))
    for n, t in sd.items():
        if n in want and n != gate_up:
            assert bits(t) == bits(want[n]), n


def test_tied_names_are_read_once(synth):
    src = synth(*QWEN_BF16)
    want = moepack.load(src).state_dict()
    sd = blank_like(moepack.load(src))
    tied = next(n for n in sd if n.endswith("embed_tokens.weight"))
    sd["lm_head_tied.weight"] = sd[tied]  # absent from the checkpoint, one memory with a loaded name
    r = moepack.load_into(sd, src)
    assert r.missing_keys == []
    assert bits(sd["lm_head_tied.weight"]) == bits(want[tied])


class LazyCopies:
    """A device copy that completes only when waited for, as an asynchronous
    one may: a ring that refilled a slot before waiting would copy the
    wrong bytes. Records the slots used and the window sizes."""

    def __init__(self):
        self.slots, self.sizes, self.pending = set(), [], 0

    def __call__(self, dst, src):
        self.slots.add(src.data_ptr() - src.storage_offset())
        self.sizes.append(dst.numel())
        self.pending += 1
        copies = self

        class Fence:
            done = False

            def synchronize(self):
                if not self.done:
                    dst.copy_(src)
                    self.done = True
                    copies.pending -= 1
        return Fence()


@pytest.mark.parametrize("source", ["qwen3_bf16", "qwen3_vl_transposed", "deepseek_v3_fp8"])
def test_device_ring_on_cpu(synth, source):
    src = synth(*SOURCES[source])
    for ep, tp, er, tr in (GRIDS[0], GRIDS[3]):
        kw = dict(ep_size=ep, ep_rank=er, tp_size=tp, tp_rank=tr)
        stream = moepack.load(src, **kw)
        want = snapshot(stream.state_dict())
        largest = max(i["nbytes"] for i in stream.tensors())
        slot = 1000
        copies = LazyCopies()
        ring = moepack.HostRing(slots=3, slot_bytes=slot, copy=copies)
        got = blank_like(stream)
        assert moepack.load_into(got, src, device="cpu", ring=ring, threads=2, **kw).mismatched == []
        assert snapshot(got) == want
        assert copies.pending == 0 and len(copies.slots) <= 3
        assert sum(copies.sizes) == stream.rank_bytes and largest > slot
        if source != "qwen3_vl_transposed":  # only a transposed block is never cut
            assert max(copies.sizes) <= slot
        # load(device=) yields tensors on the device, through one ring kept
        # for the whole iteration (its slots grow once for a transposed block).
        copies2 = LazyCopies()
        out = dict(moepack.load(src, device="cpu", ring=moepack.HostRing(2, 512, copy=copies2), **kw))
        assert snapshot(out) == want and copies2.pending == 0
        assert len(copies2.slots) <= (4 if source == "qwen3_vl_transposed" else 2)


def test_arguments(synth):
    src = synth(*QWEN_BF16)
    sd = blank_like(moepack.load(src))
    with pytest.raises(moepack.InvalidArgumentError, match="threads must not be negative"):
        moepack.load_into(sd, src, threads=-1)
    with pytest.raises(moepack.InvalidArgumentError, match="ring= stages tensors for device="):
        moepack.load_into(sd, src, ring=moepack.HostRing())
    with pytest.raises(moepack.InvalidArgumentError, match="slots must be a positive int"):
        moepack.HostRing(slots=0)
    with pytest.raises(TypeError, match="target must be a torch.nn.Module or a dict"):
        moepack.load_into([1, 2], src)
    with pytest.raises(moepack.InvalidArgumentError, match="ep_size 3 does not divide"):
        moepack.load_into(sd, src, ep_size=3)


def test_load_reuses_buffers_nobody_holds(synth):
    src = synth(*QWEN_BF16)
    want = moepack.load(src).state_dict()
    addresses = set()
    for name, t in moepack.load(src):
        assert bits(t) == bits(want[name]), name
        addresses.add(t.data_ptr())
    # Kept tensors are never overwritten (the state_dict above), dropped ones are reused.
    assert len(addresses) < len(want) // 4


def test_pool_touches_two_buffers_for_a_copy_loop_and_never_reuses_a_held_one(synth):
    from moepack._pool import BufferPool
    sizes = [info["nbytes"] for info in moepack.load(synth(*QWEN_BF16)).tensors()]
    pool, prev, largest = BufferPool(), None, sorted(sizes)[-2:]
    for k, n in enumerate(sizes):
        cur = pool.take(n)
        cur[:] = k % 251
        if prev is not None:  # the loop variable still holds it: not handed out again
            assert not np.shares_memory(cur, prev)
            assert (prev == (k - 1) % 251).all()
        prev = cur
    # A `param.copy_(t)` loop alternates two buffers, grown in place: the
    # touched memory is at most the two largest tensors, whatever the order.
    assert pool.touched() <= sum(largest)
    kept = [pool.take(n) for n in sizes[:5]]
    for k, a in enumerate(kept):
        a[:] = k
    assert all((a == k).all() for k, a in enumerate(kept))


def test_pool_keeps_small_tensors_out_of_the_buffers_large_ones_need():
    from moepack._pool import SMALL, BufferPool
    MB = 1 << 20
    # The order in which a 2-layer qwen3-30b-a3b per-expert checkpoint is
    # read into fused tensors: down_proj, gate_up_proj, then the layer's
    # other tensors, the next layer, the embedding and head (nothing is
    # written: the pool's bookkeeping, not the pages, is under test).
    sizes = [4096, 403 * MB, 805 * MB, 2 * MB, 4096, 403 * MB, 805 * MB, 4096, 622 * MB, 2 * MB, 2 * MB,
             17 * MB, 622 * MB, 17 * MB, 4096, 17 * MB]
    pool, prev = BufferPool(), None
    for n in sizes:
        cur = pool.take(n)  # while the previous tensor is still held
        assert prev is None or not np.shares_memory(cur, prev)
        prev = cur
    # No pool can touch less than the largest tensor held plus the next one;
    # a small tensor placed in the buffer a large one needs would make the
    # next large one grow another (1.6 GB here instead of 1.2).
    held_and_next = max(a + b for a, b in zip(sizes, sizes[1:]))
    assert pool.touched() <= held_and_next + 2 * SMALL


def test_reading_order_puts_a_small_tensor_between_large_ones_so_they_share_one_buffer():
    from moepack._pool import SMALL, BufferPool, reading_order
    MB = 1 << 20
    # A fused qwen3-30b-a3b checkpoint as moepack writes it: embedding and
    # head first, then per layer down_proj, gate_up_proj and the rest.
    layer = [403 * MB, 805 * MB, 2 * MB, 17 * MB, 17 * MB, 4096, 2 * MB, 17 * MB, 4096]
    sizes = [622 * MB, 622 * MB, 4096] + layer + layer
    order = reading_order(sizes)
    assert sorted(order) == list(range(len(sizes)))
    ordered = [sizes[i] for i in order]
    assert not any(a > SMALL and b > SMALL for a, b in zip(ordered, ordered[1:]))
    # Apart from the large ones waiting, the order is the file's.
    assert [i for i in order if sizes[i] > SMALL] == sorted(i for i in order if sizes[i] > SMALL)
    assert [i for i in order if sizes[i] <= SMALL] == sorted(i for i in order if sizes[i] <= SMALL)
    pool, prev = BufferPool(), None
    for n in ordered:
        cur = pool.take(n)  # the previous one still held
        prev = cur
    assert pool.touched() <= max(sizes) + 2 * SMALL  # one large buffer, not two
    # Small tensors only: nothing moves. Not enough small ones: large ones
    # meet only once the small ones are used up.
    assert reading_order([4096, 2 * MB, 17 * MB]) == [0, 1, 2]
    few = [805 * MB, 805 * MB, 805 * MB, 4096]
    assert [few[i] for i in reading_order(few)] == [805 * MB, 4096, 805 * MB, 805 * MB]
