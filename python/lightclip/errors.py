"""The exceptions lightclip raises.

Every error lightclip raises on purpose is a :class:`LightclipError`. Argument problems are also
the built-in a caller would expect, so ``except ValueError`` keeps working::

    >>> import lightclip, torch
    >>> try:
    ...     lightclip.soft_labels(torch.zeros(2, 3), progress=0.5)  # not square
    ... except ValueError as e:
    ...     print(type(e).__name__)
    InvalidInputError

The Rust extension imports these classes by name (``rust/py/src/errors.rs``), so renaming one
here means renaming it there.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable


class LightclipError(Exception):
    """Base class of every error raised by lightclip on purpose."""


class InvalidInputError(LightclipError, ValueError):
    """An argument has a wrong value or shape; the message names the argument."""


class InvalidDtypeError(LightclipError, TypeError):
    """A tensor argument has a dtype the operation does not take."""


class DataError(LightclipError):
    """A sample or data source could not be used; the message names shard, member and sample."""


class RunExistsError(LightclipError, FileExistsError):
    """A training run would write over an earlier run's results; the message names its folder
    and the ways on (resume it, pick a new name, or overwrite it)."""


class NonFiniteLossError(LightclipError, FloatingPointError):
    """Training diverged: a loss (or the weights) became NaN or infinite; the message names the
    step and the loss part."""


def run_command(prog: str, run: Callable[[], int]) -> int:
    """A command's exit code, with what a user can act on said in one line on stderr:
    a LightclipError (exit 2), a second Ctrl-C (130; during a save it says which file), a full
    disk (2). Anything else is a bug and keeps its traceback."""
    try:
        return run()
    except LightclipError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"{prog}: interrupted{f' {e}' if str(e) else ''}", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(
            f"{prog}: error: no space left on device writing {e.filename or 'a file'}",
            file=sys.stderr,
        )
        return 2


__all__ = [
    "run_command",
    "LightclipError",
    "InvalidInputError",
    "InvalidDtypeError",
    "DataError",
    "RunExistsError",
    "NonFiniteLossError",
]
