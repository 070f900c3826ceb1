"""threadloader: a torch-compatible data loader for free-threaded Python.

``from threadloader import DataLoader`` replaces ``torch.utils.data.DataLoader``.
On a free-threaded CPython (3.13t) worker threads share one dataset object; on
a build with the GIL the loader falls back to worker processes.
"""

from .collate import default_collate, default_convert
from .errors import LoaderTimeoutError, WorkerDiedError
from .loader import DataLoader
from .randomness import sample_rng, sample_torch_generator
from .replication import replicate
from .runtime import free_threaded_build, gil_enabled
from .sampling import BatchSampler, RandomSampler, SequentialSampler
from .worker import WorkerInfo, get_worker_info

__version__ = "0.1.0"

__all__ = [
    "BatchSampler",
    "DataLoader",
    "LoaderTimeoutError",
    "RandomSampler",
    "SequentialSampler",
    "WorkerDiedError",
    "WorkerInfo",
    "__version__",
    "default_collate",
    "default_convert",
    "free_threaded_build",
    "get_worker_info",
    "gil_enabled",
    "replicate",
    "sample_rng",
    "sample_torch_generator",
]
