"""Data libraries users load through torch's loader, loaded through threadloader instead (data made locally).

webdataset splits its shards over the workers with torch's
``get_worker_info()``; with shards of uneven length the workers' streams end
at different times, and the batches must come in torch's order all the same
(each worker's next batch in turn, passing over ended workers), in both
modes. torchvision's pipelines are checked for reproducibility in
``test_reproducibility.py``.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
wds = pytest.importorskip("webdataset")

from threadloader import DataLoader  # noqa: E402

pytestmark = pytest.mark.timeout(120)

SHARD_SIZES = (7, 2, 11, 4, 12)  # 5 shards over 3 workers: streams of 11, 14 and 11 samples


def _write_shards(root: Path) -> list[str]:
    """Tar shards of ``{key}.cls`` members, the shard number and position in each key."""
    urls = []
    for shard, size in enumerate(SHARD_SIZES):
        path = root / f"shard-{shard:02d}.tar"
        with tarfile.open(path, "w") as tar:
            for position in range(size):
                payload = f"{shard * 100 + position}".encode()
                info = tarfile.TarInfo(f"s{shard:02d}p{position:03d}.cls")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        urls.append(str(path))
    return urls


def _dataset(urls: list[str]) -> Any:
    return wds.WebDataset(urls, shardshuffle=False, empty_check=False).to_tuple("__key__", "cls")


def _keys(batch: Any) -> list[str]:
    keys, _labels = batch
    return list(keys)


@pytest.mark.parametrize("persistent", [False, True])
def test_webdataset_with_uneven_shards_comes_in_torchs_order(mode: str, persistent: bool, tmp_path: Path) -> None:
    urls = _write_shards(tmp_path)
    settings: dict[str, Any] = {"batch_size": 3, "num_workers": 3, "persistent_workers": persistent}
    reference = [_keys(batch) for batch in torch.utils.data.DataLoader(_dataset(urls), **settings)]
    streams = [sum(SHARD_SIZES[w::3]) for w in range(3)]
    assert len(set(streams)) > 1  # the workers' streams end at different batches
    assert sorted(key for batch in reference for key in batch) == sorted(
        f"s{shard:02d}p{position:03d}" for shard, size in enumerate(SHARD_SIZES) for position in range(size)
    )
    loader = DataLoader(_dataset(urls), mode=mode, **settings)
    try:
        for _ in range(3):
            assert [_keys(batch) for batch in loader] == reference
    finally:
        loader.close()
