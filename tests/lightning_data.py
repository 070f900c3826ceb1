"""The dataset the Lightning tests load; it imports torch, not Lightning, so spawned worker processes start fast.

Every sample says which sample it is (``index``) and where it was loaded
(``pid`` and torch's ``get_worker_info().worker_method``), so a test can
check which samples each rank trained on, in which order, and whether the
loader ran in worker threads or worker processes.
"""

from __future__ import annotations

import os
from typing import Any

import torch

FEATURES = 4


class IndexedDataset(torch.utils.data.Dataset):
    """``dataset[i]`` is ``{"index": i, "x": features of i, "pid": loading pid, "method": worker kind}``.

    ``method`` is ``torch.utils.data.get_worker_info().worker_method``
    (``"thread"`` or ``"multiprocessing"``), or ``"main"`` outside a worker.
    """

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        info = torch.utils.data.get_worker_info()
        return {
            "index": index,
            "x": torch.full((FEATURES,), float(index) / self.length),
            "pid": os.getpid(),
            "method": "main" if info is None else info.worker_method,
        }
