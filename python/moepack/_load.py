"""moepack.load: the converted state dict of a checkpoint, one tensor at a
time, each process reading only its own expert- and tensor-parallel slice."""

import os

from . import _dtypes, _moepack
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

    Each iteration reads the tensors anew, one at a time, in the order of
    their bytes in the source shards: at most one tensor (plus what the
    caller keeps, plus, with a converter, the experts of fused tensors still
    being assembled) is in memory. All errors the plan or the slicing can
    find were raised by ``load`` already.
    """

    def __init__(self, path, layout, model_type, rules, source_layout, parallel, converter, backend, max_gap=0):
        self._torch = _backend(backend)
        self._converter = converter
        raw = converter is not None
        ep_rank, ep_size, tp_rank, tp_size = parallel
        self._l = _moepack.Loader(os.fspath(path), layout, model_type or "",
                                  "" if rules is None else os.fspath(rules), source_layout, ep_rank, ep_size, tp_rank,
                                  tp_size, raw, max_gap)
        self.ep_rank, self.ep_size, self.tp_rank, self.tp_size = parallel

    # --- what will be read ---
    def __len__(self):
        if self._converter is not None:
            raise TypeError("the number of tensors a converter yields is known only after loading")
        return len(self._l)

    def tensors(self):
        """[{name, dtype, shape, full_shape, nbytes, split}] in reading order
        (source tensors when a converter is given)."""
        keys = ("name", "dtype", "shape", "full_shape", "nbytes", "split")
        return [dict(zip(keys, self._l.info(i))) for i in range(len(self._l))]

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
    def _read(self, i):
        name, dtype, shape, _, _, _ = self._l.info(i)
        arr = _dtypes.empty(dtype, shape)
        self._l.read_into(i, arr.reshape(-1).view("uint8"))
        return name, dtype, (_dtypes.to_torch(arr, dtype, self._torch) if self._torch is not None else arr)

    def __iter__(self):
        if self._converter is None:
            for i in range(len(self._l)):
                name, _, t = self._read(i)
                yield name, t
            return
        conv = self._converter
        ours = isinstance(conv, StreamingConverter)
        rename = getattr(conv, "rename", None)
        rename = rename if callable(rename) else None
        for i in range(len(self._l)):
            name, dtype, t = self._read(i)
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
         tp_group=None, converter=None, *, rules=None, source_layout=None, backend=None, max_gap=0):
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
    """
    if converter is not None:
        check_converter(converter)
    ep_rank, ep_size = _group_rank(ep_group, ep_rank, ep_size, "ep")
    tp_rank, tp_size = _group_rank(tp_group, tp_rank, tp_size, "tp")
    for what, v in (("ep_rank", ep_rank), ("ep_size", ep_size), ("tp_rank", tp_rank), ("tp_size", tp_size),
                    ("max_gap", max_gap)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidArgumentError(f"{what} must be an int, got {type(v).__name__}")
    if max_gap < 0:
        raise InvalidArgumentError(f"max_gap must not be negative, got {max_gap}")
    return LoadStream(path, layout, model_type, rules, source_layout, (ep_rank, ep_size, tp_rank, tp_size), converter,
                      backend, max_gap)
