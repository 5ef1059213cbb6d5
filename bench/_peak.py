"""Run a module (``-m NAME ARGS``) or a script (``-c CODE ARGS``) in this process, then print
its own peak resident memory (``VmHWM``) as ``PEAK_RSS_KB N``: the driver's peak, without
the Ray workers it started (they are other processes)."""

import atexit
import os
import runpy
import sys


def _peak() -> None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                print("PEAK_RSS_KB", line.split()[1], flush=True)


atexit.register(_peak)
# ``vidcap`` leaves through os._exit (``pipelines.cli.run``), past atexit: report there too.
_os_exit = os._exit


def _exit_after_peak(code: int) -> None:
    _peak()
    _os_exit(code)


os._exit = _exit_after_peak
mode, target, *rest = sys.argv[1:]
sys.argv = [target, *rest]
if mode == "-m":
    try:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        _peak()
        atexit.unregister(_peak)
        raise SystemExit(exc.code) from None
else:
    exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
