"""Remote-storage workload: 20 ms of waiting per sample, then the image workload's JPEG decode and augmentation.

In:  the image workload's cached JPEGs (``image.ensure_images``: 96 files
     of 256x256 to 500x375 pixels, generated locally on first use) and the
     wait per sample.
Out: ``dataset[i] == (image, label)``: after ``time.sleep(wait_s)`` (the
     request's round trip to object storage or a network file system: no
     CPU, the GIL released), the image workload's sample: file ``i % 96``
     decoded by Pillow, a random resized crop to 224, a flip, normalised
     (``image.ImageDataset``: about 3 ms of CPU here, so the two cores
     decode about 660 samples/s at most); a float32 tensor
     ``(3, 224, 224)`` and the label ``i % 1000``. Batches of 16, 2,048
     samples a pass.

Loading is bounded by waiting until enough requests are in flight, then by
the decode on the cores: ``workers / (wait + decode)`` samples/s at first,
the cores over the decode's CPU time at most. So the worker count users
pick is the whole question, and each loader runs at the settings its users
would choose (``labels.AT_MOST_LOADERS_OF``): torch's DataLoader with 2,
8 and 32 worker processes, threadloader with the suite's 2 workers and
with ``num_workers="auto"``, which has to find its count within the pass.
The loaders at 2 workers are bounded at 2 / (wait + decode), whatever the
pass's length, and no target judges them (torch's best worker count here is
never 2): they make one shorter pass (``SHORT_BATCHES``) so the suite keeps
to its time; the others make three of 2,048 samples.
"""

from __future__ import annotations

import time

import torch

from .base import Workload, scaled
from .image import ImageDataset, ensure_images

WAIT_S = 0.020
BATCH_SIZE = 16
#: Batches of a pass for the loaders capped at 2 workers: their rate is 2 / (wait + decode) from the first
#: round of batches on (about 90 samples/s), and a full pass would cost 23 s of each run's time per loader.
SHORT_BATCHES = 16


class RemoteJpegDataset(ImageDataset):
    """Waits ``wait_s`` per sample, then decodes and augments as the image workload does."""

    def __init__(self, paths: list[str], length: int, wait_s: float = WAIT_S) -> None:
        super().__init__(paths, length)
        self.wait_s = wait_s

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        time.sleep(self.wait_s)
        return super().__getitem__(index)


def build(quick: bool, batches: int | None) -> Workload:
    """Build the remote-storage workload (generates the JPEG cache on first use).

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 128 of 16 images, quick 6 of 8).

    Returns:
        The workload.
    """
    files = scaled(96, 16, quick)  # the image workload's files: one cache for both
    batch_size = scaled(BATCH_SIZE, 8, quick)
    count = (batches or scaled(128, 6, quick)) * batch_size
    wait_s = 0.002 if quick else WAIT_S
    paths = [str(path) for path in ensure_images(files)]
    short = min(SHORT_BATCHES, count // batch_size) if not quick else None
    return Workload(
        name="remote-jpeg",
        description=f"{wait_s * 1e3:g} ms wait per sample (object storage), then the image workload's decode + crop",
        dataset=RemoteJpegDataset(paths, count, wait_s),
        batch_size=batch_size,
        indices=range(count),
        batches_of={"torch": short, "threadloader": short} if short else {},
        repeat_of={"torch": 1, "threadloader": 1} if short else {},
        params={"files": files, "wait_ms": wait_s * 1e3, "short_batches": short},
    )
