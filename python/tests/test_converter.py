"""The streaming converter protocol: moepack's StreamingConverter from
Python, load(converter=...) with it and with a user's own object, and the
up-front TypeError for objects that do not implement the protocol."""

import random
import re

import numpy as np
import pytest
import torch

import moepack
from conftest import DSV3_FP8, QWEN_BF16, QWEN_FUSED, VL_BF16, read_safetensors, same_bits


def source_tensors(path, torch_tensors=True):
    out = []
    for name, (dtype, shape, arr) in read_safetensors(path).items():
        if torch_tensors:
            t = torch.from_numpy((arr.view(np.int16) if arr.dtype == np.uint16 else arr).copy())
            if dtype == "BF16":
                t = t.view(torch.bfloat16)
            out.append((name, t))
        else:
            out.append((name, arr, dtype))
    return out


@pytest.mark.parametrize("args", [QWEN_BF16, VL_BF16], ids=["qwen3_moe", "qwen3_vl_moe"])
def test_streaming_converter_matches_load(synth, args):
    src = synth(*args)
    want = moepack.load(src).state_dict()
    conv = moepack.StreamingConverter(config=src)
    assert conv.family == moepack.load(src).family
    items = source_tensors(src)
    random.Random(7).shuffle(items)  # any arrival order
    got = {}
    for name, t in items:
        if conv.can_handle(name):
            for n, out in conv.convert(name, t):
                got[n] = out
        else:
            got[conv.rename(name)] = t
    assert conv.finalize() == []
    assert conv.pending_bytes == 0
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].dtype == want[n].dtype and torch.equal(got[n], want[n]), n


def test_numpy_inputs_and_config_dict(synth):
    src = synth(*QWEN_BF16)
    import json
    config = json.loads((src / "config.json").read_text())
    conv = moepack.StreamingConverter(model_type="qwen3_moe", config=config)
    want = moepack.load(src, backend="numpy").state_dict()
    got = {}
    for name, arr, dtype in source_tensors(src, torch_tensors=False):
        if conv.can_handle(name):
            for n, out in conv.convert(name, arr, dtype=dtype):
                assert isinstance(out, np.ndarray)
                got[n] = out
    fused = [n for n in want if n.endswith("gate_up_proj") or n.endswith("down_proj")]
    assert sorted(got) == sorted(fused)
    for n in fused:
        assert np.array_equal(got[n], want[n])


def test_to_per_expert(synth):
    src = synth(*QWEN_FUSED)
    conv = moepack.StreamingConverter(config=src, to="per-expert")
    want = moepack.load(src, layout="per-expert").state_dict()
    got = {}
    for name, t in source_tensors(src):
        for n, out in (conv.convert(name, t) if conv.can_handle(name) else [(conv.rename(name), t)]):
            got[n] = out
    conv.finalize()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_finalize_names_what_never_completed(synth):
    src = synth(*QWEN_BF16)
    conv = moepack.StreamingConverter(config=src)
    for name, t in source_tensors(src):
        if conv.can_handle(name) and ".experts.5." not in name:
            conv.convert(name, t)
    assert conv.pending_bytes > 0
    with pytest.raises(moepack.CorruptCheckpointError) as e:
        conv.finalize()
    msg = str(e.value)
    assert msg.startswith("conversion incomplete: ")
    assert "model.layers.0.mlp.experts.gate_up_proj incomplete (8 experts)" in msg
    assert "arrived for experts 0-4,6-7" in msg


def test_convert_errors_carry_the_library_message(synth):
    src = synth(*QWEN_BF16)
    conv = moepack.StreamingConverter(config=src)
    t = torch.zeros(16, 32, dtype=torch.bfloat16)
    conv.convert("model.layers.0.mlp.experts.1.gate_proj.weight", t)
    with pytest.raises(moepack.CorruptCheckpointError, match="expert 1 gate_proj.weight arrived twice"):
        conv.convert("model.layers.0.mlp.experts.1.gate_proj.weight", t)
    with pytest.raises(moepack.CorruptCheckpointError, match="expert 9 is out of range: config.json says 8 experts"):
        conv.convert("model.layers.0.mlp.experts.9.gate_proj.weight", t)
    with pytest.raises(moepack.InvalidArgumentError, match="needs config="):
        moepack.StreamingConverter(model_type="qwen3_moe")
    with pytest.raises(moepack.InvalidArgumentError, match="no_such"):
        moepack.StreamingConverter(model_type="no_such", config=src)


@pytest.mark.parametrize("args", [QWEN_BF16, VL_BF16, DSV3_FP8], ids=["qwen3_moe", "qwen3_vl_moe", "deepseek_v3"])
def test_load_with_moepacks_converter(synth, args):
    src = synth(*args)
    want = moepack.load(src).state_dict()
    got = dict(moepack.load(src, converter=moepack.StreamingConverter(config=src)))
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].dtype == want[n].dtype and same_bits(got[n], want[n]), n


class TorchFuser:
    """A user's converter in plain torch: collects experts, stacks and
    concatenates them when a layer is complete (gate rows, then up)."""

    pattern = re.compile(r"(.*\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")

    def __init__(self, num_experts):
        self.E = num_experts
        self.pending = {}
        self.calls = {"can_handle": 0, "convert": 0, "finalize": 0}

    def can_handle(self, name):
        self.calls["can_handle"] += 1
        return bool(self.pattern.match(name))

    def convert(self, name, tensor):
        self.calls["convert"] += 1
        prefix, j, proj = self.pattern.match(name).groups()
        key = (prefix, "down" if proj == "down" else "gate_up")
        slot = self.pending.setdefault(key, {})
        slot[(int(j), proj)] = tensor
        need = self.E * (1 if key[1] == "down" else 2)
        if len(slot) < need:
            return None
        del self.pending[key]
        if key[1] == "down":
            return [(f"{prefix}.down_proj", torch.stack([slot[(j, "down")] for j in range(self.E)]))]
        fused = torch.stack([torch.cat([slot[(j, "gate")], slot[(j, "up")]]) for j in range(self.E)])
        return {f"{prefix}.gate_up_proj": fused}

    def finalize(self):
        self.calls["finalize"] += 1
        if self.pending:
            raise RuntimeError(f"incomplete: {sorted(self.pending)}")


def test_load_with_a_users_converter(synth):
    src = synth(*QWEN_BF16)
    want = moepack.load(src).state_dict()
    fuser = TorchFuser(8)
    got = dict(moepack.load(src, converter=fuser))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[n], want[n]) for n in want)
    assert fuser.calls["finalize"] == 1 and fuser.calls["convert"] == 2 * 8 * 3


class Missing:
    def can_handle(self, name):
        return False


class NotCallable:
    can_handle = True
    convert = None

    def finalize(self):
        return []


def test_bad_converter_objects_are_refused_up_front(synth):
    src = synth(*QWEN_BF16)
    with pytest.raises(TypeError) as e:
        moepack.load(src, converter=Missing())
    assert "converter Missing does not implement the streaming protocol" in str(e.value)
    assert "convert is missing; finalize is missing" in str(e.value)
    with pytest.raises(TypeError) as e:
        moepack.load(src, converter=NotCallable())
    assert "can_handle is not callable (bool); convert is not callable (NoneType)" in str(e.value)
    assert "finalize" not in str(e.value).split("(needs")[0]
    with pytest.raises(TypeError, match="can_handle is missing; convert is missing; finalize is missing"):
        moepack.load(src, converter=object())
    with pytest.raises(TypeError):
        moepack.check_converter(42)
    assert moepack.check_converter(TorchFuser(8))


def test_converter_output_must_be_pairs(synth):
    src = synth(*QWEN_BF16)

    class Bad(TorchFuser):
        def convert(self, name, tensor):
            return 42

    with pytest.raises(TypeError, match="converter.convert must return None, a dict or a list"):
        list(moepack.load(src, converter=Bad(8)))


def test_converter_with_parallel_is_refused(synth):
    src = synth(*QWEN_BF16)
    with pytest.raises(moepack.InvalidArgumentError, match="needs moepack's conversion"):
        moepack.load(src, converter=TorchFuser(8), ep_size=2)
