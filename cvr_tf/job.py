"""How every job of the project runs: absl's ``app.run``, with bad input reported in one line.

absl answers an ``app.UsageError`` raised by ``main`` with the module docstring and the help of
every flag of the job, and the error itself last: for ``cvr_tf.train`` some 150 lines in front
of the one that says what is wrong. Jobs here raise ``app.UsageError`` for every bad input they
can name (a flag, a file, a window without data), with the fix in the message, so :func:`run`
prints that message alone on stderr and exits with the error's status. ``--helpshort`` and
``--helpfull`` still print the help, and absl's own flag-parsing errors keep their two lines.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app

Main = Callable[[list[str]], Any]


def one_line_usage_errors(main: Main) -> Main:
    """``main``, with an ``app.UsageError`` printed as ``error: <message>`` and exited."""

    def guarded(argv: list[str]) -> Any:
        try:
            return main(argv)
        except app.UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(error.exitcode)

    return guarded


def run(main: Main, flags_parser: Callable[[Sequence[str]], list[str]] | None = None) -> None:
    """``app.run(main)`` (with absl's ``flags_parser`` if given), usage errors in one line."""
    if flags_parser is None:
        app.run(one_line_usage_errors(main))
    else:
        app.run(one_line_usage_errors(main), flags_parser=flags_parser)
