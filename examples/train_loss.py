#!/usr/bin/env python3
"""The training-loss check: a model trained from the per-expert checkpoint and
the same model with fused expert parameters loaded through moepack must give
the same loss, bit for bit, at every step.

A small Qwen3-MoE-style network in plain PyTorch (embedding, then per layer
RMSNorm + a sparse MoE block with softmax top-k routing and SwiGLU experts,
residual; final RMSNorm and LM head; attention left out) is built twice:

  per-expert  nn.Linear gate_proj / up_proj / down_proj per expert, loaded
              from the Hub-layout checkpoint with a 20-line safetensors
              reader (json + numpy, no moepack code);
  fused       experts.gate_up_proj [E, 2I, H] and experts.down_proj [E, H, I]
              parameters, loaded with moepack.load from the checkpoint that
              moepack.convert wrote.

Both run the same batches for N SGD steps on CPU. The fused forward does
exactly the per-expert ops: for expert e it takes gate = gate_up_proj[e, :I],
up = gate_up_proj[e, I:] and down_proj[e], and calls F.linear with them in
the same order, so any difference in the loaded bytes or in the gate/up
order shows up as a different loss.

    PYTHONPATH=build/python /usr/bin/python3 examples/train_loss.py \
        --moepack-bin build/moepack --out examples/train_loss.png
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import moepack

# The synthetic checkpoint: tiny Qwen3-MoE, f32.
SYNTH_FLAGS = ["--model-type", "qwen3_moe", "--dtype", "f32", "--layers", "2", "--experts", "8", "--hidden", "32",
               "--intermediate", "16", "--max-shard-size", "40KB", "--seed", "11"]


def read_safetensors_dir(path):
    """{name: torch.Tensor} of every f32/bf16 tensor in a checkpoint directory."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fname in files:
        with open(os.path.join(path, fname), "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        for name, h in header.items():
            assert h["dtype"] == "F32", "this example expects an f32 checkpoint"
            b, e = h["data_offsets"]
            out[name] = torch.from_numpy(np.frombuffer(raw[8 + n + b:8 + n + e], dtype=np.float32).copy()).reshape(
                h["shape"])
    return out


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def route(logits, top_k, norm_topk_prob):
    probs = F.softmax(logits, dim=-1, dtype=torch.float32)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


def moe(x, gate, expert_fn, num_experts, top_k, norm_topk_prob):
    """Sparse MoE over tokens x [T, H]: the same code for both forms; only
    expert_fn(e, tokens) differs."""
    weights, experts = route(gate(x), top_k, norm_topk_prob)
    out = torch.zeros_like(x)
    for e in range(num_experts):
        tok, slot = torch.where(experts == e)
        if tok.numel() == 0:
            continue
        out.index_add_(0, tok, expert_fn(e, x[tok]) * weights[tok, slot, None])
    return out


class Expert(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class PerExpertMoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(cfg["hidden_size"], cfg["num_experts"], bias=False)
        self.experts = nn.ModuleList(Expert(cfg["hidden_size"], cfg["moe_intermediate_size"])
                                     for _ in range(cfg["num_experts"]))

    def forward(self, x):
        c = self.cfg
        return moe(x, self.gate, lambda e, t: self.experts[e](t), c["num_experts"], c["num_experts_per_tok"],
                   c["norm_topk_prob"])


class FusedExperts(nn.Module):
    def __init__(self, num_experts, hidden, inter):
        super().__init__()
        self.inter = inter
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, inter))

    def forward(self, e, x):
        # The per-expert module's ops exactly: gate rows first, then up rows.
        gate_w = self.gate_up_proj[e, :self.inter]
        up_w = self.gate_up_proj[e, self.inter:]
        return F.linear(F.silu(F.linear(x, gate_w)) * F.linear(x, up_w), self.down_proj[e])


class FusedMoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(cfg["hidden_size"], cfg["num_experts"], bias=False)
        self.experts = FusedExperts(cfg["num_experts"], cfg["hidden_size"], cfg["moe_intermediate_size"])

    def forward(self, x):
        c = self.cfg
        return moe(x, self.gate, self.experts, c["num_experts"], c["num_experts_per_tok"], c["norm_topk_prob"])


class Layer(nn.Module):
    def __init__(self, cfg, fused):
        super().__init__()
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.mlp = FusedMoE(cfg) if fused else PerExpertMoE(cfg)

    def forward(self, h):
        return h + self.mlp(self.post_attention_layernorm(h))


class Model(nn.Module):
    """Qwen3-MoE-style LM without attention; parameter names follow the
    checkpoint's (model.embed_tokens, model.layers.{i}.mlp..., lm_head)."""

    def __init__(self, cfg, fused):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.model.layers = nn.ModuleList(Layer(cfg, fused) for _ in range(cfg["num_hidden_layers"]))
        self.model.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def forward(self, ids):
        h = self.model.embed_tokens(ids).reshape(-1, self.lm_head.in_features)
        for layer in self.model.layers:
            h = layer(h)
        return self.lm_head(self.model.norm(h)).reshape(*ids.shape, -1)


def build(cfg, tensors, fused):
    """The model with every parameter taken from `tensors` (names as in the
    checkpoint); tensors the model does not use (attention) are ignored."""
    m = Model(cfg, fused)
    params = dict(m.named_parameters())
    missing = set(params) - set(tensors)
    if missing:
        raise KeyError(f"checkpoint lacks {sorted(missing)}")
    with torch.no_grad():
        for name, p in params.items():
            t = tensors[name]
            if tuple(t.shape) != tuple(p.shape) or t.dtype != p.dtype:
                raise ValueError(f"{name}: checkpoint has {t.dtype} {tuple(t.shape)}, model wants {tuple(p.shape)}")
            p.copy_(t)
    return m


def batches(cfg, steps, batch=4, seq=16, seed=0):
    """The same token batches for both runs: 4 distinct ones, cycled, so the
    loss visibly falls as the model memorises them."""
    g = torch.Generator().manual_seed(seed)
    distinct = [torch.randint(0, cfg["vocab_size"], (batch, seq), generator=g) for _ in range(4)]
    return [distinct[i % len(distinct)] for i in range(steps)]


def train(model, data, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for ids in data:
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach().clone())
    return losses


def run(per_expert_dir, fused_dir, steps=20, lr=2.0):
    """Trains both forms on the same batches; returns (per-expert losses,
    fused losses, the two trained models)."""
    with open(os.path.join(per_expert_dir, "config.json")) as f:
        cfg = json.load(f)
    torch.manual_seed(0)
    per_expert = build(cfg, read_safetensors_dir(per_expert_dir), fused=False)
    fused = build(cfg, moepack.load(fused_dir).state_dict(), fused=True)
    data = batches(cfg, steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one BLAS schedule for both runs
    try:
        a = train(per_expert, data, lr)
        b = train(fused, data, lr)
    finally:
        torch.set_num_threads(threads)
    return a, b, per_expert, fused


def prepare(workdir, moepack_bin):
    """Synthesizes the per-expert checkpoint and converts it; returns both dirs."""
    src, dst = os.path.join(workdir, "per-expert"), os.path.join(workdir, "fused")
    if not os.path.exists(src):
        subprocess.run([moepack_bin, "synth", src, *SYNTH_FLAGS], check=True, capture_output=True)
    if not os.path.exists(dst):
        moepack.convert(src, dst, to="fused")
        moepack.verify(src, dst)
    return src, dst


def plot(a, b, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = range(1, len(a) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(steps, [float(x) for x in a], "o-", label="per-expert modules (Hub checkpoint)", linewidth=3, alpha=0.5)
    ax.plot(steps, [float(x) for x in b], "x--", label="fused parameters (moepack.load)", color="black")
    same = all(torch.equal(x, y) for x, y in zip(a, b))
    ax.set_title(f"Qwen3-MoE-style block, SGD on CPU: {'bitwise identical' if same else 'DIFFERENT'}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_xticks(list(steps))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--moepack-bin", default=os.environ.get("MOEPACK_BINARY", "build/moepack"),
                   help="the moepack CLI, for `moepack synth` (default: build/moepack)")
    p.add_argument("--workdir", help="where the checkpoints go (default: a temporary directory)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=2.0)
    p.add_argument("--out", default="train_loss.png", help="the plot (PNG)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = prepare(args.workdir or tmp, args.moepack_bin)
        a, b, _, _ = run(src, dst, args.steps, args.lr)
    print(f"{'step':>4}  {'per-expert':>12}  {'fused':>12}  same")
    for i, (x, y) in enumerate(zip(a, b), 1):
        print(f"{i:>4}  {float(x):>12.8f}  {float(y):>12.8f}  {torch.equal(x, y)}")
    plot(a, b, args.out)
    same = all(torch.equal(x, y) for x, y in zip(a, b))
    print(f"wrote {args.out}; loss curves {'bitwise identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
