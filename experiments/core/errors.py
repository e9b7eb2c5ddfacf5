"""One line for any error: where it came from (the user's file and line when the user's code
raised it) and what to do about it.

    try:
        ...
    except Exception as err:
        print(f"chaosgrad: error: {describe(err)}")
        # -> "in your code at henon.py:21 in step: RuntimeError: boom"

A frame is the *user's* when its file is neither chaosgrad's own packages (systems, estimators,
experiments) nor the standard library, installed packages or torch. `describe` names the deepest
such frame; an error with no user frame is chaosgrad's own ("internal error", with the deepest
frame, so a bug report can cite it). Memory exhaustion (MemoryError, CUDA out of memory) says
what to reduce.
"""
from __future__ import annotations

import os
import sysconfig
import traceback

import torch

__all__ = ["user_frame", "location", "describe", "one_line", "is_out_of_memory", "DEBUG_ENV"]

DEBUG_ENV = "CHAOSGRAD_DEBUG"  # set to 1 (or pass --debug) for full tracebacks

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_OWN = tuple(os.path.normcase(os.path.join(_ROOT, p)) + os.sep
             for p in ("systems", "estimators", "experiments"))


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.add(os.path.dirname(torch.__file__))
    return tuple(os.path.normcase(os.path.abspath(d)) + os.sep for d in dirs)


_LIBRARY = _library_dirs()


def _is_user(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    path = os.path.normcase(os.path.abspath(filename))
    return not path.startswith(_OWN) and not path.startswith(_LIBRARY)


def user_frame(err: BaseException) -> traceback.FrameSummary | None:
    """The deepest frame of ``err``'s traceback (and of the exceptions it was raised from) that
    is the user's code, or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        for frame in reversed(traceback.extract_tb(err.__traceback__)):
            if _is_user(frame.filename):
                return frame
        err = err.__cause__ or err.__context__
    return None


def one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, or a RuntimeError saying it ran out of memory."""
    oom = getattr(torch, "OutOfMemoryError", ())
    return (isinstance(err, MemoryError) or (oom and isinstance(err, oom))
            or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower()))


def _at(frame: traceback.FrameSummary) -> str:
    return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"


def location(err: BaseException) -> str:
    """`` (at my_system.py:42 in step)`` when the user's code raised ``err``, else ``""``."""
    frame = user_frame(err)
    return f" (at {_at(frame)})" if frame is not None else ""


def describe(err: BaseException) -> str:
    """One line for an exception that escaped a command (no traceback)."""
    if is_out_of_memory(err):
        return (f"out of memory ({one_line(err)}): reduce what runs at once: fewer pairs, "
                "draws or reference pairs (--pairs, --draws, --ref-pairs, --budget), a shorter "
                "horizon, or --device cpu")
    if isinstance(err, SystemExit):
        what = f"SystemExit({err.code!r}) raised"
    else:
        what = one_line(err)
    frame = user_frame(err)
    if frame is not None:
        return f"{what} in your code at {_at(frame)} ({frame.filename})"
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {_at(frames[-1])}" if frames else ""
    return f"internal error{where}: {what}"
