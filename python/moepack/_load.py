"""moepack.load: the converted state dict of a checkpoint, one tensor at a
time, each process reading only its own expert- and tensor-parallel slice."""

import os

from . import _dtypes, _moepack
from ._api import dtype_name
from ._pool import BufferPool, reading_order
from ._ring import HostRing
from ._streaming import StreamingConverter, check_converter
from .errors import InvalidArgumentError

def _group_rank(group, rank, size, what):
    """(rank, size) from a torch.distributed process group, checked against
    explicit values when those were given too."""
    if group is None:
        return rank, size
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_initialized():
        raise InvalidArgumentError(f"{what}_group is given but torch.distributed is not initialized")
    g_rank, g_size = dist.get_rank(group), dist.get_world_size(group)
    if g_rank < 0:
        raise InvalidArgumentError(f"this process is not a member of {what}_group")
    if (rank, size) != (0, 1) and (rank, size) != (g_rank, g_size):
        raise InvalidArgumentError(f"{what}_rank={rank}, {what}_size={size} contradict {what}_group "
                                   f"(rank {g_rank} of {g_size})")
    return g_rank, g_size


def _check_ints(**values):
    for what, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidArgumentError(f"{what} must be an int, got {type(v).__name__}")


def threads_arg(threads):
    """The thread count the C++ loader takes: None -> 0 (one per core)."""
    if threads is None:
        return 0
    _check_ints(threads=threads)
    if threads < 0:
        raise InvalidArgumentError(f"threads must not be negative, got {threads}")
    return threads


def open_loader(path, layout, model_type, rules, source_layout, parallel, groups, raw, max_gap, dtype=None):
    """The C++ loader for load's and load_into's options, and the (ep_rank,
    ep_size, tp_rank, tp_size) it cuts for, after the groups are asked."""
    ep_rank, ep_size, tp_rank, tp_size = parallel
    ep_rank, ep_size = _group_rank(groups[0], ep_rank, ep_size, "ep")
    tp_rank, tp_size = _group_rank(groups[1], tp_rank, tp_size, "tp")
    _check_ints(ep_rank=ep_rank, ep_size=ep_size, tp_rank=tp_rank, tp_size=tp_size, max_gap=max_gap)
    if max_gap < 0:
        raise InvalidArgumentError(f"max_gap must not be negative, got {max_gap}")
    l = _moepack.Loader(os.fspath(path), layout, model_type or "", "" if rules is None else os.fspath(rules),
                        source_layout, ep_rank, ep_size, tp_rank, tp_size, raw, max_gap, dtype_name(dtype))
    return l, (ep_rank, ep_size, tp_rank, tp_size)


def device_of(torch, device):
    if device is None:
        return None
    if torch is None:
        raise InvalidArgumentError("device= needs torch")
    return torch.device(device)


def _backend(backend):
    if backend not in (None, "torch", "numpy"):
        raise InvalidArgumentError(f"backend: {backend!r} is not torch or numpy")
    if backend == "numpy":
        return None
    try:
        import torch
        return torch
    except ImportError:
        if backend == "torch":
            raise
        return None


class LoadStream:
    """What ``moepack.load`` returns: iterate it for ``(name, tensor)`` pairs.

    Each iteration reads the tensors anew, one at a time, in the order
    ``tensors()`` lists: that of their bytes in the source shards, except
    that a tensor over 64 MiB is not read straight after another (a small
    one is read between, see _pool.reading_order). At most one tensor (plus
    what the caller keeps, plus, with a converter, the experts of fused
    tensors still being assembled) is in memory. All errors the plan or the slicing can
    find were raised by ``load`` already.
    """

    def __init__(self, l, parallel, converter, torch, threads, device, ring):
        self._l = l
        self._torch = torch
        self._converter = converter
        self._threads = threads
        self._device = device
        self._ring = ring
        self.ep_rank, self.ep_size, self.tp_rank, self.tp_size = parallel
        # A converter is fed the source tensors as they lie.
        n = len(l)
        self._order = list(range(n)) if converter is not None else reading_order([l.info(i)[4] for i in range(n)])

    # --- what will be read ---
    def __len__(self):
        if self._converter is not None:
            raise TypeError("the number of tensors a converter yields is known only after loading")
        return len(self._l)

    def tensors(self):
        """[{name, dtype, shape, full_shape, nbytes, split}] in reading order
        (source tensors when a converter is given)."""
        keys = ("name", "dtype", "shape", "full_shape", "nbytes", "split")
        return [dict(zip(keys, self._l.info(i))) for i in self._order]

    @property
    def family(self):
        return self._l.family

    @property
    def total_bytes(self):
        """Tensor bytes of the whole converted checkpoint (every rank)."""
        return self._l.total_bytes

    @property
    def rank_bytes(self):
        """Tensor bytes this rank receives."""
        return self._l.rank_bytes

    @property
    def bytes_read(self):
        """Bytes read from disk so far by this stream's iterations."""
        return self._l.bytes_read

    @property
    def read_calls(self):
        return self._l.read_calls

    # --- reading ---
    def _read(self, i, pool):
        name, dtype, shape, _, nbytes, _ = self._l.info(i)
        if self._device is not None:
            torch = self._torch
            t = torch.empty(_dtypes.storage_shape(dtype, shape), dtype=_dtypes.torch_dtype(dtype, torch),
                            device=self._device)
            self._ring.fill(self._l, [(i, _dtypes.flat_bytes(t, torch))], torch, self._threads or os.cpu_count())
            return name, dtype, t
        buf = pool.take(nbytes)
        self._l.read_many([(i, buf)], self._threads)
        arr = _dtypes.from_bytes(buf, dtype, shape)
        return name, dtype, (_dtypes.to_torch(arr, dtype, self._torch) if self._torch is not None else arr)

    def __iter__(self):
        pool = BufferPool()
        if self._converter is None:
            for i in self._order:
                name, _, t = self._read(i, pool)
                yield name, t
            return
        conv = self._converter
        ours = isinstance(conv, StreamingConverter)
        rename = getattr(conv, "rename", None)
        rename = rename if callable(rename) else None
        for i in range(len(self._l)):
            name, dtype, t = self._read(i, pool)
            if conv.can_handle(name):
                out = conv.convert(name, t, dtype=dtype) if ours else conv.convert(name, t)
                yield from _pairs(out, "convert")
            else:
                yield (rename(name) if rename else name), t
        yield from _pairs(conv.finalize(), "finalize")

    def state_dict(self):
        """Everything at once, as a dict (memory: the rank's whole share)."""
        return dict(self)


def _pairs(out, method):
    if out is None:
        return []
    if isinstance(out, dict):
        return list(out.items())
    try:
        return [(n, t) for n, t in out]
    except (TypeError, ValueError):
        raise TypeError(f"converter.{method} must return None, a dict or a list of (name, tensor) pairs, "
                        f"got {type(out).__name__}") from None


def load(path, layout="fused", model_type=None, ep_rank=0, ep_size=1, tp_rank=0, tp_size=1, ep_group=None,
         tp_group=None, converter=None, *, rules=None, source_layout=None, backend=None, max_gap=0, threads=None,
         device=None, ring=None, dtype=None):
    """The state dict of the checkpoint at ``path`` converted to ``layout``
    ("fused": transformers v5 ``experts.gate_up_proj [E, 2I, H]`` /
    ``experts.down_proj [E, H, I]``; "per-expert": the Hub's names), as a
    :class:`LoadStream` of ``(name, tensor)`` pairs read shard by shard.

    Parallel slicing (fused layout only) of the fused expert tensors; every
    other tensor is given whole:

    - ``ep_size > 1``: experts ``[ep_rank*E/ep_size, (ep_rank+1)*E/ep_size)``;
      E % ep_size != 0 raises.
    - ``tp_size > 1``, over the expert intermediate size I (I % tp_size != 0
      raises), Il = I/tp_size: ``gate_up_proj`` becomes ``[E_local, 2*Il, H]``,
      gate rows ``[tp_rank*Il, (tp_rank+1)*Il)`` followed by the up rows of the
      same range; ``down_proj`` becomes ``[E_local, H, Il]``.
    - FP8 block scales (``*_scale_inv``) are cut in units of the quantization
      block (``quantization_config.weight_block_size``, else 128); a slice
      that does not fall on block boundaries raises.

    Only the rank's bytes are read from disk, from a per-expert or a fused
    checkpoint. ``ep_group`` / ``tp_group``: take rank and size from
    torch.distributed process groups.

    ``converter``: an object implementing the streaming protocol
    (can_handle, convert, finalize; see moepack.StreamingConverter) to use
    instead of moepack's conversion; it is fed every source tensor, whole.
    ``layout``, ``model_type``, ``rules`` and ``source_layout`` then do not
    apply, and parallel slicing is refused.

    ``backend``: "torch" (the default when torch imports) or "numpy"
    (bf16 as uint16, 8-bit floats as uint8 bit patterns).

    ``max_gap``: reads of the rank's bytes at most this many bytes apart in a
    file are merged into one read, gap included (fewer, larger reads; a
    tensor-parallel down_proj slice is otherwise one short read per row).
    0, the default, reads exactly the rank's bytes.

    ``threads``: a tensor larger than 8 MiB is read in chunks over this many
    threads (default: one per core), the GIL released.

    Host buffers are reused: a tensor's memory is used again for a later
    tensor once nothing (no tensor, view or array made from it) refers to
    it, so a ``param.copy_(t)`` loop alternates two buffers, each grown in
    place to the largest tensor it held, and touches no more fresh memory
    than the two largest tensors (a tensor the caller keeps is never
    overwritten).

    ``device``: yield tensors allocated on this torch device, read through
    ``ring`` (a :class:`HostRing`, default 4 pinned slots of 16 MiB): host
    memory stays at the ring's size however large a tensor is.

    ``dtype``: "bf16", "f16" or "f32" (or ``torch.bfloat16``, ...)
    dequantizes FP8 block-scaled and MXFP4 weights as they are read, as
    ``convert --dtype`` does (the scales are consumed); with parallel
    slicing a rank computes only its slice, from its own bytes and scales.
    """
    if converter is not None:
        check_converter(converter)
        if dtype is not None:
            raise InvalidArgumentError("dtype= with a converter: give the converter the dtype "
                                       "(StreamingConverter(..., dtype=...))")
    torch = _backend(backend)
    device = device_of(torch, device)
    if device is not None and converter is not None:
        raise InvalidArgumentError("device= with a converter: the converter works on host tensors")
    if ring is not None and device is None:
        raise InvalidArgumentError("ring= stages tensors for device=; pass device too")
    threads = threads_arg(threads)
    l, parallel = open_loader(path, layout, model_type, rules, source_layout, (ep_rank, ep_size, tp_rank, tp_size),
                              (ep_group, tp_group), converter is not None, max_gap, dtype)
    return LoadStream(l, parallel, converter, torch, threads, device, ring or (HostRing() if device else None))
