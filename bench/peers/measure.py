"""Run a command the way the peer benchmarks time it: wall clock, largest process RSS (GNU time) and the peak PSS of
the whole process tree (systems that predict with worker processes are not double-counted), in its own process group
so a budget can kill all of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path


def _tree_pss_kb(root: int) -> int:
    """Sum of PSS (shared pages split between their users, so forked workers are not double-counted) over ``root``
    and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            pass
        todo.extend(children.get(p, []))
    return total


def run_measured(cmd: list[str], env: dict, log: Path, timeout: float | None = None,
                 first_marker: str | None = None, interval: float = 1.0, sample_pss: bool = True) -> dict:
    """Run ``cmd`` under GNU time in its own process group; kill the group at ``timeout``. Returns wall time, exit
    code, whether it was killed, GNU time's max RSS (largest single process), the peak process-tree PSS, and the
    time ``first_marker`` first appeared in the output (start-up and model loading before the first case).

    The sampler costs CPU (smaps_rollup walks the page tables of every process in the tree), which the measured
    command then lacks on 2 cores: one sample per ``interval`` seconds keeps it to about 1 % of a core; timed
    training runs pass ``sample_pss=False`` and rely on GNU time's max RSS.
    """
    tfile = log.with_suffix(".time")
    full = ["/usr/bin/time", "-v", "-o", str(tfile)] + cmd if Path("/usr/bin/time").exists() else cmd
    log.parent.mkdir(parents=True, exist_ok=True)
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as lf:
        proc = subprocess.Popen(full, env=dict(env, PYTHONUNBUFFERED="1"), stdout=lf, stderr=subprocess.STDOUT,
                                start_new_session=True)
        peak = [0]
        first = [None]
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                if sample_pss:
                    peak[0] = max(peak[0], _tree_pss_kb(proc.pid))
                if first_marker and first[0] is None and first_marker in log.read_text(errors="replace"):
                    first[0] = time.perf_counter() - t0
                stop.wait(interval)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        killed = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        stop.set()
        th.join()
    wall = time.perf_counter() - t0
    max_rss = None
    if tfile.is_file():
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tfile.read_text())
        max_rss = int(m.group(1)) if m else None
    return {"cmd": " ".join(cmd), "wall_s": round(wall, 1), "rc": rc, "killed_at_budget": killed,
            "max_rss_gib": round(max_rss / 2**20, 2) if max_rss else None,
            "tree_peak_pss_gib": round(peak[0] / 2**20, 2) if sample_pss else None,
            "first_marker_s": first[0] and round(first[0], 1),
            "log": str(log)}


