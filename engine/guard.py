"""Runs one backend command and makes sure none of its processes outlive the engine.

Standard library only: it is started with the app's interpreter, before any vLLM import.
Usage: python guard.py CMD...   (stdin must be a pipe held open by the engine; stdout a pipe
that receives one line, the backend's pid; stderr the backend's log file, which the backend
writes its stdout and stderr to directly)

- The backend runs in its own process group (vLLM forks workers; the group holds them all).
- EOF on stdin means the engine is gone, even by SIGKILL: the guard kills the group.
- When the backend exits, the guard kills what is left of its group and exits with its code.
- SIGTERM to the guard is forwarded to the group, for a graceful stop.
"""
import ctypes
import os
import signal
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1


def _die_with_guard() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def main() -> int:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=2, stderr=2, process_group=0,
                             preexec_fn=_die_with_guard)
    print(f"BATON_CHILD_PID={child.pid}", flush=True)
    sys.stdout.close()  # the engine reads that one line, then sees EOF
    signal.signal(signal.SIGTERM, lambda *_: _kill_group(child.pid, signal.SIGTERM))

    def watch_engine() -> None:
        while os.read(0, 4096):  # raw fd: a buffered reader would block interpreter shutdown
            pass
        _kill_group(child.pid, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch_engine, daemon=True).start()
    code = child.wait()
    _kill_group(child.pid, signal.SIGKILL)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    os._exit(main())  # skip finalization: the watcher thread is still blocked in read()
