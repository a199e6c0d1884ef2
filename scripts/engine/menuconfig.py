"""kconfiglib's menuconfig, ended when its terminal goes away.

  python -m scripts.engine.menuconfig [Kconfig]          # what `make menuconfig` runs

When the terminal closes (ssh dropped, tmux pane killed) the curses loop of kconfiglib's
menuconfig gets an error from every read and retries forever, at 60-80 percent of a core:
make does not pass the hangup on to it. This wrapper restores SIGHUP's default action (a
parent may have ignored or blocked it), and a watchdog thread polls the terminal for a
hangup, which also catches the case where no SIGHUP is delivered at all (not the terminal's
foreground job). Either way the process exits without writing .config, as the kernel's
menuconfig does when its terminal dies.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import threading

HANGUP = 129            # 128 + SIGHUP, what a shell reports for a process killed by it


def _terminal_fd() -> int | None:
    for fd in (0, 1, 2):
        if os.isatty(fd):
            return fd
    return None


def watch_terminal(fd: int, period_ms: int = 500) -> None:
    """Exit the process as soon as the terminal on fd hangs up. poll() with no requested
    events reports only POLLHUP/POLLERR/POLLNVAL, so it never takes curses' input."""
    def loop():
        p = select.poll()
        p.register(fd, 0)
        while True:
            for _, ev in p.poll(period_ms):
                if ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    os._exit(HANGUP)
    threading.Thread(target=loop, name="terminal-watchdog", daemon=True).start()


def main(argv=None) -> int:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    fd = _terminal_fd()
    if fd is not None:
        watch_terminal(fd)
    import menuconfig                                  # kconfiglib's, from the venv
    sys.argv = ["menuconfig", *(sys.argv[1:] if argv is None else argv)]
    return menuconfig._main()


if __name__ == "__main__":
    sys.exit(main())
