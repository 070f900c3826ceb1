"""Training workload: a real training loop, CIFAR-style augmentation feeding a small CNN trained with SGD.

In:  a shared, read-only bank of uint8 images ``(40, 40, 3)`` generated at
     build time, each of one of ten classes (a class colour and stripe
     pattern under noise, so the model has something to learn).
Out: ``dataset[i] == (image, label)``: bank entry ``i % len(bank)`` randomly
     cropped to 34x34, flipped, colour-jittered (brightness, contrast,
     saturation), blurred by a 3-tap separable filter to 32x32, noised,
     cut out (a 12x12 patch zeroed) and normalised: a float32 tensor
     ``(3, 32, 32)``, and its class. The workload's ``step`` is one real
     training step on each batch the loader yields: forward through
     ``SmallConvNet``, cross-entropy loss, ``backward()``, an SGD step
     with momentum, all on CPU in the training loop's thread. Batches of
     64 images; 28 batches a pass (``train``) or 32 (the other variants),
     three passes per loader (the serial loop: one): the
     steady window leaves out a fifth at the start and the last eight
     batches, the pipeline's drain (``benchmarks.measure``).

Loading and the step both take the CPU, here the same two cores: per
sample the augmentation is a few dozen small numpy calls (interpreter time
between them, as in real per-sample pipelines), and the step's convolutions
run on torch's intra-op threads. They are sized so that on the 2-core
development machine a batch's step and a batch's loading with two workers
cost the same order of time, which is where the loader's own overhead and
its contention with the step show in the loop's throughput.

The model and the optimizer are built once per workload, before any loader
runs (building the optimizer imports ``torch._dynamo``, and with torch's CUDA
wheel triton, as in a real training script), and then trained on across all
passes: a step's cost does not depend on the weights. A few warm-up steps
at build time create torch's thread pool and allocator caches, so that no
timed pass pays for them.

Three variants differ in torch's intra-op thread count during each pass
(``Workload.torch_threads``): ``train`` leaves torch's default (about one
per core), ``train-threads1`` sets 1, and ``train-spare`` sets ``max(1,
cores - num_workers)``, the cores the loader's workers leave free (1 on a
2-core machine with two workers, so only the first two run by default).
With the default, the step's OpenMP threads wait for each other at every
operator, spinning, and when the cores are also busy with loading (or with
other processes) one that is descheduled holds up the rest: a step can
then cost an order of magnitude more than with one thread, so ``train``
runs shorter passes than the others, to keep the suite's time bounded; the
throughput is per sample either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.utils.data

from .base import TorchThreads, Workload, sample_rng, scaled

SIZE = 40
CROP = 32
CLASSES = 10
CUTOUT = 12
MEAN = np.array([0.49, 0.48, 0.45], dtype=np.float32)[:, None, None]
STD = np.array([0.25, 0.24, 0.26], dtype=np.float32)[:, None, None]
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
WARMUP_STEPS = 3
_SALT = 0x7A1


class AugmentDataset:
    """Augments entries of a shared uint8 image bank (numpy), CIFAR-style; the label is the entry's class."""

    def __init__(self, bank: np.ndarray, labels: np.ndarray, length: int) -> None:
        """Keep the bank.

        Args:
            bank: uint8 images ``(N, SIZE, SIZE, 3)``.
            labels: their classes, ``(N,)``.
            length: the dataset's length (it cycles through the bank).
        """
        self.bank = bank
        self.labels = labels
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = sample_rng(index, _SALT)
        entry = index % len(self.bank)
        top, left = (int(v) for v in rng.integers(0, SIZE - CROP - 1, 2))
        x = self.bank[entry, top : top + CROP + 2, left : left + CROP + 2]  # 2 more: the blur trims them
        if rng.random() < 0.5:
            x = x[:, ::-1]
        x = x.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
        brightness, contrast, saturation = rng.uniform(0.7, 1.3, 3).astype(np.float32)
        gray = np.tensordot(LUMA, x, axes=1)
        x = gray + (x - gray) * saturation
        mean = gray.mean()
        x = (x - mean) * contrast + mean * brightness
        x = 0.25 * x[:, :-2, :] + 0.5 * x[:, 1:-1, :] + 0.25 * x[:, 2:, :]  # blur rows
        x = 0.25 * x[:, :, :-2] + 0.5 * x[:, :, 1:-1] + 0.25 * x[:, :, 2:]  # blur columns
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.02)
        np.clip(x, 0.0, 1.0, out=x)
        cy, cx = (int(v) for v in rng.integers(0, CROP, 2))
        half = CUTOUT // 2
        x[:, max(0, cy - half) : cy + half, max(0, cx - half) : cx + half] = 0.0
        x -= MEAN
        x /= STD
        return torch.from_numpy(np.ascontiguousarray(x)), int(self.labels[entry])


def make_bank(count: int, seed: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 images ``(SIZE, SIZE, 3)`` of ``CLASSES`` classes, and their labels.

    A class is a colour and a stripe direction and frequency; each image adds
    its own phase, contrast and noise.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % CLASSES
    colours = rng.uniform(0.2, 0.8, (CLASSES, 3)).astype(np.float32)
    angles = rng.uniform(0, np.pi, CLASSES)
    frequencies = rng.uniform(0.2, 0.9, CLASSES)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    for k, label in enumerate(labels.tolist()):
        along = np.cos(angles[label]) * xs + np.sin(angles[label]) * ys
        stripes = 0.5 + 0.5 * np.sin(frequencies[label] * along + rng.uniform(0, 2 * np.pi))
        pixels = colours[label] * (0.5 + rng.uniform(0.2, 0.5) * stripes[..., None])
        pixels += rng.normal(0, 0.08, pixels.shape)
        images[k] = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    return images, labels


class SmallConvNet(torch.nn.Sequential):
    """Three 3x3 convolutions (8, 16, 32 channels; batch norm, ReLU, pooling) and a linear classifier."""

    def __init__(self, classes: int = CLASSES) -> None:
        nn = torch.nn
        super().__init__(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(32, classes),
        )  # fmt: skip


class TrainStep:
    """One training step per batch: forward, cross-entropy loss, ``backward()``, optimizer step.

    Attributes:
        model: the network being trained.
        optimizer: its optimizer.
        steps: steps taken so far (warm-up included).
        last_loss: the last step's loss (a detached 0-d tensor), ``None`` before the first.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.steps = 0
        self.last_loss: torch.Tensor | None = None

    def __call__(self, batch: Any) -> None:
        """Train on one collated batch ``(images, labels)``."""
        images, labels = batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(images), labels)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        self.last_loss = loss.detach()  # no .item(): the loop never waits on a value it does not use


def make_step(seed: int = 0) -> TrainStep:
    """Build the model and its optimizer (SGD with momentum), weights drawn from ``seed``.

    torch's global generator is left as it was (``fork_rng``): workloads never
    reseed global RNGs.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallConvNet()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # imports torch._dynamo (and triton)
    return TrainStep(model, optimizer)


def _build(name: str, quick: bool, batches: int, torch_threads: TorchThreads, threads_words: str) -> Workload:
    """Build one variant of the training workload.

    Args:
        name: the variant's registry name.
        quick: tiny sizes for a smoke test.
        batches: batches per pass.
        torch_threads: torch's intra-op threads during each pass.
        threads_words: the thread count in words, for the description.

    Returns:
        The workload, its ``step`` already warmed up.
    """
    bank_size = scaled(512, 32, quick)
    batch_size = scaled(64, 16, quick)
    count = batches * batch_size
    bank, labels = make_bank(bank_size)
    dataset = AugmentDataset(bank, labels, count)
    step = make_step()
    warmup = torch.utils.data.default_collate([dataset[i] for i in range(batch_size)])
    for _ in range(WARMUP_STEPS):
        step(warmup)
    return Workload(
        name=name,
        description=(
            "real training step per batch (small CNN, cross-entropy, backward, SGD) on CIFAR-style "
            f"numpy augmentation; {threads_words}"
        ),
        dataset=dataset,
        batch_size=batch_size,
        indices=range(count),
        step=step,
        torch_threads=torch_threads,
        # A pass's speed depends on where the scheduler puts the step and the workers on the cores (three
        # threads on two cores), which changes from pass to pass: the report pairs each pass with torch's of
        # the same repetition and shows the spread. The runner's three passes (five did not fit the suite's
        # 12 minutes); the serial loop runs one (no target judges its speed).
        serial_repeat=1,
        params={
            "bank": bank_size,
            "size": SIZE,
            "crop": CROP,
            "model": type(step.model).__name__,
            "parameters": sum(p.numel() for p in step.model.parameters()),
            "optimizer": "SGD(lr=0.05, momentum=0.9)",
            "torch_threads": "default" if torch_threads is None else torch_threads,
        },
    )


def build(quick: bool, batches: int | None) -> Workload:
    """Build the training workload with torch's default intra-op thread count.

    Its passes are shorter than the other variants' (28 batches of 64
    images; quick 6 of 16): where torch's intra-op threads outnumber the
    cores left to them, a step can cost an order of magnitude more than with
    one thread, and the suite's time must stay bounded.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 28, quick 6; 16 before the steady window left out the
            drain, ``benchmarks.measure``).

    Returns:
        The workload.
    """
    count = batches or scaled(28, 6, quick)
    return _build("train", quick, count, None, "torch's default intra-op threads")


def build_threads1(quick: bool, batches: int | None) -> Workload:
    """Build the training workload with one intra-op thread during each pass (32 batches of 64; quick 6 of 16)."""
    count = batches or scaled(32, 6, quick)
    return _build("train-threads1", quick, count, 1, "1 intra-op thread")


def build_spare(quick: bool, batches: int | None) -> Workload:
    """Build the training workload with ``max(1, cores - num_workers)`` intra-op threads (as ``build_threads1``)."""
    count = batches or scaled(32, 6, quick)
    return _build("train-spare", quick, count, "spare", "max(1, cores - num_workers) intra-op threads")
