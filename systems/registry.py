"""Name -> class registries, so the CLI, experiments and tests can iterate over everything.

One `Registry` serves both systems and estimators; each package keeps its own instance.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

__all__ = ["Registry", "register", "make", "available"]

C = TypeVar("C", bound=type)


class Registry(Generic[C]):
    """A mapping from snake_case names to classes built with ``make(name, **kwargs)``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, C] = {}

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator: ``@REGISTRY.register("pes")`` makes ``make("pes")`` work."""
        def deco(cls: C) -> C:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name
            self._classes[name] = cls
            return cls
        return deco

    def get(self, name: str) -> C:
        """The class registered under ``name`` (ValueError naming the choices if unknown)."""
        if not isinstance(name, str) or name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; available: "
                             f"{', '.join(sorted(self._classes))}")
        return self._classes[name]

    def make(self, name: str, **kwargs):
        """Build a registered class by name with its constructor's keyword arguments."""
        return self.get(name)(**kwargs)

    def available(self) -> dict[str, str]:
        """Registered names with the first line of each class docstring."""
        return {n: (c.__doc__ or "").strip().splitlines()[0]
                for n, c in sorted(self._classes.items())}


SYSTEMS: Registry = Registry("system")
register = SYSTEMS.register
make = SYSTEMS.make
available = SYSTEMS.available
