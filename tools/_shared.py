"""What the tools share: finding an interpreter that has rich, and leaving
quietly when the reader of a pipe goes away.

Not a tool itself (hence the underscore). Each tool puts tools/ and the
project root on sys.path before importing it.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")
# Set in the environment of the re-run below, so it happens at most once
# even if the venv turns out to lack rich as well.
REEXEC_ENV = "TAC_TOOL_REEXEC"
# status.py uses 0-2 for health; 3 is "could not show it" (the monitoring
# convention's UNKNOWN), and the other tools use the same number for the
# same trouble.
EX_NO_RICH = 3


def require_rich(prog: str, script: str, argv: List[str]) -> None:
    """Return if rich can be imported. Otherwise run this same command with
    the checkout's venv python, which has rich after the README's install
    (so `python3 tools/status.py` under `watch` just works), or exit with one
    line saying which interpreter to use.

    Debian's /usr/bin/python3 has no rich; --help and --json never need it,
    so the tools call this only when they are about to draw.
    """
    try:
        import rich  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(VENV, "bin", "python")
    in_venv = os.path.realpath(sys.prefix) == os.path.realpath(VENV)
    if os.access(python, os.X_OK) and not in_venv and not os.environ.get(REEXEC_ENV):
        os.environ[REEXEC_ENV] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execv(python, [python, os.path.abspath(script)] + list(argv))
        except OSError:
            pass  # a broken venv: fall through to the message
    here = shlex.quote(ROOT)
    if os.path.exists(python):
        fix = "install it into the venv: {}/.venv/bin/pip install -e {}".format(here, here)
    else:
        fix = "run {}/.venv/bin/python {} after creating that venv: cd {} && " \
              "python3 -m venv .venv && .venv/bin/pip install -e .".format(
                  here, shlex.quote(os.path.join(ROOT, "tools", os.path.basename(script))), here)
    print("{}: needs the rich package, which {} does not have; {}".format(
        prog, sys.executable, fix), file=sys.stderr)
    sys.exit(EX_NO_RICH)


def closed_pipe(code: int) -> int:
    """Call on BrokenPipeError from stdout (`tool --json | head -1`): point
    stdout at /dev/null so the interpreter's last flush cannot raise again
    (that is the traceback-like "Exception ignored" line), and return
    ``code``. A reader leaving early is not an error of the tool."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return code


def pipe_console(**options):
    """A rich Console that raises BrokenPipeError when the reader leaves, so
    the tool picks its exit status (rich's own handler always exits 1)."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return PipeConsole(**options)
