"""Checkpoints are data, not code: every checkpoint or weights file i2dl reads goes through `load`, which uses
torch's safe unpickler (`weights_only=True`). A file that asks for anything beyond tensors, numbers, strings, lists,
dicts and the few types in `SAFE_GLOBALS` is refused before any of it runs.

Also here: atomic saving, the one-line compatibility check of a state dict against a model, and the random-number
states of a run stored as plain data."""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2dl.errors import CheckpointError
from i2dl.files import atomic_path


def _numpy_globals() -> list:
    """What `np.random.get_state()` pickles to: checkpoints of `i2dl rl train` written before the RNG states were
    stored as plain data hold one (a uint32 array inside a tuple). Plain arrays only; an object array's items go
    through the same safe unpickler."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [
        _reconstruct,
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
        type(np.dtype(np.float64)),
        type(np.dtype(np.int64)),
    ]


# The one list of non-primitive types an i2dl checkpoint may hold (torch's own tensor types are always allowed).
SAFE_GLOBALS: list = _numpy_globals()
torch.serialization.add_safe_globals(SAFE_GLOBALS)

_BLOCKED = re.compile(r"GLOBAL ([\w.]+)")


def load(path: str | Path, what: str = "checkpoint") -> Any:
    """Read a checkpoint/weights file with the safe unpickler on the CPU; every failure is a one-line
    CheckpointError naming the file (`what` says what was expected, e.g. "weights file")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = _BLOCKED.search(str(err))
        if blocked:  # a class or function the file wants to import (the way pickle payloads run code)
            raise CheckpointError(
                f"{path}: holds objects the safe loader does not allow ({blocked.group(1)}); i2dl "
                f"reads checkpoints as data only and did not load it"
            ) from None
        reason = (
            str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            if "WeightsUnpickler error" in str(err)
            else _first_line(err)
        )
        raise CheckpointError(f"{path}: not a readable {what} (UnpicklingError: {reason[:200]})") from None
    except Exception as err:  # zip/EOF/runtime errors come in many types
        raise CheckpointError(f"{path}: not a readable {what} ({type(err).__name__}: {_first_line(err)})") from None


def save(payload: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file beside `path`, then rename: a kill never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def check_state_dict_compatible(
    expected: dict[str, torch.Tensor], found: Any, source: str, what: str = "model"
) -> None:
    """Raise a one-line CheckpointError naming the first key or shape of `found` that does not fit `expected`."""
    if not isinstance(found, dict):
        raise CheckpointError(f"{source} holds no state dict (a dict of tensors)")
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(
            f"{source} does not fit this {what} ({detail}; {len(missing)} missing, {len(unexpected)} unexpected keys)"
        )
    for key, tensor in expected.items():
        other = found[key]
        if not isinstance(other, torch.Tensor):
            raise CheckpointError(f"{source} does not fit this {what}: {key} is not a tensor")
        if tuple(other.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source} does not fit this {what}: {key} has shape {tuple(other.shape)}, "
                f"the {what} expects {tuple(tensor.shape)}"
            )


# --- random states as plain data (tensors, ints, lists) ---------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's global random states, as tensors and numbers (safe to unpickle)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` returned (or the NumPy-array form of checkpoints written before it)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(int(v) for v in internal), gauss))
    name, keys, *rest = states["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]
