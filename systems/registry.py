"""Name -> class registries, so the CLI, experiments and tests can iterate over everything.

One `Registry` serves both systems and estimators; each package keeps its own instance.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

__all__ = ["Registry", "register", "make", "available"]

C = TypeVar("C", bound=type)


class Registry(Generic[C]):
    """A mapping from snake_case names to classes built with ``make(name, **kwargs)``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, C] = {}
        self._families: dict[str, tuple[Callable[..., Any], str, str, dict[str, C]]] = {}

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator: ``@REGISTRY.register("pes")`` makes ``make("pes")`` work."""
        def deco(cls: C) -> C:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name
            self._classes[name] = cls
            return cls
        return deco

    def register_family(self, prefix: str, factory: Callable[..., Any], *, example: str,
                        members: dict[str, C] | None = None) -> None:
        """Resolve every ``"prefix:NAME"``: ``make("evosax:SNES", **kw)`` is ``factory("SNES", **kw)``.

        ``available()`` lists the family once, as ``"prefix:<Name>"``, with ``example``; a family
        with named ``members`` (name -> class) lists each as ``"prefix:name"`` instead, like a
        registered class, and ``get("prefix:name")`` returns that class, so everything that
        iterates over the registry (CLI listing, contract tests) covers them.
        """
        if ":" in prefix or prefix in self._families or prefix in self._classes:
            raise ValueError(f"{self.kind} family {prefix!r} is registered twice or contains ':'")
        self._families[prefix] = (factory, example, f"{prefix}:<Name>", dict(members or {}))

    def get(self, name: str) -> C:
        """The class registered under ``name`` (ValueError naming the choices if unknown).

        For a family name ``"prefix:NAME"`` this is the member class NAME if the family has
        one, else the family's factory.
        """
        family = self._family(name)
        if family is not None:
            members = self._families[name.partition(":")[0]][3]
            return members.get(name.partition(":")[2], family)
        if not isinstance(name, str) or name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; available: "
                             f"{', '.join(self.available())}")
        return self._classes[name]

    def make(self, name: str, **kwargs):
        """Build a registered class by name with its constructor's keyword arguments."""
        family = self._family(name)
        if family is not None:
            return family(name.partition(":")[2], **kwargs)
        return self.get(name)(**kwargs)

    def _family(self, name: Any) -> Callable[..., Any] | None:
        prefix, sep, _ = name.partition(":") if isinstance(name, str) else ("", "", "")
        return self._families[prefix][0] if sep and prefix in self._families else None

    def available(self) -> dict[str, str]:
        """Registered names with the first line of each class docstring (families once each,
        or each named member)."""
        out = {n: (c.__doc__ or "").strip().splitlines()[0]
               for n, c in sorted(self._classes.items())}
        for prefix, (factory, example, listed, members) in self._families.items():
            for member, cls in sorted(members.items()):
                out[f"{prefix}:{member}"] = (cls.__doc__ or "").strip().splitlines()[0]
            if not members:
                doc = (factory.__doc__ or "").strip().splitlines()[0]
                out[listed] = f"{doc} (e.g. {example})"
        return out


SYSTEMS: Registry = Registry("system")
register = SYSTEMS.register
make = SYSTEMS.make
available = SYSTEMS.available
