"""What two or more labs read: the data-directory rules (here), MNIST-family IDX files (`idx.py`), downloads with
sha256 checks (`download.py`), in-memory batches (`memory.py`) and batch augmentation (`augment.py`). A reader that
one lab uses lives in that lab's folder."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "I2DL_DATA"


def default_data_dir() -> Path:
    """`$I2DL_DATA` if set, else a cache folder under the user's home."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "i2dl"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """An explicit `data_dir` wins over `$I2DL_DATA`, which wins over the home cache."""
    return Path(data_dir).expanduser() if data_dir else default_data_dir()
