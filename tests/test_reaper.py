"""The scoring job's watchdog: a kill -9 of the job stops the processes it started; a clean end stops nothing.

The Ray engine wraps ``ray.init()`` in :class:`ehrseq.scoring.reaper.Reaper`; here a plain child process stands in
for a Ray worker (Ray is an optional extra), which is what the watchdog sees of one: a descendant of the driver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ehrseq.scoring import reaper

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="the watchdog reads /proc (Linux)")

# The driver loads the module from its file: importing the ehrseq.scoring package would import torch (seconds).
DRIVER = textwrap.dedent("""
    import importlib.util, subprocess, sys, time
    spec = importlib.util.spec_from_file_location("reaper", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.Reaper().__enter__()
    worker = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time; "
                               "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
                               "print(g.pid, flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    grandchild = worker.stdout.readline().strip()
    print(worker.pid, grandchild, flush=True)
    if sys.argv[2] == "release":
        time.sleep(1.5)
        r.release()
        print("released", flush=True)
    time.sleep(120)
""")


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = reaper._stat(pid)
        if st is None or (Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0):
            return True
        time.sleep(0.1)
    return False


def _driver(mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    p = subprocess.Popen([sys.executable, "-c", DRIVER, reaper.__file__, mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    pids = [int(x) for x in p.stdout.readline().split()]
    return p, pids


def _cleanup(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_kill_9_of_the_driver_stops_its_workers_and_their_children() -> None:
    driver, pids = _driver("hold")
    try:
        time.sleep(1.5)  # the watchdog records descendants twice a second
        assert all(reaper._stat(pid) is not None for pid in pids)
        driver.kill()  # SIGKILL: no finally, no atexit, no ray.shutdown()
        driver.wait()
        assert all(_gone(pid, timeout=8) for pid in pids), "a worker outlived the killed driver"
    finally:
        _cleanup(pids)


def test_a_clean_release_signals_nothing() -> None:
    driver, pids = _driver("release")
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "released"
        driver.kill()
        driver.wait()
        time.sleep(1.5)
        assert all(reaper._stat(pid) is not None for pid in pids), "released watchdog still killed processes"
    finally:
        _cleanup(pids)


def test_descendants_follow_the_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = reaper.descendants(os.getpid())
        assert child.pid in found
        assert os.getpid() not in found
    finally:
        child.kill()
        child.wait()


def test_a_killed_ray_scoring_job_leaves_no_ray_process(tmp_path: Path) -> None:
    """With Ray installed (the ``ray`` extra): ``kill -9`` of ``ehrseq score --engine ray`` mid-job."""
    pytest.importorskip("ray", reason="the ray engine needs pip install 'ehrseq[ray]'")
    from ehrseq import api

    api.synthesize(120, out=tmp_path, extract=False)
    api.finetune(tmp_path / "meds", target="cdai", out=tmp_path / "art", preset="tiny",
                 train={"epochs": 1, "progress": False}, n_bootstrap=0)

    def ray_pids() -> set[int]:
        return {p for p in reaper.descendants(1) if _is_ray(p)}

    before = ray_pids()
    job = subprocess.Popen([sys.executable, "-c", "import sys; from ehrseq.cli import main; sys.exit(main())",
                            "score", "--artifact", str(tmp_path / "art"), "--data", str(tmp_path / "meds"),
                            "--out", str(tmp_path / "out"), "--engine", "ray", "--shard-rows", "200"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (set(reaper.descendants(job.pid)) & ray_pids()):
            time.sleep(0.5)
        time.sleep(3)
        started = set(reaper.descendants(job.pid)) & ray_pids()
        assert started, "the job started no Ray process to test with"
        job.kill()
        job.wait()
        assert all(_gone(p, timeout=15) for p in started), "Ray processes outlived the killed job"
        assert not (ray_pids() - before)
    finally:
        _cleanup(list(ray_pids() - before))


def _is_ray(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return any(m in cmd for m in ("ray::", "raylet", "gcs_server", "/ray/_private/", "/ray/dashboard/"))
