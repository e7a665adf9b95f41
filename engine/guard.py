"""Runs one backend command and makes sure none of its processes outlive the engine.

Standard library only: it is started with the app's interpreter, before any vLLM import.
Usage: python guard.py [--nice N] CMD...   (stdin must be a pipe held open by the engine; stdout
a pipe that receives one line, the backend's pid; stderr the backend's log file, which the
backend writes its stdout and stderr to directly)

- The backend runs in its own session and process group (vLLM forks workers; the group holds
  them all), at N more niceness than the guard; its workers inherit that. The guard keeps its own.
- EOF on stdin means the engine is gone, even by SIGKILL: the guard kills the group.
- When the backend exits, the guard kills what is left of its group and exits with its code.
- SIGTERM to the guard is forwarded to the group, for a graceful stop.
"""
import argparse
import ctypes
import errno
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def _die_with_guard() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _lower_priority(nice: int) -> None:
    """In the child before exec: it and everything it forks run `nice` lower than the guard.
    With the kernel's autogroups on (Linux's default; measured here), the CPU is shared between
    sessions first and a process's niceness counts only inside its own session, so the session's
    autogroup gets the niceness too. Where autogroups do not apply (a cgroup CPU controller, or
    none built in), the process niceness is what counts."""
    os.nice(nice)
    for _ in range(20):
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EAGAIN:  # unprivileged writes are rate limited system-wide: retry
                return
            time.sleep(0.1)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()

    def before_exec() -> None:
        _die_with_guard()
        if args.nice:
            _lower_priority(args.nice)

    # Its own session, not only a process group: a session is an autogroup of its own, whose
    # niceness the child may set without touching the guard's.
    child = subprocess.Popen(args.command, stdin=subprocess.DEVNULL, stdout=2, stderr=2, start_new_session=True,
                             preexec_fn=before_exec)
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
