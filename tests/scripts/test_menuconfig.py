"""`make menuconfig` leaves nothing behind when its terminal goes away (issue 20): before
the wrapper, kconfiglib's menuconfig kept retrying reads of the dead terminal at 60-80
percent of a core, forever."""
import os
import pty
import select
import time

import psutil

from conftest import REPO


def _read_until(fd, needle: bytes, timeout: float) -> bytes:
    buf, t0 = b"", time.time()
    while needle not in buf and time.time() - t0 < timeout:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                buf += os.read(fd, 65536)
            except OSError:
                break
    return buf


def test_menuconfig_exits_when_its_terminal_closes():
    pid, fd = pty.fork()
    if pid == 0:                                       # child: make, in a new terminal session
        os.chdir(REPO)
        os.environ["TERM"] = "xterm"
        # -o: the venv is what it is; never re-install it from a test
        os.execvp("make", ["make", "--no-print-directory", "-o", ".venv/.installed", "menuconfig"])
    try:
        screen = _read_until(fd, b"Save", 60)        # the menu's bottom line: curses is up
        assert b"Save" in screen, screen[-2000:]
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        assert any("menuconfig" in " ".join(p.cmdline()) for p in procs[1:]), procs
        os.close(fd)                                   # the terminal goes away
        fd = None
        gone = lambda: all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)
        t0 = time.time()
        while not gone() and time.time() - t0 < 5:
            time.sleep(0.1)
        alive = [(p.pid, p.cmdline()) for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"still running 5 s after the terminal closed: {alive}"
    finally:
        if fd is not None:
            os.close(fd)
        for p in psutil.Process(pid).children(recursive=True) if psutil.pid_exists(pid) else []:
            p.kill()
        os.waitpid(pid, 0)
