#!/usr/bin/python3
"""The conversion as people write it today with PyTorch: the baseline of bench/convert.sh.

    torch_convert.py SRC DST [--to fused|per-expert] [--max-shard-size 5GB] [--dtype bf16]

Reads each source tensor from its shard (safetensors header parsed here; Debian
has no python3-safetensors), builds the fused tensors with torch.stack and
torch.cat (or cuts them apart with indexing for --to per-expert), and writes
safetensors shards as `safetensors.torch.save_file` does: one output shard's
tensors are held in memory, then written. Output names, shard split and file
bytes follow moepack's (natural name order, reference writer layout), so
`moepack verify SRC DST` and `cmp` against moepack's output both apply.

With --dtype bf16 every F8_E4M3 weight is dequantized with its
weight_scale_inv the way a torch script does it on the CPU (a 256-entry
float32 table indexed by the codes, the block scales expanded with
repeat_interleave, one multiply, .to(bfloat16)) and the scales are dropped:
the baseline of bench/dequant.sh.

Handles the qwen3_moe / deepseek naming ("...mlp.experts.{j}.{gate,up,down}_proj.weight"
and their ".weight_scale_inv"), which is what the benchmark converts. Not a
general tool: the point is a fair, plain baseline.
"""
import argparse
import json
import os
import re
import struct
import sys

import torch

DTYPES = {  # safetensors dtype -> (torch dtype to hold it, order in the reference writer)
    "BOOL": (torch.bool, 0), "U8": (torch.uint8, 4), "I8": (torch.int8, 5),
    "F8_E5M2": (torch.uint8, 6), "F8_E4M3": (torch.uint8, 7),  # torch 1.13 has no float8: keep the bytes
    "I16": (torch.int16, 11), "F16": (torch.float16, 13), "BF16": (torch.bfloat16, 14),
    "I32": (torch.int32, 15), "F32": (torch.float32, 17), "F64": (torch.float64, 19), "I64": (torch.int64, 20),
}
SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

EXPERT = re.compile(r"^(.*mlp\.experts\.)(\d+)\.(gate_proj|up_proj|down_proj)\.(weight|weight_scale_inv)$")
FUSED = re.compile(r"^(.*mlp\.experts\.)(gate_up_proj|down_proj)(_scale_inv)?$")


def parse_size(s):
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
    for u, m in units.items():
        if s.upper().endswith(u):
            return int(float(s[: -len(u)]) * m)
    return int(s)


def natural_key(name):
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


class Source:
    """Every tensor of a checkpoint directory: name -> (file, dtype, shape, absolute offset, nbytes)."""

    def __init__(self, path, dequant=False, block=128):
        self.dir = path
        self.dequant = {}  # FP8 weight -> its scales, when dequantizing
        self.block = block
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self.tensors = {}
        self.handles = {}
        for fn in files:
            p = os.path.join(path, fn)
            fh = open(p, "rb", buffering=0)
            self.handles[fn] = fh
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
            header.pop("__metadata__", None)
            for name, t in header.items():
                b, e = t["data_offsets"]
                self.tensors[name] = (fn, t["dtype"], t["shape"], 8 + n + b, e - b)
        with open(os.path.join(path, "config.json")) as f:
            self.config = json.load(f)
        self.raw_scales = {}
        if dequant:
            for name in [n for n, t in self.tensors.items() if t[1] == "F8_E4M3"]:
                fn, _, shape, off, nbytes = self.tensors[name]
                self.dequant[name] = name + "_scale_inv"
                self.tensors[name] = (fn, "BF16", shape, off, nbytes)
            for name in self.dequant.values():
                self.raw_scales[name] = self.tensors.pop(name)

    def _read(self, fn, off, nbytes):
        buf = bytearray(nbytes)
        fh = self.handles[fn]
        fh.seek(off)
        view = memoryview(buf)
        got = 0
        while got < nbytes:
            r = fh.readinto(view[got:])
            if not r:
                raise IOError(f"{fn}: short read")
            got += r
        return buf

    def load(self, name):
        if name in self.dequant:
            return self._dequantize(name)
        fn, dtype, shape, off, nbytes = self.tensors[name]
        if nbytes == 0:
            return torch.empty(shape, dtype=DTYPES[dtype][0])
        return torch.frombuffer(self._read(fn, off, nbytes), dtype=DTYPES[dtype][0]).reshape(shape)


E4M3 = None


def e4m3_table():
    """The 256 e4m3 values (bias 7, subnormals m*2^-9, 0x7F/0xFF NaN)."""
    global E4M3
    if E4M3 is None:
        vals = []
        for c in range(256):
            e, m = (c >> 3) & 15, c & 7
            v = float("nan") if (c & 0x7F) == 0x7F else (m * 2.0 ** -9 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
            vals.append(-v if c & 0x80 else v)
        E4M3 = torch.tensor(vals, dtype=torch.float32)
    return E4M3


def _dequantize(self, name):
    fn, _, shape, off, nbytes = self.tensors[name]
    codes = torch.frombuffer(self._read(fn, off, nbytes), dtype=torch.uint8).reshape(shape)
    sfn, _, sshape, soff, snb = self.raw_scales[self.dequant[name]]
    scales = torch.frombuffer(self._read(sfn, soff, snb), dtype=torch.float32).reshape(sshape)
    r, c = shape[-2], shape[-1]
    s = scales.repeat_interleave(self.block, dim=-2)[..., :r, :].repeat_interleave(self.block, dim=-1)[..., :c]
    return (e4m3_table()[codes.long()] * s).to(torch.bfloat16)


Source._dequantize = _dequantize


def to_fused_plan(src):
    """Output name -> (dtype, shape, producer) for per-expert -> fused."""
    groups = {}  # (prefix, kind, suffix) -> {expert: name}
    out = {}
    for name, (_, dtype, shape, _, _) in src.tensors.items():
        m = EXPERT.match(name)
        if not m:
            out[name] = (dtype, shape, lambda n=name: src.load(n))
            continue
        prefix, j, proj, suffix = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        kind = "down_proj" if proj == "down_proj" else "gate_up_proj"
        groups.setdefault((prefix, kind, suffix), {}).setdefault(j, {})[proj] = name
    for (prefix, kind, suffix), experts in groups.items():
        E = len(experts)
        target = prefix + kind + ("_scale_inv" if suffix == "weight_scale_inv" else "")
        if kind == "down_proj":
            names = [experts[j]["down_proj"] for j in range(E)]
            _, dtype, shape, _, _ = src.tensors[names[0]]
            make = lambda names=names: torch.stack([src.load(n) for n in names])
            out[target] = (dtype, [E] + shape, make)
        else:
            gates = [experts[j]["gate_proj"] for j in range(E)]
            ups = [experts[j]["up_proj"] for j in range(E)]
            _, dtype, shape, _, _ = src.tensors[gates[0]]

            def make(gates=gates, ups=ups):
                gate = torch.stack([src.load(n) for n in gates])
                up = torch.stack([src.load(n) for n in ups])
                return torch.cat([gate, up], dim=1)

            out[target] = (dtype, [E, 2 * shape[0]] + shape[1:], make)
    return out


def to_per_expert_plan(src):
    out = {}
    cache = {}  # one fused tensor at a time, as a loader would hold it

    def fused(name):
        if name not in cache:
            cache.clear()
            cache[name] = src.load(name)
        return cache[name]

    for name, (_, dtype, shape, _, _) in src.tensors.items():
        m = FUSED.match(name)
        if not m:
            out[name] = (dtype, shape, lambda n=name: src.load(n))
            continue
        prefix, kind, scale = m.group(1), m.group(2), m.group(3)
        suffix = "weight_scale_inv" if scale else "weight"
        E = shape[0]
        for j in range(E):
            if kind == "down_proj":
                out[f"{prefix}{j}.down_proj.{suffix}"] = (dtype, shape[1:], lambda n=name, j=j: fused(n)[j].clone())
            else:
                half = shape[1] // 2
                piece = [half] + shape[2:]
                out[f"{prefix}{j}.gate_proj.{suffix}"] = (dtype, piece, lambda n=name, j=j, h=half: fused(n)[j, :h].clone())
                out[f"{prefix}{j}.up_proj.{suffix}"] = (dtype, piece, lambda n=name, j=j, h=half: fused(n)[j, h:].clone())
    return out


def nbytes_of(dtype, shape):
    n = torch.empty(0, dtype=DTYPES[dtype][0]).element_size()
    for d in shape:
        n *= d
    return n


def save_file(path, tensors):
    """tensors: name -> (dtype, torch tensor). Reference writer layout."""
    order = sorted(tensors, key=lambda n: (-DTYPES[tensors[n][0]][1], n))
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for n in order:
        dtype, t = tensors[n]
        size = t.numel() * t.element_size()
        header[n] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + size]}
        off += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for n in order:
            t = tensors[n][1].contiguous()
            if t.numel():
                f.write(t.view(SAME_SIZE_INT[t.element_size()]).numpy().data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--to", choices=["fused", "per-expert"], default="fused")
    ap.add_argument("--max-shard-size", default="5GB")
    ap.add_argument("--dtype", choices=["bf16"], default=None)
    args = ap.parse_args()
    max_shard = parse_size(args.max_shard_size)
    src = Source(args.src, dequant=args.dtype == "bf16")
    plan = to_fused_plan(src) if args.to == "fused" else to_per_expert_plan(src)
    names = sorted(plan, key=natural_key)
    shards, size = [], 0
    for n in names:
        nb = nbytes_of(plan[n][0], plan[n][1])
        if not shards or (size > 0 and size + nb > max_shard):
            shards.append([])
            size = 0
        shards[-1].append(n)
        size += nb
    os.makedirs(args.dst)
    weight_map, total = {}, 0
    for i, group in enumerate(shards):
        fn = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for n in group:
            dtype, shape, make = plan[n]
            t = make()
            assert list(t.shape) == list(shape), (n, t.shape, shape)
            tensors[n] = (dtype, t)
            weight_map[n] = fn
            total += t.numel() * t.element_size()
        save_file(os.path.join(args.dst, fn), tensors)
        del tensors
    if len(shards) > 1:
        with open(os.path.join(args.dst, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
            f.write("\n")
    for fn in os.listdir(args.src):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            continue
        with open(os.path.join(args.src, fn), "rb") as a, open(os.path.join(args.dst, fn), "wb") as b:
            b.write(a.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
