"""moepack.load_into: a checkpoint read straight into a model's existing
parameters (or any state dict of tensors), each byte read once, into the
tensor's own memory.

Everything that can be wrong is found before a byte is read: names missing
on either side, and any tensor whose dtype, shape, device or memory cannot
take the checkpoint's bytes as they are (a non-contiguous view, a tensor on
another device, a read-only array, two targets sharing memory).
"""

import os
from typing import List, NamedTuple, Tuple

from . import _dtypes
from ._load import _backend, device_of, open_loader, threads_arg
from ._ring import HostRing
from .errors import InvalidArgumentError


class LoadResult(NamedTuple):
    """What ``load_into`` did, in the manner of ``load_state_dict``.

    missing_keys: target names the checkpoint does not have (none of them
    was written). unexpected_keys: checkpoint names the target does not
    have (not read). mismatched: ``(name, checkpoint, target)`` for a name
    both have whose target cannot take the bytes as they are (not written),
    e.g. ``("...gate_up_proj", "BF16 [8, 32, 32]", "float32 [8, 32, 32]")``.
    """

    missing_keys: List[str]
    unexpected_keys: List[str]
    mismatched: List[Tuple[str, str, str]]


def _targets(target):
    """name -> tensor (or numpy array) of a Module or a state dict."""
    if hasattr(target, "state_dict") and callable(target.state_dict) and not isinstance(target, dict):
        return dict(target.state_dict(keep_vars=True))
    if not hasattr(target, "items"):
        raise TypeError(f"target must be a torch.nn.Module or a dict of tensors, got {type(target).__name__}")
    return dict(target.items())


def _describe(t):
    if _dtypes.is_torch_tensor(t):
        return f"{str(t.dtype).replace('torch.', '')} {list(t.shape)}"
    return f"{getattr(t, 'dtype', type(t).__name__)} {list(getattr(t, 'shape', []))}"


def _problem(t, dtype, shape, torch, device):
    """Why target tensor `t` cannot take a checkpoint tensor's bytes, or None."""
    want_shape = _dtypes.storage_shape(dtype, shape)
    if _dtypes.is_torch_tensor(t):
        if torch is None or t.dtype != _dtypes.torch_dtype(dtype, torch):
            return "dtype"
        where = t.device
        if device is None and where.type != "cpu":
            return f"on {where}; pass device='{where}'"
        if device is not None and where != device and not (where.type == device.type and device.index is None):
            return f"on {where}, not {device}"
        if t.is_sparse or where.type == "meta":
            return f"has no memory of its own ({t.layout if t.is_sparse else 'meta'})"
    elif hasattr(t, "dtype") and hasattr(t, "flags"):  # numpy
        if device is not None:
            return f"a numpy array, not a tensor on {device}"
        if t.dtype != _dtypes.numpy_dtype(dtype):
            return "dtype"
        if not t.flags.writeable:
            return "read-only"
    else:
        return f"not a tensor ({type(t).__name__})"
    if tuple(t.shape) != want_shape:
        return "shape"
    if not (t.is_contiguous() if _dtypes.is_torch_tensor(t) else t.flags.c_contiguous):
        return "not contiguous"
    return None


def _span(t):
    if _dtypes.is_torch_tensor(t):
        return t.data_ptr(), t.numel() * t.element_size()
    return t.ctypes.data, t.nbytes


def load_into(target, path, layout="fused", model_type=None, ep_rank=0, ep_size=1, tp_rank=0, tp_size=1,
              ep_group=None, tp_group=None, *, rules=None, source_layout=None, strict=True, threads=None,
              device=None, ring=None, max_gap=0, dtype=None):
    """Reads the checkpoint at ``path``, converted to ``layout`` and cut for
    the rank as ``moepack.load`` does (same options), straight into the
    tensors of ``target``: a ``torch.nn.Module`` (its ``state_dict``:
    parameters and persistent buffers) or a dict of tensors. No tensor is
    allocated and no byte is copied twice; returns a :class:`LoadResult`.

    Names, dtypes, shapes and memory are checked before any read. With
    ``strict`` (the default) any missing, unexpected or mismatched name
    raises ``InvalidArgumentError`` listing them, and nothing is written.
    With ``strict=False`` the names that match are loaded and the rest are
    reported. Target names that share one tensor's memory (tied weights)
    are read once, and a tied name the checkpoint lacks is not missing.

    CPU targets are read into in place over ``threads`` threads (default:
    one per core), the GIL released. ``device``: the targets live on this
    torch device (e.g. ``"cuda:0"``) and reach it through ``ring``, a
    :class:`HostRing` of pinned host buffers (default 4 x 16 MiB) whose
    reads overlap the host-to-device copies.
    """
    torch = _backend(None)
    device = device_of(torch, device)
    if ring is not None and device is None:
        raise InvalidArgumentError("ring= stages tensors for device=; pass device too")
    threads = threads_arg(threads)
    tensors = _targets(target)
    l, _ = open_loader(path, layout, model_type, rules, source_layout, (ep_rank, ep_size, tp_rank, tp_size),
                       (ep_group, tp_group), False, max_gap, dtype)
    index = {}
    for i in range(len(l)):
        name, dtype, shape, _, _, _ = l.info(i)
        index[name] = (i, dtype, shape)

    mismatched, ready = [], []
    for name, t in tensors.items():
        if name not in index:
            continue
        i, dtype, shape = index[name]
        why = _problem(t, dtype, shape, torch, device)
        if why is None:
            ready.append((name, i, t))
            continue
        got = _describe(t) + ("" if why in ("dtype", "shape") else f" ({why})")
        mismatched.append((name, f"{dtype} {list(shape)}", got))

    # Tied names (one tensor's memory) are read once; partial overlaps are refused.
    jobs, spans, seen = [], [], set()
    for name, i, t in ready:
        start, n = _span(t)
        if n and (start, n, index[name][1]) in seen:
            continue
        seen.add((start, n, index[name][1]))
        jobs.append((name, i, t))
        if n:
            spans.append((start, n, name))
    spans.sort()
    overlapping = set()
    for (a, an, aname), (b, _, bname) in zip(spans, spans[1:]):
        if a + an > b:
            mismatched.append((bname, index[bname][1] + " " + str(list(index[bname][2])),
                               f"{_describe(tensors[bname])} (overlaps the memory of '{aname}')"))
            overlapping.update((aname, bname))
    jobs = sorted((j for j in jobs if j[0] not in overlapping), key=lambda j: j[1])  # the checkpoint's order
    loaded = {(s, n) for s, n, name in spans if name not in overlapping}
    missing = [n for n, t in tensors.items() if n not in index and not (_is_array(t) and _span(t) in loaded)]
    unexpected = [n for n in index if n not in tensors]

    if strict and (missing or unexpected or mismatched):
        raise InvalidArgumentError("load_into: nothing was read: " + _summary(missing, unexpected, mismatched))

    if jobs:
        _read(l, jobs, torch, threads, device, ring)
    return LoadResult(missing, unexpected, mismatched)


def _is_array(t):
    return _dtypes.is_torch_tensor(t) or (hasattr(t, "ctypes") and hasattr(t, "nbytes"))


def _read(l, jobs, torch, threads, device, ring):
    if device is None:
        items = [(i, _dtypes.flat_bytes(t, torch).numpy() if _dtypes.is_torch_tensor(t) else _dtypes.flat_bytes(t))
                 for _, i, t in jobs]
        l.read_many(items, threads)
        return
    with torch.no_grad():
        (ring or HostRing()).fill(l, [(i, _dtypes.flat_bytes(t, torch)) for _, i, t in jobs], torch,
                                  threads or os.cpu_count())


def _summary(missing, unexpected, mismatched, show=5):
    def names(what, items):
        head = ", ".join(items[:show]) + (f", ... ({len(items) - show} more)" if len(items) > show else "")
        return f"{len(items)} {what}: {head}"

    parts = []
    if missing:
        parts.append(names("missing (in the target, not in the checkpoint)", [f"'{n}'" for n in missing]))
    if unexpected:
        parts.append(names("unexpected (in the checkpoint, not in the target)", [f"'{n}'" for n in unexpected]))
    if mismatched:
        parts.append(names("mismatched", [f"'{n}' (checkpoint {c}, target {t})" for n, c, t in mismatched]))
    return "; ".join(parts)
