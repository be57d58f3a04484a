"""One-call commands: the CLI's inspect, convert and verify as functions."""

import json
import os

from . import _moepack
from .errors import InvalidArgumentError, MismatchError

def parse_size(size):
    """Bytes of a size as the CLI takes it: an int, or "5GB", "500MB", "64KiB"
    (decimal units unless *iB); the library parses it, so both accept the
    same spellings."""
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise InvalidArgumentError(f"invalid size {size!r} (expected e.g. 5GB, 500MB)")
    return _moepack.parse_size(str(size))


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


def dtype_name(dtype):
    """The library's spelling of a dtype change: None or "" (keep), "bf16",
    "f16", "f32", "fp8", or the torch dtype torch.bfloat16 / float16 /
    float32 / float8_e4m3fn."""
    if dtype is None:
        return ""
    if isinstance(dtype, str):
        return dtype
    names = {"torch.bfloat16": "bf16", "torch.float16": "f16", "torch.float32": "f32", "torch.float8_e4m3fn": "fp8"}
    if str(dtype) in names:
        return names[str(dtype)]
    raise InvalidArgumentError(f"dtype: {dtype!r} is not a dtype (bf16, f16, f32 or fp8)")


def convert(src, dst, to="fused", model_type=None, rules=None, max_shard_size="5GB", threads=0, force=False,
            dry_run=False, source_layout=None, sync=True, dtype=None, align_pages=False):
    """Converts the checkpoint SRC into a new directory DST, as ``moepack
    convert``. Returns the plan summary that ``convert --json`` prints (with
    the per-tensor list for a dry run). ``to``: "fused" or "per-expert";
    ``rules``: a rule file instead of a built-in family; ``source_layout``:
    "hf" or "v5" for fused tensors whose shape is ambiguous. DST must not
    exist unless ``force``; nothing is written on error. ``sync=False`` skips
    flushing DST to disk before it is published (``convert --no-sync``).
    ``dtype``: "bf16", "f16" or "f32" (or the torch dtype) dequantizes every
    FP8 block-scaled and MXFP4 weight while converting (``convert --dtype``).
    ``align_pages``: pad each output header so that copied bytes keep their
    offset within a page, which makes the copy faster (``convert
    --align-pages``; valid safetensors, but not the reference writer's
    header bytes)."""
    size = parse_size(max_shard_size)
    dst_s = "" if dst is None and dry_run else _path(dst, "dst (unless dry_run)")
    out = _moepack.convert(_path(src, "src"), dst_s, to, model_type or "", _opt_path(rules), size, int(threads),
                           bool(force), bool(dry_run), source_layout, bool(sync), dtype_name(dtype),
                           bool(align_pages))
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
    """The model families whose rules are built in, as ``moepack families
    --json`` lists them: {family: {"description", "model_types",
    "architectures", "hub_layout", "fused": [{"name", "shape", "role",
    "from"}]}}, in the CLI's order (``"qwen3_moe" in families()`` works)."""
    return {f.pop("family"): f for f in json.loads(_moepack.families())}
