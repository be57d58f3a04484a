"""One-call commands: the CLI's inspect, convert and verify as functions."""

import json
import os
import re

from . import _moepack
from .errors import InvalidArgumentError, MismatchError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size):
    """Bytes of a size as the CLI takes it: an int, or "5GB", "500MB", "64KiB" (decimal units unless *iB)."""
    if isinstance(size, bool):
        raise InvalidArgumentError(f"invalid size {size!r} (expected e.g. 5GB, 500MB)")
    if isinstance(size, int):
        if size <= 0:
            raise InvalidArgumentError("size must be positive")
        return size
    text = str(size)
    m = re.fullmatch(r"([0-9]+)(.*)", text)
    if not m:
        raise InvalidArgumentError(f"invalid size '{text}' (expected e.g. 5GB, 500MB)")
    unit = m.group(2).upper()
    if unit not in _UNITS:
        raise InvalidArgumentError(f"invalid size unit in '{text}' (use B, KB, MB, GB, TB, KiB, MiB, GiB)")
    value = int(m.group(1)) * _UNITS[unit]
    if value == 0:
        raise InvalidArgumentError("size must be positive")
    if value >= 2**64:
        raise InvalidArgumentError(f"size '{text}' is too large")
    return value


def _path(p, what):
    if p is None:
        raise InvalidArgumentError(f"{what} is required")
    return os.fspath(p)


def _opt_path(p):
    return "" if p is None else os.fspath(p)


def inspect(path):
    """What a checkpoint holds and which MoE layout it is in: the dict that
    ``moepack inspect --json PATH`` prints. Reads headers only."""
    return json.loads(_moepack.inspect(_path(path, "path")))


def convert(src, dst, to="fused", model_type=None, rules=None, max_shard_size="5GB", threads=0, force=False,
            dry_run=False, source_layout=None, sync=True):
    """Converts the checkpoint SRC into a new directory DST, as ``moepack
    convert``. Returns the plan summary that ``convert --json`` prints (with
    the per-tensor list for a dry run). ``to``: "fused" or "per-expert";
    ``rules``: a rule file instead of a built-in family; ``source_layout``:
    "hf" or "v5" for fused tensors whose shape is ambiguous. DST must not
    exist unless ``force``; nothing is written on error. ``sync=False`` skips
    flushing DST to disk before it is published (``convert --no-sync``)."""
    size = parse_size(max_shard_size)
    dst_s = "" if dst is None and dry_run else _path(dst, "dst (unless dry_run)")
    out = _moepack.convert(_path(src, "src"), dst_s, to, model_type or "", _opt_path(rules), size, int(threads),
                           bool(force), bool(dry_run), source_layout, bool(sync))
    return json.loads(out)


def verify(src, dst, model_type=None, rules=None, source_layout=None, threads=0, check=True, forward=False):
    """Proves that DST is SRC under the conversion, as ``moepack verify``.
    Returns what ``verify --json`` prints: {"ok", "to", "tensors", "pieces",
    "bytes_hashed", "problem"}, plus "forward" (per layer) with ``forward``;
    with ``check`` (the default) a difference raises MismatchError carrying
    the CLI's message instead."""
    r = json.loads(_moepack.verify(_path(src, "src"), _path(dst, "dst"), model_type or "", _opt_path(rules),
                                   source_layout, int(threads), bool(forward)))
    if check and not r["ok"]:
        raise MismatchError("verify: " + r["problem"])
    return r


def families():
    """The model families whose rules are built in."""
    return list(_moepack.families())
