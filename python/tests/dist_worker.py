"""One rank of test_distributed: 4 processes = expert parallel 2 x tensor
parallel 2 over torch.distributed (gloo). Each loads its slice through its
process groups; all-gathers over the tp group, then the ep group, must give
back the full tensors. Run by test_distributed.py, not by pytest itself."""

import json
import os
import sys

import torch
import torch.distributed as dist

import moepack


def bits(t):
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(width)


def main():
    src = sys.argv[1]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ep, tp = 2, 2
    # Every process creates every group, in the same order.
    tp_groups = [dist.new_group([e * tp + t for t in range(tp)]) for e in range(ep)]
    ep_groups = [dist.new_group([e * tp + t for e in range(ep)]) for t in range(tp)]
    er, tr = divmod(rank, tp)
    tp_group, ep_group = tp_groups[er], ep_groups[tr]

    stream = moepack.load(src, ep_group=ep_group, tp_group=tp_group)
    assert (stream.ep_rank, stream.ep_size, stream.tp_rank, stream.tp_size) == (er, ep, tr, tp)
    try:
        moepack.load(src, ep_rank=1 - er, ep_size=2, ep_group=ep_group)
        raise AssertionError("a contradicting ep_rank was accepted")
    except moepack.InvalidArgumentError as e:
        assert "contradict ep_group" in str(e)

    full = moepack.load(src).state_dict()
    checked = 0
    for name, t in stream:
        if ".experts." not in name or name.endswith(".weight"):
            assert torch.equal(bits(t), bits(full[name])), name
            continue
        t = bits(t)
        parts = [torch.empty_like(t) for _ in range(tp)]
        dist.all_gather(parts, t, group=tp_group)
        if "gate_up_proj" in name:
            h = t.shape[1] // 2
            local = torch.cat([p[:, :h] for p in parts] + [p[:, h:] for p in parts], dim=1)
        else:
            local = torch.cat(parts, dim=2)
        experts = [torch.empty_like(local) for _ in range(ep)]
        dist.all_gather(experts, local, group=ep_group)
        assert torch.equal(torch.cat(experts, dim=0), bits(full[name])), name
        checked += 1
    read = torch.tensor([stream.bytes_read], dtype=torch.int64)
    reads = [torch.empty_like(read) for _ in range(world)]
    dist.all_gather(reads, read)
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps({"rank": rank, "checked": checked, "bytes_read": [int(r) for r in reads],
                      "rank_bytes": stream.rank_bytes, "total_bytes": stream.total_bytes}))


if __name__ == "__main__":
    main()
