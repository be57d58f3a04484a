"""Shared fixtures: the moepack CLI, cached synthetic checkpoints, and an
independent safetensors reader (json + numpy, no moepack code) to compare
against."""

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

try:
    import moepack  # noqa: F401
except ImportError:  # a CMake build tree next to the sources
    for build in ("build", "build-py"):
        if (REPO / build / "python" / "moepack").is_dir():
            sys.path.insert(0, str(REPO / build / "python"))
            break
    import moepack  # noqa: F401


def _find_binary():
    env = os.environ.get("MOEPACK_BINARY")
    if env:
        return env
    ext = Path(moepack._moepack.__file__).resolve()
    for cand in (ext.parents[2] / "moepack", REPO / "build" / "moepack"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("moepack")
    if found:
        return found
    pytest.exit("moepack CLI not found: set MOEPACK_BINARY", returncode=2)


MOEPACK = _find_binary()


def run_cli(*args, check=True):
    r = subprocess.run([MOEPACK, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"moepack {' '.join(map(str, args))} failed: {r.stderr}")
    return r


def cli_error(*args):
    """The message the CLI prints after 'moepack: error: '."""
    r = run_cli(*args, check=False)
    assert r.returncode != 0, r.stdout
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("moepack: error: "), r.stderr
    return line[len("moepack: error: "):]


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """synth(*flags) -> path of a checkpoint made once per session per flags."""
    cache = {}
    base = tmp_path_factory.mktemp("ckpt")

    def make(*flags):
        key = tuple(map(str, flags))
        if key not in cache:
            dst = base / f"c{len(cache)}"
            run_cli("synth", dst, *key)
            cache[key] = dst
        return cache[key]

    return make


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """converted(src, to) -> path of SRC converted by the CLI (once)."""
    cache = {}
    base = tmp_path_factory.mktemp("conv")

    def make(src, to="fused"):
        key = (str(src), to)
        if key not in cache:
            dst = base / f"c{len(cache)}"
            run_cli("convert", src, dst, "--to", to, "--threads", "2")
            cache[key] = dst
        return cache[key]

    return make


# Families and sizes used across the tests (small; experts straddle shards).
QWEN_BF16 = ("--model-type", "qwen3_moe", "--dtype", "bf16", "--layers", "2", "--experts", "8", "--hidden", "32",
             "--intermediate", "16", "--max-shard-size", "20KB", "--seed", "5")
QWEN_F32 = ("--model-type", "qwen3_moe", "--dtype", "f32", "--layers", "2", "--experts", "8", "--hidden", "16",
            "--intermediate", "8", "--max-shard-size", "8KB")
QWEN_FUSED = QWEN_F32 + ("--layout", "fused")
VL_BF16 = ("--model-type", "qwen3_vl_moe", "--dtype", "bf16", "--layers", "2", "--experts", "8", "--hidden", "32",
           "--intermediate", "12", "--max-shard-size", "20KB")
MIXTRAL_F16 = ("--model-type", "mixtral", "--dtype", "f16", "--layers", "2", "--experts", "4", "--hidden", "16",
               "--intermediate", "8")
DSV3_FP8 = ("--model-type", "deepseek_v3", "--dtype", "fp8", "--layers", "2", "--experts", "4", "--hidden", "256",
            "--intermediate", "256")

_NP = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "F16": "float16",
       "BF16": "uint16", "I32": "int32", "U32": "uint32", "F32": "float32", "F64": "float64", "I64": "int64",
       "U64": "uint64", "F8_E4M3": "uint8", "F8_E5M2": "uint8"}


def read_safetensors(path):
    """{name: (dtype, shape, numpy storage array)} of a checkpoint directory,
    read with json + numpy only."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else [
        "model.safetensors"]
    out = {}
    for fname in files:
        raw = (path / fname).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        for name, h in header.items():
            b, e = h["data_offsets"]
            arr = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=_NP[h["dtype"]]).reshape(h["shape"])
            out[name] = (h["dtype"], list(h["shape"]), arr)
    return out


def as_storage(t):
    """A torch tensor or numpy array as a numpy array of its raw bits."""
    if isinstance(t, np.ndarray):
        return t
    import torch
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(width).numpy()


def same_bits(a, b):
    a, b = as_storage(a), as_storage(b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()
