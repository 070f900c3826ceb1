"""Multi-machine training through torch.distributed: 2 ranks on one machine, gloo, launched by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)

RANK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_rank.py")


def test_two_ranks_shard_disjointly_cover_every_epoch_resume_and_warn_without_a_shard(tmp_path: object) -> None:
    pytest.importorskip("torch.distributed.run")
    out = os.path.join(str(tmp_path), "result.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
               RANK_SCRIPT, out]
    result = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        gathered = json.load(f)
    assert gathered["world"] == 2
    orders = []
    for ranks in gathered["epochs"]:
        rank0, rank1 = ranks
        assert not set(rank0) & set(rank1)  # disjoint shards
        assert sorted(rank0 + rank1) == list(range(50))  # together they cover the dataset
        orders.append(rank0)
    assert orders[0] != orders[1]  # each epoch reshuffled (set_epoch passed automatically)
    assert gathered["resumed_exactly"] == [True, True]
    assert gathered["warned"] == [[False, True], [False, True]]  # [with DistributedSampler, without]
