"""The matrix engine: .config -> planned runs -> executor -> reports (docs/architecture.md)."""
import os
import sys


def run_main(main, *args) -> None:
    """Exit with main(*args)'s code; a reader that closed the pipe (`make status | head`)
    ends the command quietly, as it ends any Unix tool, instead of in a traceback."""
    try:
        code = main(*args)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that is silent too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
