"""From what a user types to objects: system names, regimes and ``--set`` overrides, systems in
a user's file, and devices.

    resolve_system("logistic")                          # 'logistic_map' (an unambiguous prefix)
    make_system("logistic", "chaotic", {"r": 3.7})      # LogisticMap(r=3.7)
    make_system("henon.py:Henon", "chaotic", {"a": 1.3})  # the user's class, same arguments
    load_target("my_system.py:make")                    # whatever make() returns (a System)
    resolve_device("auto")                              # 'cuda' when available, else 'cpu'

A system is named the same way in every command: a registered name (or an unambiguous prefix),
a registered family member (``mujoco:model.xml``), ``path/to/file.py:attr`` or
``package.module:attr`` (a System instance, a System subclass or a zero-argument factory);
``--regime`` and ``--set`` apply to registered names and to System subclasses.

Every failure is a ValueError with a one-line message naming the bad value and the choices; an
error raised by the user's file says where (file and line).
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import torch

import systems

from .errors import location, one_line

__all__ = ["resolve_system", "make_system", "build_system", "parse_overrides", "load_target",
           "is_target", "system_regimes", "source_digest", "resolve_device", "DEVICES",
           "NO_REGIME"]

DEVICES = ("auto", "cpu", "cuda")
NO_REGIME = "default"  # the one regime of a system that names none: its constructor's defaults


def _family_name(name: str) -> bool:
    """``name`` is ``"prefix:NAME"`` of a registered family (``mujoco:path/to/model.xml``)."""
    prefix, sep, rest = name.partition(":")
    return bool(sep and rest) and any(n.partition(":")[0] == prefix
                                      for n in systems.available() if ":" in n)


def is_target(name: str) -> bool:
    """``name`` is ``path/to/file.py:attr`` or ``package.module:attr`` (not a registered name or
    family member)."""
    return ":" in name and name not in systems.available() and not _family_name(name)


def resolve_system(name: str) -> str:
    """A registered system name from ``name`` or an unambiguous prefix ("logistic"); a name of
    a registered family (``mujoco:path/to/model.xml``) as it is; a ``file.py:attr`` or
    ``package.module:attr`` target as it is, once it imports and names a System."""
    names = list(systems.available())
    if name in names or _family_name(name):
        return name
    if is_target(name):
        _import_attr(name)  # fails now, in one line, if it does not import
        return name
    hits = [n for n in names if n.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    raise ValueError(f"unknown system {name!r}; available: {', '.join(names)} (or your own: "
                     "path/to/file.py:attr or package.module:attr)")


def build_system(cls: type, regime: str | None = None, overrides: dict | None = None,
                 what: str | None = None) -> systems.System:
    """``cls(**regimes[regime], **overrides)``: a system class in one of its named regimes
    (None: the constructor's defaults) with constructor overrides; ``what`` names it in errors."""
    what = what or cls.__name__
    kwargs = {}
    if regime == NO_REGIME and NO_REGIME not in getattr(cls, "regimes", {}):
        regime = None
    if regime is not None:
        regimes = getattr(cls, "regimes", {})
        if regime not in regimes:
            raise ValueError(f"unknown regime {regime!r} of {what}; available: "
                             f"{', '.join(regimes) or 'none'}")
        kwargs.update(regimes[regime])
    kwargs.update(overrides or {})
    try:
        return cls(**kwargs)
    except TypeError as err:
        if location(err):  # raised inside the user's constructor, not by the call itself
            raise _failed(f"building {what} with {kwargs}", err) from err
        raise ValueError(f"cannot build {what} with {kwargs}: {err}") from None
    except (Exception, SystemExit) as err:
        raise _failed(f"building {what} with {kwargs}", err) from err


def make_system(name: str, regime: str | None = None,
                overrides: dict | None = None) -> systems.System:
    """The system ``name`` (a registered name or prefix, a family member, or a ``file.py:attr``
    / ``package.module:attr`` target) in ``regime`` with ``overrides``."""
    if is_target(name):
        return load_target(name, regime=regime, overrides=overrides)
    name = resolve_system(name)
    cls = systems.SYSTEMS.get(name)
    if isinstance(cls, type):
        return build_system(cls, regime, overrides, name)
    try:  # a family's factory (mujoco:path/to/model.xml): its regimes are on what it builds
        system = systems.make(name, **(overrides or {}))
    except TypeError as err:
        raise ValueError(f"cannot build {name} with {overrides or {}}: {err}") from None
    regimes = getattr(system, "regimes", {})
    if regime == NO_REGIME and NO_REGIME not in regimes:
        regime = None
    if regime is not None and regime not in regimes:
        raise ValueError(f"unknown regime {regime!r} of {name}; available: "
                         f"{', '.join(regimes) or 'none'}")
    if regime is None or not regimes[regime]:
        return system
    return systems.make(name, **{**regimes[regime], **(overrides or {})})


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: list[str] | None) -> dict:
    """``["r=3.7", "horizon=50"]`` -> ``{"r": 3.7, "horizon": 50}`` (ValueError on bad items)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key] = _parse_value(value)
    return out


def _failed(what: str, err: BaseException) -> ValueError:
    """One line for an exception (SystemExit included) raised by the user's code."""
    text = f"SystemExit({err.code!r})" if isinstance(err, SystemExit) else one_line(err)
    return ValueError(f"{what} failed: {text}{location(err)}")


def _import_file(where: str):
    path = Path(where)
    if not path.is_file():
        raise ValueError(f"no such file: {where!r}")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"chaosgrad_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    known = sys.modules.get(name)
    if known is not None and getattr(known, "__chaosgrad_mtime__", None) == path.stat().st_mtime:
        return known  # imported once per process (every cell of a sweep builds the system)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {where!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # a user's sys.exit() at import is an error too
        sys.modules.pop(name, None)
        raise _failed(f"importing {where!r}", err) from err
    module.__chaosgrad_mtime__ = path.stat().st_mtime
    return module


def _import_attr(target: str) -> tuple[Any, str]:
    where, _, attr = target.rpartition(":")
    if not attr.isidentifier():
        raise ValueError(f"{target!r}: expected path/to/file.py:attr or package.module:attr")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(where)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as err:
            if err.name and where.startswith(err.name):
                raise ValueError(f"cannot import {where!r}: no module named {err.name!r} "
                                 "(a file is path/to/file.py:attr)") from None
            raise _failed(f"importing {where!r}", err) from err
        except (Exception, SystemExit) as err:
            raise _failed(f"importing {where!r}", err) from err
    if not hasattr(module, attr):
        raise ValueError(f"{where!r} has no attribute {attr!r}")
    return getattr(module, attr), f"{where}:{attr}"


def load_target(target: str, *, regime: str | None = None,
                overrides: dict | None = None) -> systems.System:
    """The `System` named by ``target``: a registered name or prefix, ``path/to/file.py:attr``
    or ``package.module:attr`` (a System instance, a System subclass or a zero-argument factory).

    ``regime`` and ``overrides`` apply to registered names and to System subclasses. Every
    failure is a ValueError with a one-line message.
    """
    overrides = dict(overrides or {})
    if ":" not in target or target in systems.available() or _family_name(target):
        return make_system(target, regime, overrides)
    obj, what = _import_attr(target)
    if isinstance(obj, type) and issubclass(obj, systems.System):
        return build_system(obj, regime, overrides, what)
    if regime == NO_REGIME:
        regime = None
    if regime is not None or overrides:
        raise ValueError(f"--regime/--set need a registered name or a System subclass; "
                         f"{what} is a {type(obj).__name__}")
    if callable(obj) and not isinstance(obj, systems.System):
        try:
            obj = obj()
        except (Exception, SystemExit) as err:
            raise _failed(f"calling {what}()", err) from err
    if not isinstance(obj, systems.System):
        raise ValueError(f"{what} is a {type(obj).__name__}, not a systems.System instance or "
                         "a zero-argument factory returning one")
    return obj


def system_regimes(name: str) -> dict:
    """The named regimes (regime -> constructor arguments) of the system ``name`` (any form
    `make_system` takes): a registered class's or a user class's ``regimes``, a factory's or an
    instance's ``regimes`` attribute; ``{NO_REGIME: {}}`` when it names none."""
    if is_target(name):
        obj, _ = _import_attr(name)
        if not (isinstance(obj, type) and issubclass(obj, systems.System)):
            obj = load_target(name)
        return dict(getattr(obj, "regimes", {}) or {NO_REGIME: {}})
    cls = systems.SYSTEMS.get(resolve_system(name))
    if not isinstance(cls, type):
        cls = make_system(name)
    return dict(getattr(cls, "regimes", {}) or {NO_REGIME: {}})


def source_digest(name: str) -> str:
    """A short content hash (the first 12 hex digits of SHA-256) of the source file behind a
    user's system: the file of ``path/to/file.py:attr``, the module's file of
    ``package.module:attr``; ``""`` for registered names and family members.

    Commands put it into the cells of a user's system, so that editing the file and rerunning
    into the same ``--out`` recomputes those cells instead of reusing them (registered systems'
    cells, and so their keys, are unchanged).
    """
    if not is_target(name):
        return ""
    where = name.rpartition(":")[0]
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
    else:
        try:
            spec = importlib.util.find_spec(where)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not Path(spec.origin).is_file():
            raise ValueError(f"cannot find the source file of {where!r}")
        path = Path(spec.origin)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError as err:
        raise ValueError(f"cannot read {str(path)!r}: {err.strerror or err}") from None


def resolve_device(name: str) -> str:
    """``"cpu"`` or ``"cuda"`` from ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Raises:
        ValueError: for another name, or ``cuda`` on a machine without a CUDA device.
    """
    if name not in DEVICES:
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here (use --device cpu)")
    return name
