"""Four processes on torch.distributed (gloo, 127.0.0.1): ranks load their
expert- and tensor-parallel slices through process groups, and all-gathers
reproduce the full tensors."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from conftest import QWEN_F32

WORKER = Path(__file__).with_name("dist_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_four_ranks_all_gather_the_full_tensors(synth):
    src = synth(*QWEN_F32)
    world = 4
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world),
           "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(src)], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [r["rank"] for r in results] == list(range(world))
    assert all(r["checked"] == 4 for r in results)  # 2 layers x (gate_up_proj, down_proj)
    # Every rank read exactly its share, and all ranks agree on who read what.
    reads = results[0]["bytes_read"]
    assert all(r["bytes_read"] == reads for r in results)
    assert reads == [r["rank_bytes"] for r in results]
    assert len(set(reads)) == 1 and reads[0] < results[0]["total_bytes"]
