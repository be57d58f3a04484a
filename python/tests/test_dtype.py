"""Dequantizing while converting, against a reference written here with
numpy from the formats alone (e4m3: bias 7, no infinities, subnormals
m*2^-9; e2m1 nibbles, e8m0 scales 2^(e-127)): one fp32 multiply per
element, rounded to nearest even. Bit for bit, on checkpoints that hold
every FP8 code, negative, subnormal and huge scales, partial blocks and
NaN."""

import json
import struct

import numpy as np
import pytest

import moepack
from conftest import cli_error, read_safetensors, run_cli

# ---- the reference --------------------------------------------------------


def e4m3_to_f32(codes):
    c = codes.astype(np.uint32)
    sign = np.where(c & 0x80, -1.0, 1.0).astype(np.float32)
    e = (c >> 3) & 0xF
    m = (c & 7).astype(np.float32)
    normal = (np.float32(1) + m / np.float32(8)) * np.ldexp(np.float32(1), (e.astype(np.int32) - 7))
    sub = m * np.float32(2.0 ** -9)
    v = sign * np.where(e == 0, sub, normal).astype(np.float32)
    return np.where((c & 0x7F) == 0x7F, np.float32(np.nan) * sign, v).astype(np.float32)


E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def f32_to_bf16_bits(f):
    b = np.ascontiguousarray(f, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    return np.where(nan, ((b >> 16) | 0x40).astype(np.uint16), rounded)


def f32_to_f16_bits(f):
    # numpy's float16 cast rounds to nearest even; NaNs are compared as NaN.
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(f, dtype=np.float32).astype(np.float16).view(np.uint16)


def reference_fp8(codes, scales, block=(128, 128)):
    """[R, C] codes with their [ceil(R/br), ceil(C/bc)] scales -> float32."""
    r, c = codes.shape
    s = np.repeat(np.repeat(scales, block[0], axis=0)[:r], block[1], axis=1)[:, :c]
    with np.errstate(invalid="ignore", over="ignore"):
        return (e4m3_to_f32(codes) * s.astype(np.float32)).astype(np.float32)


def reference_mxfp4(blocks, scales):
    """[.., rows, G, 16] blocks and [.., rows, G] e8m0 -> float32 [.., rows, G*32]."""
    lo, hi = E2M1[blocks & 0x0F], E2M1[blocks >> 4]
    vals = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)  # low nibble first
    with np.errstate(invalid="ignore", over="ignore"):
        exp = np.ldexp(np.float32(1), scales.astype(np.int32) - 127).astype(np.float32)
        out = (vals * exp[..., None]).astype(np.float32)
    return out.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


def bits_of(f32, dtype):
    if dtype == "BF16":
        return f32_to_bf16_bits(f32)
    if dtype == "F16":
        return f32_to_f16_bits(f32)
    return np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32)


def same(got, want_f32, dtype):
    """Bit-exact, except that NaN is compared as NaN (its payload is the CPU's)."""
    want = bits_of(want_f32, dtype)
    got = np.ascontiguousarray(got).view(want.dtype).reshape(want.shape)
    nan = np.isnan(want_f32)
    if dtype == "F32":
        got_nan = np.isnan(got.view(np.float32))
    elif dtype == "F16":
        got_nan = np.isnan(got.view(np.float16))
    else:
        got_nan = ((got & 0x7F80) == 0x7F80) & ((got & 0x7F) != 0)
    assert np.array_equal(got_nan, nan), "NaN positions differ"
    diff = np.flatnonzero((got != want) & ~nan)
    assert diff.size == 0, f"{diff.size} values differ, first at {diff[0]}: got {got.flat[diff[0]]:#x} want {want.flat[diff[0]]:#x}"


# ---- checkpoints made here ---------------------------------------------------


def write_checkpoint(path, tensors, config):
    """tensors: {name: (dtype, numpy array)} -> one model.safetensors + config.json."""
    path.mkdir(parents=True)
    header, blobs, at = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    (path / "config.json").write_text(json.dumps(config))


H, I, E = 200, 136, 4  # blocks of 128 do not tile 200 or 136: ceil grids


def grid(rows, cols):
    return (-(-rows // 128), -(-cols // 128))


def fp8_qwen(tmp_path, rng):
    """A qwen3_moe layer whose every FP8 weight uses all 256 codes, with
    scales of every kind, per-expert on the Hub."""
    scales_pool = np.array([1.0, -2.5, 2.0 ** -130, 3.0e38, 0.0, 0.013, -1e-3, 7.0], dtype=np.float32)
    t = {}

    def fp8(name, rows, cols):
        codes = rng.integers(0, 256, size=(rows, cols), dtype=np.uint8)
        codes.flat[:256] = np.arange(256, dtype=np.uint8)
        t[name + ".weight"] = ("F8_E4M3", codes)
        t[name + ".weight_scale_inv"] = ("F32", rng.choice(scales_pool, size=grid(rows, cols)).astype(np.float32))

    p = "model.layers.0."
    fp8(p + "self_attn.q_proj", 256, H)
    t[p + "input_layernorm.weight"] = ("BF16", rng.integers(0, 1 << 15, size=(H,), dtype=np.uint16))
    t[p + "mlp.gate.weight"] = ("BF16", rng.integers(0, 1 << 15, size=(E, H), dtype=np.uint16))
    for j in range(E):
        for proj, (r, c) in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
            fp8(f"{p}mlp.experts.{j}.{proj}", r, c)
    config = {"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "num_experts": E, "hidden_size": H,
              "moe_intermediate_size": I, "num_hidden_layers": 1, "torch_dtype": "bfloat16",
              "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": [128, 128]}}
    src = tmp_path / "fp8"
    write_checkpoint(src, t, config)
    return src, t


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
def test_fp8_dequantized_to_every_float_type_bit_for_bit(tmp_path, dtype):
    src, t = fp8_qwen(tmp_path, np.random.default_rng(1))
    want = {"bf16": "BF16", "f16": "F16", "f32": "F32"}[dtype]
    dst = tmp_path / "per-expert"
    moepack.convert(src, dst, to="per-expert", dtype=dtype)
    out = read_safetensors(dst)
    assert not any(n.endswith("_scale_inv") for n in out), "scales stay behind"
    for name, (st, arr) in t.items():
        if name.endswith("_scale_inv"):
            continue
        dt, shape, got = out[name]
        if st != "F8_E4M3":
            assert dt == st and got.tobytes() == arr.tobytes(), name  # untouched
            continue
        assert dt == want and shape == list(arr.shape), name
        same(got, reference_fp8(arr, t[name + "_scale_inv"][1]), want)
    # verify checks it with arithmetic of its own, and notices one changed byte.
    assert moepack.verify(src, dst)["dtype"] == dtype
    raw = bytearray((dst / "model.safetensors").read_bytes())
    raw[-3] ^= 0x01
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(bytes(raw))
    (bad / "config.json").write_text((dst / "config.json").read_text())
    with pytest.raises(moepack.MismatchError):
        moepack.verify(src, bad)
    cfg = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["torch_dtype"] == {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]


def test_fp8_dequantized_while_fusing_is_fusing_of_the_dequantized(tmp_path):
    src, t = fp8_qwen(tmp_path, np.random.default_rng(2))
    moepack.convert(src, tmp_path / "fused", dtype=torch_or_name("bf16"))
    fused = read_safetensors(tmp_path / "fused")
    gu = fused["model.layers.0.mlp.experts.gate_up_proj"]
    dn = fused["model.layers.0.mlp.experts.down_proj"]
    assert gu[0] == "BF16" and gu[1] == [E, 2 * I, H] and dn[1] == [E, H, I]
    assert not any(n.endswith("_scale_inv") for n in fused)
    for j in range(E):
        e = f"model.layers.0.mlp.experts.{j}."
        ref = [reference_fp8(t[e + p + ".weight"][1], t[e + p + ".weight_scale_inv"][1]) for p in
               ("gate_proj", "up_proj", "down_proj")]
        same(gu[2][j], np.concatenate(ref[:2], axis=0), "BF16")
        same(dn[2][j], ref[2], "BF16")
    # The fused FP8 checkpoint (scales fused like their weights) dequantizes
    # to the same bytes.
    moepack.convert(src, tmp_path / "fused8")
    moepack.convert(tmp_path / "fused8", tmp_path / "fused8-bf16", dtype="bf16")
    again = read_safetensors(tmp_path / "fused8-bf16")
    for name in fused:
        assert again[name][2].tobytes() == fused[name][2].tobytes(), name


def torch_or_name(name):
    try:
        import torch
        return {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[name]
    except ImportError:
        return name


def test_refusals_name_the_tensor_and_write_nothing(tmp_path):
    src, t = fp8_qwen(tmp_path, np.random.default_rng(3))
    cases = {
        "no_scale": (lambda d: d.pop("model.layers.0.self_attn.q_proj.weight_scale_inv"),
                     "'model.layers.0.self_attn.q_proj.weight' is F8_E4M3 but there is no"),
        "truncated_grid": (lambda d: d.__setitem__("model.layers.0.self_attn.q_proj.weight_scale_inv",
                                                   ("F32", np.ones((1, 2), dtype=np.float32))),
                           "a truncated or foreign scale grid"),
        "scale_dtype": (lambda d: d.__setitem__("model.layers.0.self_attn.q_proj.weight_scale_inv",
                                                ("BF16", np.ones(grid(256, H), dtype=np.uint16))),
                        "is BF16 but the block scales of an F8_E4M3 weight are F32"),
    }
    for case, (mutate, expect) in cases.items():
        d = dict(t)
        mutate(d)
        bad = tmp_path / case
        write_checkpoint(bad, d, json.loads((src / "config.json").read_text()))
        msg = cli_error("convert", bad, tmp_path / (case + "-out"), "--dtype", "bf16")
        assert expect in msg, msg
        assert not (tmp_path / (case + "-out")).exists()
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"]["quant_method"] = "awq"
    awq = tmp_path / "awq"
    write_checkpoint(awq, t, cfg)
    msg = cli_error("convert", awq, tmp_path / "awq-out", "--dtype", "bf16")
    assert "'awq'" in msg and "fp8" in msg, msg


def test_mxfp4_dequantized_as_transformers_does(tmp_path):
    rng = np.random.default_rng(4)
    E2, H2, I2 = 2, 64, 32
    blocks = rng.integers(0, 256, size=(E2, 2 * I2, H2 // 32, 16), dtype=np.uint8)
    scales = rng.integers(118, 131, size=(E2, 2 * I2, H2 // 32), dtype=np.uint8)
    scales.flat[:7] = [0, 1, 126, 127, 128, 254, 255]
    dblocks = rng.integers(0, 256, size=(E2, H2, I2 // 32, 16), dtype=np.uint8)
    dscales = rng.integers(118, 131, size=(E2, H2, I2 // 32), dtype=np.uint8)
    p = "model.layers.0.mlp."
    t = {p + "experts.gate_up_proj_blocks": ("U8", blocks), p + "experts.gate_up_proj_scales": ("U8", scales),
         p + "experts.down_proj_blocks": ("U8", dblocks), p + "experts.down_proj_scales": ("U8", dscales),
         p + "experts.gate_up_proj_bias": ("BF16", np.zeros((E2, 2 * I2), dtype=np.uint16)),
         p + "experts.down_proj_bias": ("BF16", np.zeros((E2, H2), dtype=np.uint16)),
         p + "router.weight": ("BF16", np.zeros((E2, H2), dtype=np.uint16))}
    config = {"model_type": "gpt_oss", "num_local_experts": E2, "hidden_size": H2, "intermediate_size": I2,
              "quantization_config": {"quant_method": "mxfp4"}}
    src = tmp_path / "mxfp4"
    write_checkpoint(src, t, config)
    moepack.convert(src, tmp_path / "bf16", dtype="bf16")
    out = read_safetensors(tmp_path / "bf16")
    gu = out[p + "experts.gate_up_proj"]
    assert gu[0] == "BF16" and gu[1] == [E2, H2, 2 * I2]  # [E, 2I, H] decoded, then transposed
    same(gu[2], reference_mxfp4(blocks, scales).transpose(0, 2, 1), "BF16")
    same(out[p + "experts.down_proj"][2], reference_mxfp4(dblocks, dscales).transpose(0, 2, 1), "BF16")
    assert not any(n.endswith(("_blocks", "_scales")) for n in out)
    assert moepack.verify(src, tmp_path / "bf16")["dtype"] == "bf16"
    moepack.convert(src, tmp_path / "pe-bf16", to="per-expert", dtype="bf16")
    assert moepack.verify(src, tmp_path / "pe-bf16")["to"] == "per-expert"
    # Without --dtype a per-expert export would strand the blocks: refused.
    msg = cli_error("convert", src, tmp_path / "pe", "--to", "per-expert")
    assert "gate_up_proj_blocks" in msg and "cannot cut" in msg, msg


# ---- quantizing for export ------------------------------------------------------

E4M3_VALUES = e4m3_to_f32(np.arange(256, dtype=np.uint8))


def f32_to_e4m3(x):
    """Round to the nearest e4m3 value, ties to the even code, by search over
    the 127 non-negative finite codes; |x| past 448 saturates; NaN is 0x7F|sign."""
    pos = E4M3_VALUES[:127]  # codes 0x00..0x7E, increasing
    a = np.abs(x)
    hi = np.clip(np.searchsorted(pos, a), 0, 126)
    lo = np.clip(hi - 1, 0, 126)
    dlo, dhi = a - pos[lo], pos[hi] - a
    pick = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    pick = np.where(a >= 448, 126, pick).astype(np.uint8)
    code = pick | np.where(np.signbit(x), 0x80, 0).astype(np.uint8)
    return np.where(np.isnan(x), 0x7F | (np.signbit(x).astype(np.uint8) << 7), code).astype(np.uint8)


def reference_quantize(x, block=(128, 128)):
    """DeepSeek-style: per block s = amax/448 (amax over non-NaN, 1 when 0), q = e4m3(x / s)."""
    r, c = x.shape
    br, bc = block
    scales = np.zeros(grid(r, c), dtype=np.float32)
    q = np.zeros((r, c), dtype=np.uint8)
    for i in range(scales.shape[0]):
        for j in range(scales.shape[1]):
            b = x[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
            finite = b[~np.isnan(b)]
            amax = np.float32(np.abs(finite).max()) if finite.size else np.float32(0)
            s = np.float32(1) if amax == 0 else np.float32(amax / np.float32(448))
            scales[i, j] = s
            with np.errstate(invalid="ignore"):
                q[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = f32_to_e4m3((b / s).astype(np.float32))
    return q, scales


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def test_quantized_export_matches_the_reference_and_round_trips_within_the_format(tmp_path, synth):
    src = synth("--model-type", "deepseek_v3", "--dtype", "bf16", "--layers", "4", "--experts", "4", "--hidden",
                "200", "--intermediate", "136", "--layout", "fused")
    fp8, back = tmp_path / "fp8", tmp_path / "back"
    moepack.convert(src, fp8, to="per-expert", dtype="fp8")
    per_expert = tmp_path / "pe"
    moepack.convert(src, per_expert, to="per-expert")
    orig, q = read_safetensors(per_expert), read_safetensors(fp8)
    quantized = [n for n, (dt, _, _) in q.items() if dt == "F8_E4M3"]
    assert len(quantized) > 40
    # The tensors an FP8 DeepSeek-V3 quantizes, and no others: what synth's own FP8 checkpoint holds.
    ref8 = read_safetensors(synth("--model-type", "deepseek_v3", "--dtype", "fp8", "--layers", "4", "--experts",
                                  "4", "--hidden", "200", "--intermediate", "136"))
    assert {n: v[0] for n, v in ref8.items()} == {n: v[0] for n, v in q.items()}
    for name in quantized:
        x = bf16_to_f32(orig[name][2])
        want_q, want_s = reference_quantize(x)
        assert q[name][2].tobytes() == want_q.tobytes(), name
        assert q[name + "_scale_inv"][2].tobytes() == want_s.tobytes(), name
    cfg = json.loads((fp8 / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "fp8" and cfg["weight_block_size"] == [128, 128] and cfg["fmt"] == "e4m3"
    assert "lm_head" in cfg["modules_to_not_convert"]
    # Back to BF16: within half an e4m3 step of each value (3 mantissa bits:
    # 2^-4 relative; subnormal steps 2^-9 of the block scale), plus BF16's
    # own rounding (2^-9 relative).
    assert moepack.verify(src, fp8)["dtype"] == "fp8"
    moepack.convert(fp8, back, to="per-expert", dtype="bf16")
    again = read_safetensors(back)
    for name in quantized:
        x, y = bf16_to_f32(orig[name][2]), bf16_to_f32(again[name][2])
        s = np.repeat(np.repeat(q[name + "_scale_inv"][2], 128, axis=0)[:x.shape[0]], 128, axis=1)[:, :x.shape[1]]
        bound = np.abs(x) * (2.0 ** -4 + 2.0 ** -8) + s * 2.0 ** -10
        assert np.all(np.abs(x - y) <= bound), name


def test_block_size_and_what_it_applies_to(tmp_path, synth):
    src = synth(*("--model-type", "qwen3_moe", "--dtype", "bf16", "--layers", "2", "--experts", "4", "--hidden",
                  "96", "--intermediate", "64"))
    run_cli("convert", src, tmp_path / "q", "--dtype", "fp8", "--block-size", "32x64")
    out = read_safetensors(tmp_path / "q")
    gu = out["model.layers.0.mlp.experts.gate_up_proj_scale_inv"]
    assert gu[0] == "F32" and gu[1] == [4, 2 * 2, 2]  # per expert and source: ceil(64/32) x ceil(96/64)
    assert json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]["weight_block_size"] == [32, 64]
    assert "applies to --dtype fp8 only" in cli_error("convert", src, tmp_path / "x", "--block-size", "64")
    assert "is not a block size" in cli_error("convert", src, tmp_path / "x", "--dtype", "fp8", "--block-size", "0")


# ---- the runtime paths: load, load_into, StreamingConverter -------------------


def loaded(path, **kw):
    return {name: np.array(a) for name, a in moepack.load(path, backend="numpy", **kw)}


def test_load_dequantizes_as_convert_does_and_each_rank_only_its_slice(tmp_path):
    src, t = fp8_qwen(tmp_path, np.random.default_rng(7))
    e = "model.layers.0.mlp.experts."
    per = loaded(src, layout="per-expert", dtype=torch_or_name("bf16"))
    assert not any(n.endswith("_scale_inv") for n in per)
    for name, (st, arr) in t.items():
        if st == "F8_E4M3":
            same(per[name], reference_fp8(arr, t[name + "_scale_inv"][1]), "BF16")
    full = loaded(src, dtype="bf16")
    moepack.convert(src, tmp_path / "bf16", dtype="bf16")
    assert full.keys() == read_safetensors(tmp_path / "bf16").keys()
    for name, (_, _, arr) in read_safetensors(tmp_path / "bf16").items():
        assert full[name].tobytes() == arr.tobytes(), name
    # I = 136 over 2 ranks: each rank's 68 rows and columns start inside a
    # 128-block; the rank dequantizes them from its own codes and scales.
    gu, dn = full[e + "gate_up_proj"].reshape(E, 2 * I, H), full[e + "down_proj"].reshape(E, H, I)
    for r in range(2):
        part = loaded(src, tp_rank=r, tp_size=2, dtype="bf16")
        rows = np.r_[r * 68:(r + 1) * 68, I + r * 68:I + (r + 1) * 68]
        assert part[e + "gate_up_proj"].reshape(E, 136, H).tobytes() == gu[:, rows, :].tobytes()
        assert part[e + "down_proj"].reshape(E, H, 68).tobytes() == dn[:, :, r * 68:(r + 1) * 68].tobytes()
    with pytest.raises(moepack.InvalidArgumentError, match="convert --dtype fp8"):
        loaded(src, dtype="fp8")


def test_load_into_with_dtype_fills_the_targets_as_load_gives(tmp_path):
    src, _ = fp8_qwen(tmp_path, np.random.default_rng(8))
    want = loaded(src, dtype="bf16")
    target = {name: np.zeros_like(a) for name, a in want.items()}
    result = moepack.load_into(target, src, dtype="bf16", threads=2)
    assert not result.missing_keys and not result.unexpected_keys and not result.mismatched
    for name, a in want.items():
        assert target[name].tobytes() == a.tobytes(), name


def test_streaming_converter_dequantizes_pairs_in_any_order(tmp_path):
    src, t = fp8_qwen(tmp_path, np.random.default_rng(9))
    want = loaded(src, dtype="bf16")
    conv = moepack.StreamingConverter(config=src, dtype="bf16")
    order = list(t.items())
    np.random.default_rng(3).shuffle(order)  # scales before their weights, experts in any order
    got = {}
    for name, (st, arr) in order:
        if conv.can_handle(name):
            for n, a in conv.convert(name, arr, dtype=st):
                got[n] = np.array(a)
        else:
            got[conv.rename(name)] = arr
    conv.finalize()
    assert got.keys() == want.keys()
    for name, a in want.items():
        assert got[name].tobytes() == a.tobytes(), name


def test_mxfp4_rank_slices_equal_the_cut_of_the_dequantized_checkpoint(synth, tmp_path):
    src = synth("--model-type", "gpt_oss", "--dtype", "mxfp4", "--layout", "fused", "--layers", "2", "--experts", "4",
                "--hidden", "64", "--intermediate", "64")
    moepack.convert(src, tmp_path / "bf16", dtype="bf16")
    for ep, tp in ((2, 1), (1, 2), (2, 2)):
        for er in range(ep):
            for tr in range(tp):
                kw = dict(ep_rank=er, ep_size=ep, tp_rank=tr, tp_size=tp)
                want, got = loaded(tmp_path / "bf16", **kw), loaded(src, dtype="bf16", **kw)
                assert got.keys() == want.keys()
                for name in want:
                    assert got[name].tobytes() == want[name].tobytes(), (name, kw)
