"""Helpers for system states that are a tensor or a NamedTuple of tensors (leading dim B)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["tree_map", "tree_where", "tree_cat", "tree_index", "tree_leaves"]


def _is_tuple(x: Any) -> bool:
    return isinstance(x, tuple)


def tree_map(fn: Callable[..., Tensor], state: Any, *rest: Any) -> Any:
    """Apply ``fn`` leaf-wise to one or more states of the same structure."""
    if isinstance(state, Tensor):
        return fn(state, *rest)
    if _is_tuple(state):
        leaves = [tree_map(fn, *xs) for xs in zip(state, *rest)]
        return type(state)(*leaves) if hasattr(state, "_fields") else type(state)(leaves)
    raise TypeError(f"a system state must be a tensor or a (named) tuple of tensors, "
                    f"got {type(state).__name__}")


def tree_leaves(state: Any) -> list[Tensor]:
    """The tensors of a state, in order."""
    if isinstance(state, Tensor):
        return [state]
    if _is_tuple(state):
        return [leaf for s in state for leaf in tree_leaves(s)]
    raise TypeError(f"a system state must be a tensor or a (named) tuple of tensors, "
                    f"got {type(state).__name__}")


def tree_where(mask: Tensor, a: Any, b: Any) -> Any:
    """Row-wise select: ``a`` where ``mask[B]`` is true, else ``b``."""
    def sel(x: Tensor, y: Tensor) -> Tensor:
        return torch.where(mask.reshape(-1, *([1] * (x.dim() - 1))), x, y)
    return tree_map(sel, a, b)


def tree_cat(states: list[Any]) -> Any:
    """Concatenate states along the batch dimension."""
    return tree_map(lambda *xs: torch.cat(xs, 0), *states)


def tree_index(state: Any, index: Tensor | slice) -> Any:
    """Select rows of every leaf."""
    return tree_map(lambda x: x[index], state)
