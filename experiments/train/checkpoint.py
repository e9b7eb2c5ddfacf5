"""Checkpoints of one learning curve, so that a killed ``train`` / ``compare`` resumes where it was.

A checkpoint is one file per curve, ``DIR/checkpoints/<estimator>-seed<s>-<cell key>.pt``,
holding the loop's position (steps, seconds, the grid points done, the curve so far, theta) and
the stepper's state: for a gradient estimator theta, the ``torch.optim`` state and the
estimator's state (a NamedTuple of tensors, e.g. PES's particles and accumulated xi, stored as
its leaves); for an ask/tell strategy its ``state_dict`` (numpy arrays stored as tensors). The
file is written to a unique temporary name in the same folder, fsynced and moved over the old
one with ``os.replace``, so a kill at any moment leaves either the old or the new checkpoint,
and read back with ``torch.load(weights_only=True)``: plain containers, numbers, strings,
bytes, dtypes and tensors only.

Everything that decides the next update is in the file (the estimators' and systems' randomness
is a function of seeds and counters held in the state), so a resumed curve equals an
uninterrupted one bit for bit; only its wall-clock ``seconds`` differ (the work done after the
last checkpoint of a killed run is redone and not counted twice).

One caveat: `estimators.CMAES` keeps pycma's search object as its own pickle (bytes in the
file); resuming unpickles it, so resume only from a results directory you trust.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "FORMAT", "checkpoint_path", "save", "load", "pack_state",
           "unpack_state", "pack_strategy", "unpack_strategy", "parse_every"]

FORMAT = "chaosgrad-train-checkpoint-1"
_ARRAY = "__ndarray__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read back (one line, for the CLI)."""


def parse_every(text: str) -> float | None:
    """``--checkpoint-every``: seconds of work between checkpoints (>= 0; 0 = after every
    update), or ``off`` (None). ValueError otherwise."""
    if str(text).strip().lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise ValueError(f"--checkpoint-every expects SECONDS >= 0 or 'off', got {text!r}")
    return value


def checkpoint_path(directory: str | Path, cell) -> Path:
    """Where the curve of ``cell`` (a `experiments.core.store.Cell`) keeps its checkpoint."""
    name = f"{cell.estimator.replace(':', '-')}-seed{cell.seed}-{cell.key[:16]}.pt"
    return Path(directory) / "checkpoints" / name


def save(path: str | Path, payload: dict) -> None:
    """Write ``payload`` atomically: unique temp file in the same folder, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load(path: str | Path, device: str | torch.device = "cpu") -> dict | None:
    """The checkpoint at ``path`` (None if there is none); CheckpointError if it is unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 -- truncated zip, bad pickle, foreign object...
        raise CheckpointError(f"checkpoint {path} is partial or corrupt ({type(err).__name__}); "
                              f"delete it to restart this curve from the beginning") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file; delete it to restart "
                              f"this curve from the beginning")
    return payload


# -- estimator states: NamedTuples of tensors, stored as their leaves -------------------------
def _leaves(state: Any) -> list:
    if isinstance(state, tuple):
        return [leaf for s in state for leaf in _leaves(s)]
    if state is None or isinstance(state, (torch.Tensor, bool, int, float, str)):
        return [state]
    raise CheckpointError(f"an estimator state holds a {type(state).__name__}; only tensors, "
                          f"numbers and (named) tuples of them can be checkpointed")


def pack_state(state: Any) -> list:
    """An estimator state (tensor / NamedTuple tree) as the list of its leaves."""
    return [leaf.detach().clone() if isinstance(leaf, torch.Tensor) else leaf
            for leaf in _leaves(state)]


def unpack_state(leaves: list, template: Any) -> Any:
    """Rebuild a state from `pack_state`'s leaves in the structure of ``template`` (the state a
    fresh ``init`` gives); CheckpointError when the leaves do not fit it (other settings)."""
    it = iter(leaves)

    def build(t: Any) -> Any:
        if isinstance(t, tuple):
            parts = [build(s) for s in t]
            return type(t)(*parts) if hasattr(t, "_fields") else type(t)(parts)
        try:
            leaf = next(it)
        except StopIteration:
            raise CheckpointError("the checkpoint's estimator state has fewer parts than this "
                                  "run's; it was written with other settings") from None
        fits = isinstance(leaf, torch.Tensor) and (leaf.shape, leaf.dtype) == (t.shape, t.dtype)
        if isinstance(t, torch.Tensor) and not fits:
            raise CheckpointError(f"the checkpoint's estimator state does not fit this run's "
                                  f"(a {getattr(leaf, 'shape', type(leaf).__name__)} where "
                                  f"{tuple(t.shape)} {t.dtype} is expected)")
        return leaf.to(t.device) if isinstance(leaf, torch.Tensor) else leaf

    state = build(template)
    if next(it, StopIteration) is not StopIteration:
        raise CheckpointError("the checkpoint's estimator state has more parts than this run's; "
                              "it was written with other settings")
    return state


# -- strategy states: plain containers, numpy arrays as tensors -------------------------------
def _encode(x: Any, where: str) -> Any:
    if isinstance(x, np.generic):  # before float: np.float64 is a float subclass
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str, bytes, torch.dtype, torch.Tensor)):
        return x
    if isinstance(x, np.ndarray):
        wide = x.astype(np.int64) if x.dtype.kind in "ui" else x
        return {_ARRAY: torch.from_numpy(np.ascontiguousarray(wide)).clone(),
                "dtype": x.dtype.str}
    if isinstance(x, (list, tuple)):
        return type(x)(_encode(v, where) for v in x)
    if isinstance(x, dict) and all(isinstance(k, str) for k in x):
        return {k: _encode(v, where) for k, v in x.items()}
    raise CheckpointError(f"{where}'s state holds a {type(x).__name__}, which "
                          f"torch.load(weights_only=True) cannot load")


def _decode(x: Any) -> Any:
    if isinstance(x, dict):
        if _ARRAY in x:
            return x[_ARRAY].numpy().astype(np.dtype(x["dtype"]))
        return {k: _decode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_decode(v) for v in x)
    return x


def pack_strategy(strategy, name: str) -> dict:
    """``strategy.state_dict()`` in weights_only-loadable form (CheckpointError if it is not)."""
    return _encode(strategy.state_dict(), name)


def unpack_strategy(packed: dict) -> dict:
    """The ``state_dict`` that `pack_strategy` stored, for ``strategy.load_state_dict``."""
    return _decode(packed)
