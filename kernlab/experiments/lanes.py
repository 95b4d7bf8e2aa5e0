"""A suite's experiments in parallel lanes: one VM per lane, all restored from the same snapshot.

Under TCG most of an experiment's seconds are its guest waiting (a sampling period, bcc
compiling, SSH round trips), not the host's two cores: two restored guests side by side
finish one kernel's suite in about the time of its longest lane instead of the sum of its
experiments. Lane 1 is the suite's own VM (``--vm-name``, a VM of the user's used as it
is); lanes 2.. are VMs the suite starts as ``<vm-name>-l2``... once lane 1's VM is up (so a
first cold boot saves the snapshot the others restore) and always stops at its end.

Experiments are handed out longest first, by the seconds of each one's last bundle on this
kernel, else on another (one never run counts as long), each to whichever lane is free. Ctrl-C stops every
lane's running experiment the way it stops one run (each saves what it collected):
``kernlab.core.interrupt.stop_threads``.

``lane_count`` takes ``--lanes``, else ``KERNLAB_LANES``, else ``default_lanes``: one more
than the host's cores, at most 4 and at most what its free memory holds (on this 2-core
machine: 3 lanes, bench/suite_lanes.py); never more than there are experiments to run.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kernlab.core import interrupt
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter

MAX_DEFAULT_LANES = 4
GIB_PER_LANE = 2.5  # a lab guest's 2 GiB and its QEMU
UNKNOWN_SECONDS = 60.0  # an experiment never run here goes out first: it may be the long one
JOIN_TIMEOUT = 30.0  # after Ctrl-C: each lane's own stop is bounded well within this
Item = TypeVar("Item")
Lane = TypeVar("Lane")


def lane_count(asked: int | str | None, runnable: int) -> int:
    """How many lanes: ``asked`` (``--lanes``), else KERNLAB_LANES, else the default; at most
    one per experiment to run. A value that is not a whole number from 1 is a one-line error."""
    where = "--lanes"
    if asked in (None, ""):
        asked, where = os.environ.get("KERNLAB_LANES") or default_lanes(), "KERNLAB_LANES"
    try:
        count = int(asked)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise KernlabError(f"{where}={asked!r} is not a number of lanes",
                           f"give a whole number from 1 (1: one VM, one experiment at a time), "
                           f"e.g. {where}=2")
    return max(1, min(count, runnable))


def default_lanes() -> int:
    """One lane more than the host's cores (a lane's guest mostly waits under TCG), at most
    MAX_DEFAULT_LANES and at most one per GIB_PER_LANE of available memory; at least one."""
    by_memory = int(available_gib() / GIB_PER_LANE)
    return max(1, min((os.cpu_count() or 1) + 1, MAX_DEFAULT_LANES, by_memory))


def available_gib(meminfo: Path = Path("/proc/meminfo")) -> float:
    """MemAvailable in GiB (a large number where /proc/meminfo cannot be read)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / (1 << 20)
    except (OSError, ValueError, IndexError):
        pass
    return float(GIB_PER_LANE * MAX_DEFAULT_LANES)


def last_seconds(results: Path, name: str, kernel: str) -> float:
    """The seconds of the newest bundle of ``name`` on ``kernel`` under ``results`` (its
    folders are UTC timestamps); with none there, of its newest bundle on another kernel (an
    experiment takes about as long on each: a first run on a new kernel still sends the long
    ones out first); UNKNOWN_SECONDS when no bundle that ran says. n/a bundles do not count."""
    def here() -> list[Path]:
        return sorted((results / name / kernel).glob("*/result.json"), reverse=True)

    def elsewhere() -> list[Path]:  # read only when this kernel has none
        return sorted((results / name).glob("*/*/result.json"), key=lambda p: p.parent.name, reverse=True)

    for runs in (here, elsewhere):
        for result in runs()[:3]:
            seconds = _ran_seconds(result)
            if seconds is not None:
                return seconds
    return UNKNOWN_SECONDS


def _ran_seconds(result: Path) -> float | None:
    """A bundle's seconds, or None when it cannot be read or did not run (n/a)."""
    try:
        data = json.loads(result.read_text())
        return None if data.get("status") == "n/a" else float(data["seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def longest_first(items: Sequence[Item], seconds: Callable[[Item], float]) -> list[Item]:
    """``items`` by expected seconds, longest first; ties keep their order."""
    return sorted(items, key=seconds, reverse=True)


def run_lanes(items: Sequence[Item], lanes: Sequence[Lane],
              run_one: Callable[[Item, Lane], Any]) -> list[Any]:
    """``run_one(item, lane)`` for every item, each lane taking the next item when it is free;
    lane 0 runs in this thread, the others in their own. Results in ``items``' order.

    A KeyboardInterrupt here stops the other lanes (their running item is stopped and kept,
    as Ctrl-C does) before it goes on; an exception in another lane is raised here after
    every lane has stopped.
    """
    interrupt.clear_stop()  # a matrix's next kernel: the last kernel's failed lane is no reason to stop
    queue = deque(enumerate(items))
    lock = threading.Lock()
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def work(lane: Lane) -> None:
        while not errors and not interrupt.stopping():
            with lock:
                if not queue:
                    return
                index, item = queue.popleft()
            results[index] = run_one(item, lane)

    threads = [_thread(work, lane, errors, f"lane {n}") for n, lane in enumerate(lanes[1:], 2)]
    try:
        for thread in threads:
            thread.start()
        work(lanes[0])
        for thread in threads:  # the other lanes finish their running items (each has its timeouts)
            while thread.is_alive():
                thread.join(1.0)  # short waits: a Ctrl-C meanwhile still stops every lane
    except BaseException as error:
        errors.append(error)
        interrupt.stop_threads()
        raise
    finally:
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
    if errors:
        raise errors[0]
    if len(results) < len(items):  # the lanes were told to stop and took no more work
        raise interrupt.Interrupted()
    return [results[i] for i in range(len(items))]


def _thread(work: Callable[[Any], None], lane: Any, errors: list[BaseException],
            tag: str) -> threading.Thread:
    """A lane's thread: progress lines tagged with the lane at the caller's depth; its error
    kept for the caller (and the other lanes stop taking work)."""
    depth = reporter().depth

    def body() -> None:
        with reporter().tagged(tag, depth):
            try:
                work(lane)
            except BaseException as error:  # raised again in the caller's thread
                errors.append(error)
                interrupt.stop_threads()

    return threading.Thread(target=body, name=f"kernlab-{tag.replace(' ', '')}", daemon=True)
