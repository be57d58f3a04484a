"""moepack.load yields exactly the converted checkpoint, in both layouts,
from per-expert, fused and fused-transposed sources, with the right dtypes."""

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import moepack
from conftest import (DSV3_FP8, MIXTRAL_F16, QWEN_BF16, QWEN_FUSED, VL_BF16, read_safetensors, same_bits)

SOURCES = {"qwen3_bf16": QWEN_BF16, "qwen3_fused_f32": QWEN_FUSED, "qwen3_vl_transposed": VL_BF16,
           "mixtral_f16": MIXTRAL_F16, "deepseek_v3_fp8": DSV3_FP8}

TORCH_OF = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
            "F8_E4M3": getattr(torch, "float8_e4m3fn", torch.uint8)}


@pytest.mark.parametrize("layout", ["fused", "per-expert"])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_load_equals_the_converted_checkpoint(synth, converted, source, layout):
    src = synth(*SOURCES[source])
    want = read_safetensors(converted(src, layout))
    stream = moepack.load(src, layout=layout)
    got = {}
    for name, t in stream:
        assert isinstance(t, torch.Tensor)
        assert name not in got
        got[name] = t
    assert got.keys() == want.keys()
    for name, (dtype, shape, arr) in want.items():
        t = got[name]
        assert list(t.shape) == shape, name
        assert t.dtype == TORCH_OF[dtype], (name, dtype, t.dtype)
        assert same_bits(t, arr), name
    assert stream.bytes_read == stream.total_bytes == stream.rank_bytes
    assert len(stream) == len(want)


def test_bf16_values(synth):
    src = synth(*QWEN_BF16)
    tensors = moepack.load(src).state_dict()
    raw = read_safetensors(src)["model.layers.0.mlp.experts.3.up_proj.weight"][2]
    fused = tensors["model.layers.0.mlp.experts.gate_up_proj"]
    assert fused.dtype == torch.bfloat16 and fused.shape == (8, 32, 32)
    # bf16 is the top half of an f32: compare as numbers.
    expect = torch.from_numpy((raw.astype(np.uint32) << 16).view(np.float32))
    assert torch.equal(fused[3, 16:].float(), expect)


def test_fp8_dtypes(synth):
    src = synth(*DSV3_FP8)
    tensors = moepack.load(src).state_dict()
    w = tensors["model.layers.1.mlp.experts.gate_up_proj"]
    s = tensors["model.layers.1.mlp.experts.gate_up_proj_scale_inv"]
    assert w.dtype == moepack.torch_dtype("F8_E4M3") == getattr(torch, "float8_e4m3fn", torch.uint8)
    assert w.shape == (4, 512, 256)
    assert s.dtype == torch.float32 and s.shape == (4, 4, 2)
    raw = read_safetensors(src)["model.layers.1.mlp.experts.2.up_proj.weight"][2]
    assert same_bits(w[2, 256:], raw)


def test_dtype_table_uses_the_float8_types_when_torch_has_them():
    names = ("float8_e4m3fn", "float8_e5m2", "bfloat16", "uint8", "int16", "int32", "int64", "float32")
    fake = types.SimpleNamespace(**{n: f"torch.{n}" for n in names})
    assert moepack.torch_dtype("F8_E4M3", fake) == "torch.float8_e4m3fn"
    assert moepack.torch_dtype("F8_E5M2", fake) == "torch.float8_e5m2"
    assert moepack.torch_dtype("BF16", fake) == "torch.bfloat16"
    assert moepack.torch_dtype("U16", fake) == "torch.int16"  # no uint16: same-width bits
    old = types.SimpleNamespace(**{n: f"torch.{n}" for n in names if not n.startswith("float8")})
    assert moepack.torch_dtype("F8_E4M3", old) == "torch.uint8"
    assert moepack.torch_dtype("F8_E5M2", old) == "torch.uint8"
    assert moepack.numpy_dtype("BF16") == np.uint16
    assert moepack.numpy_dtype("F8_E4M3") == np.uint8
    with pytest.raises(moepack.InvalidArgumentError):
        moepack.torch_dtype("F7")


def test_numpy_backend(synth, converted):
    src = synth(*QWEN_BF16)
    want = read_safetensors(converted(src))
    got = dict(moepack.load(src, backend="numpy"))
    assert got.keys() == want.keys()
    for name, (dtype, shape, arr) in want.items():
        assert isinstance(got[name], np.ndarray)
        assert got[name].dtype == np.uint16  # bf16 bits
        assert np.array_equal(got[name], arr)
    f8 = dict(moepack.load(synth(*DSV3_FP8), backend="numpy"))
    assert f8["model.layers.1.mlp.experts.down_proj"].dtype == np.uint8


def test_without_torch_yields_numpy(synth):
    src = synth(*QWEN_BF16)
    code = f"""
import sys
sys.modules["torch"] = None  # import torch fails
import numpy as np, moepack
items = list(moepack.load({str(src)!r}, ep_size=2, ep_rank=1))
assert all(isinstance(t, np.ndarray) for _, t in items)
d = dict(items)
assert d["model.layers.1.mlp.experts.down_proj"].shape == (4, 32, 16)
assert d["model.layers.1.mlp.experts.down_proj"].dtype == np.uint16
print("ok", len(items))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": ":".join(sys.path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_streaming_reads_as_it_goes(synth):
    src = synth(*QWEN_BF16)
    stream = moepack.load(src)
    assert stream.bytes_read == 0  # opening reads headers only
    it = iter(stream)
    name, t = next(it)
    assert stream.bytes_read == t.numel() * t.element_size() < stream.total_bytes
    rest = list(it)
    assert stream.bytes_read == stream.total_bytes
    assert len(rest) + 1 == len(stream)
    infos = stream.tensors()
    assert [i["name"] for i in infos] == [name] + [n for n, _ in rest]
    assert all(i["split"] == "whole" for i in infos)


def test_bad_arguments(synth):
    src = synth(*QWEN_BF16)
    with pytest.raises(moepack.InvalidArgumentError, match="is not a layout"):
        moepack.load(src, layout="stacked")
    with pytest.raises(moepack.InvalidArgumentError, match="backend"):
        moepack.load(src, backend="jax")
    with pytest.raises(moepack.InvalidArgumentError, match="ep_size must be an int"):
        moepack.load(src, ep_size=2.0)
