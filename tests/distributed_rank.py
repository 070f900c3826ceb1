"""One rank of the distributed test, launched by ``torchrun`` (see test_distributed.py).

Each rank loads its DistributedSampler shard with threadloader (thread mode),
gathers every rank's indices per epoch with ``all_gather_object``, and checks
that a rank resumed from ``state_dict()`` continues exactly, and that a
loader without a DistributedSampler warns once that every rank loads every
sample (and one with it does not). Rank 0 writes the
gathered result as JSON to the path given as the only argument.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch.distributed as dist
from torch.utils.data import DistributedSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sample_datasets import RangeDataset, list_collate

from threadloader import DataLoader

LENGTH, EPOCHS = 50, 3


def make_loader(dataset: RangeDataset, num_workers: int) -> DataLoader:
    sampler = DistributedSampler(dataset, seed=3)  # rank and world size from the process group
    return DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=num_workers, mode="thread",
                      collate_fn=list_collate)


def _warns_every_rank_loads_everything(loader: DataLoader) -> bool:
    """Whether an epoch of ``loader`` warns that every rank loads every sample (it must, once, without a shard)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            list(loader)
    found = [w for w in caught if "every rank loads every sample" in str(w.message)]
    assert len(found) <= 1, "warned more than once for one loader"
    return bool(found)


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dataset = RangeDataset(LENGTH)
    loader = make_loader(dataset, num_workers=2)
    epochs = []
    for _ in range(EPOCHS):
        mine = [i for batch in loader for i in batch]
        gathered: list[list[int] | None] = [None] * world
        dist.all_gather_object(gathered, mine)
        epochs.append(gathered)
    # resume: cut epoch 1 after 2 batches, continue in a new loader with another worker count
    reference = make_loader(dataset, num_workers=0)
    plan = [[b for b in reference] for _ in range(EPOCHS)]
    first = make_loader(dataset, num_workers=2)
    list(first)
    it = iter(first)
    partial = [next(it), next(it)]
    state = json.loads(json.dumps(first.state_dict()))
    it.close()
    second = make_loader(dataset, num_workers=3)
    second.load_state_dict(state)
    resumed_exactly = partial + list(second) == plan[1] and list(second) == plan[2]
    flags: list[bool | None] = [None] * world
    dist.all_gather_object(flags, resumed_exactly)
    warned = [_warns_every_rank_loads_everything(make_loader(dataset, 2)),
              _warns_every_rank_loads_everything(DataLoader(dataset, batch_size=4, num_workers=2, mode="thread",
                                                            collate_fn=list_collate))]
    warnings_seen: list[list[bool] | None] = [None] * world
    dist.all_gather_object(warnings_seen, warned)
    if rank == 0:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump({"world": world, "epochs": epochs, "resumed_exactly": flags, "warned": warnings_seen}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
