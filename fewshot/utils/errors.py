"""User errors versus bugs: a user's mistake (a bad path, CSV, config or override) gets one clear line
and exit code 2, no traceback; an internal error keeps its traceback. ``--debug`` or ``FEWSHOT_DEBUG=1``
shows the traceback of a user error too.

Every command line entry point runs its ``main`` through :func:`run_cli`; library code raises
:class:`UserError` (or a subclass, e.g. ``ConfigError``, ``StylesFormatError``) for what the user can fix,
with a message that names the command line flag or config key to change.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Something the user can fix: the message says what and how. A ValueError, so library callers that
    catch ValueError keep working."""


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("FEWSHOT_DEBUG", "") not in ("", "0")


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None, *,
            prog: str = "fewshot") -> int:
    """``main(argv)``'s exit code (0 when it returns a non-int); a :class:`UserError` or ``SystemExit``
    with a message becomes ``prog: message`` on stderr and exit code 2, unless debugging is requested."""
    try:
        code = main(argv)
    except UserError as err:
        if debug_requested(argv):
            traceback.print_exc()
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SystemExit as exit_:  # argparse's own errors (exit 2) and help (exit 0) pass through as they are
        if isinstance(exit_.code, str):
            if debug_requested(argv):
                traceback.print_exc()
            print(exit_.code if exit_.code.startswith(f"{prog}") else f"{prog}: error: {exit_.code}",
                  file=sys.stderr)
            return EXIT_USER_ERROR
        return 0 if exit_.code is None else int(exit_.code)
    return code if isinstance(code, int) else 0
