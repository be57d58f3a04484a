"""The training-loss check (examples/train_loss.py): the per-expert model
loaded from the Hub checkpoint and the fused model loaded through
moepack.load from the converted checkpoint train to bitwise-identical loss
curves; a fused model with gate and up swapped does not."""

import importlib.util

import pytest
import torch

import moepack
from conftest import REPO, run_cli


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_loss", REPO / "examples" / "train_loss.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def checkpoints(example, tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    src, dst = d / "per-expert", d / "fused"
    run_cli("synth", src, *example.SYNTH_FLAGS)
    moepack.convert(src, dst)
    return src, dst


def test_loss_curves_are_bitwise_identical(example, checkpoints):
    src, dst = checkpoints
    a, b, per_expert, fused = example.run(src, dst, steps=20)
    assert len(a) == len(b) == 20
    for step, (x, y) in enumerate(zip(a, b), 1):
        assert torch.equal(x, y), f"step {step}: {x.item()!r} != {y.item()!r}"
    assert b[-1] < b[0] - 1.0  # it trains
    # The trained weights agree too, expert by expert.
    inter = fused.model.layers[0].mlp.experts.inter
    for lp, lf in zip(per_expert.model.layers, fused.model.layers):
        for e, ex in enumerate(lp.mlp.experts):
            assert torch.equal(ex.gate_proj.weight, lf.mlp.experts.gate_up_proj[e, :inter])
            assert torch.equal(ex.up_proj.weight, lf.mlp.experts.gate_up_proj[e, inter:])
            assert torch.equal(ex.down_proj.weight, lf.mlp.experts.down_proj[e])


def test_the_check_notices_swapped_gate_and_up(example, checkpoints, monkeypatch):
    src, dst = checkpoints
    real_load = moepack.load

    def swapped_load(path, **kw):
        for name, t in real_load(path, **kw):
            if name.endswith("gate_up_proj"):
                i = t.shape[1] // 2
                t = torch.cat([t[:, i:], t[:, :i]], dim=1)
            yield name, t

    class Stream:
        def __init__(self, path, **kw):
            self.items = list(swapped_load(path, **kw))

        def state_dict(self):
            return dict(self.items)

    monkeypatch.setattr(example.moepack, "load", Stream)
    a, b, _, _ = example.run(src, dst, steps=3)
    assert not torch.equal(a[0], b[0])
