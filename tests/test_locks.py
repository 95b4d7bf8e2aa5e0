"""One lock per build key and per download, and what Ctrl-C and kill -9 leave behind.

The real CLI (`invoke build-kernel`) in subprocesses, on a fake kernel tree whose make
takes a few seconds (tests/fakekernel.py), its tarball local or served by a throttled
HTTP mirror on 127.0.0.1 (tests/httpmirror.py). Real signals: SIGINT as a Ctrl-C in the
terminal sends it, SIGKILL as `kill -9`. Every case checks the one-line output, that no
process of the first run is left, and that the next run neither waits nor trips.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakekernel
import pytest
from httpmirror import Mirror
from interrupts import sigint_default

ROOT = Path(__file__).resolve().parent.parent
RATE = 200_000  # bytes a second from the slow mirror: a 1 MB tarball takes about 5 s
PADDING = 1_000_000


@dataclass
class Area:
    """One test's kernlab areas and environment, the fake tarball and (maybe) its mirror."""

    tmp: Path
    env: dict[str, str]
    mirror: Mirror | None = None

    def start(self, *args: str, name: str = "run") -> subprocess.Popen:
        """`invoke build-kernel --version 9.9 ARGS` in the background; output in NAME.out/.err."""
        return subprocess.Popen(
            [sys.executable, "-m", "invoke", "-r", str(ROOT), "build-kernel", "--version", "9.9", *args],
            cwd=self.tmp, env=self.env, stdout=open(self.tmp / f"{name}.out", "w"),
            stderr=open(self.tmp / f"{name}.err", "w"), preexec_fn=sigint_default)

    def finish(self, proc: subprocess.Popen, name: str = "run", timeout: float = 60) -> tuple[int, str]:
        """Exit status and stderr of a run started with ``start``."""
        code = proc.wait(timeout=timeout)
        return code, (self.tmp / f"{name}.err").read_text()

    def work(self) -> Path:
        return Path(self.env["KERNLAB_WORK"])

    def downloads(self) -> Path:
        return Path(self.env["KERNLAB_CACHE"]) / "downloads"

    def make_starts(self) -> list[str]:
        """The "fake make ... starts bzImage" lines of every make.log: one per make that ran."""
        return [line for log in self.work().glob("build/*/logs/make.log")
                for line in log.read_text().splitlines() if line.startswith("fake make pid")]

    def bzimage(self) -> Path:
        (found,) = self.work().glob("build/9.9-*/obj/arch/x86/boot/bzImage")
        return found

    def get_requests(self) -> list[dict]:
        assert self.mirror is not None
        return [r for r in self.mirror.state.requests if r["path"].endswith(".tar.gz")]


AREAS = {"file": "build", "mirror": "download"}  # the area fixture's params: what is slow in each


@pytest.fixture(params=list(AREAS))
def area(request, tmp_path: Path) -> Iterator[Area]:
    """A fake kernel 9.9 from a local tarball ("file") or a slow loopback mirror ("mirror")."""
    env = fakekernel.environ(tmp_path, FAKE_MAKE_SECONDS="4")
    if request.param == "file":
        sha = fakekernel.tarball(tmp_path / "linux-9.9.tar.gz")
        fakekernel.catalog(tmp_path / "configs", {"file": {"path": str(tmp_path / "linux-9.9.tar.gz"),
                                                           "sha256": sha}})
        yield Area(tmp_path, env)
        return
    (tmp_path / "mirror" / "v9.x").mkdir(parents=True)
    sha = fakekernel.tarball(tmp_path / "mirror" / "v9.x" / "linux-9.9.tar.gz", padding=PADDING)
    fakekernel.catalog(tmp_path / "configs", {"tarball": {"url": "{mirror}/v9.x/linux-9.9.tar.gz",
                                                          "sha256": sha}})
    with Mirror(tmp_path / "mirror") as mirror:
        mirror.state.bytes_per_second = RATE
        env["KERNLAB_MIRROR"] = mirror.url
        env["FAKE_MAKE_SECONDS"] = "0"  # the download is the slow part
        yield Area(tmp_path, env, mirror)


def wait_for(what: str, check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def busy(area: Area) -> bool:
    """The first run is in its slow part: downloading (a .part has bytes) or in make."""
    if area.mirror is not None:
        return any(p.stat().st_size > 0 for p in area.downloads().glob("*.part"))
    return bool(area.make_starts())


def pids_of(area: Area) -> list[int]:
    """Processes still running in this test's areas (make, sleep, kernlab): none may be left."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if f"KERNLAB_WORK={area.work()}".encode() in environ:
                found.append(int(proc.name))
    return found


# ---------------------------------------------------------------- two at once
def test_a_second_build_or_download_waits_naming_the_first(area: Area) -> None:
    first = area.start(name="first")
    wait_for("the first run's slow part", lambda: busy(area))
    second = area.start(name="second")
    code1, err1 = area.finish(first, "first")
    code2, err2 = area.finish(second, "second")
    assert (code1, code2) == (0, 0), err1 + err2
    what = "download of linux-9.9.tar.gz" if area.mirror else "build 9.9-"
    waiting = [line for line in err2.splitlines() if f"{what}" in line and "is in progress in pid" in line]
    assert len(waiting) == 1, err2
    assert f"pid {first.pid} (invoke -r {ROOT} build-kernel --version 9.9, since " in waiting[0]
    assert "waiting for it (Ctrl-C stops waiting)" in waiting[0]
    assert "Traceback" not in err1 + err2
    assert len(area.make_starts()) == 1  # one make, the other run used its build
    # after a shared download either may reach the build lock first
    assert "9.9 is up to date" in (err1 + err2 if area.mirror else err2)
    if area.mirror:
        assert len(area.get_requests()) == 1  # one download, no shared .part
        assert "downloaded meanwhile" in err2
        assert not list(area.downloads().glob("*.part"))
    assert not pids_of(area)
    assert no_locks_left(area)


# ---------------------------------------------------------------- signals, then the next run
@dataclass
class Stop:
    id: str
    sig: int
    code: int  # the stopped run's exit status
    line: str  # its last stderr line ("" for kill -9: it prints nothing)


STOPS = [Stop("ctrl-c", signal.SIGINT, 130, "kernlab: interrupted"),
         Stop("kill-9", signal.SIGKILL, -signal.SIGKILL, "")]


@pytest.mark.parametrize("stop", STOPS, ids=[s.id for s in STOPS])
def test_a_stopped_run_leaves_nothing_the_next_run_trips_on(area: Area, stop: Stop) -> None:
    first = area.start(name="first")
    wait_for("the first run's slow part", lambda: busy(area))
    stopped_at = time.monotonic()
    first.send_signal(stop.sig)
    code, err = area.finish(first, "first", timeout=10)
    took = time.monotonic() - stopped_at
    assert code == stop.code, err
    assert took < 5, f"took {took:.1f}s to stop"
    assert "Traceback" not in err
    if stop.line:
        assert err.strip().splitlines()[-1] == stop.line, err
    wait_for("no process of the stopped run", lambda: not pids_of(area), timeout=10)
    if area.mirror:  # the partial download is kept to be resumed, not shared
        kept = [p.name for p in area.downloads().glob("*.part")]
        assert kept == [f"{served_sha(area)}-linux-9.9.tar.gz.part"]

    started = time.monotonic()
    code, err = area.finish(area.start(name="next"), "next")
    assert code == 0, err
    assert "is in progress in" not in err  # the lock died with its holder
    assert area.bzimage().read_text().startswith("fake bzImage")
    assert not list(area.downloads().glob("*.part"))
    assert not list((area.work() / "src").glob(".*.tmp-*"))  # no staging left
    if area.mirror:
        assert area.get_requests()[-1]["range"], "the next run resumes the .part"
    assert time.monotonic() - started < 30
    assert no_locks_left(area)  # the killed run's lock file was taken over, then removed


def no_locks_left(area: Area) -> bool:
    return not (area.work() / "locks").exists() and not (Path(area.env["KERNLAB_CACHE"]) / "locks").exists()


def served_sha(area: Area) -> str:
    import hashlib

    return hashlib.sha256((area.tmp / "mirror" / "v9.x" / "linux-9.9.tar.gz").read_bytes()).hexdigest()


# ---------------------------------------------------------------- the lock itself
def test_a_refused_lock_names_its_holder_and_a_killed_holder_frees_it(tmp_path: Path) -> None:
    from kernlab.core import filelock
    from kernlab.core.errors import KernlabError

    path = tmp_path / "locks" / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from kernlab.core import filelock\n"
         f"with filelock.exclusive(Path({str(path)!r}), 'the thing'):\n"
         "    print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(KernlabError) as refused, filelock.exclusive(path, "the thing", wait=False,
                                                                    fix="try later"):
        pass
    assert refused.value.one_line().startswith(f"the thing is in progress in pid {holder.pid} (")
    assert refused.value.one_line().endswith("; try later")
    holder.kill()
    holder.wait()
    started = time.monotonic()
    with filelock.exclusive(path, "the thing", wait=False):
        assert time.monotonic() - started < 1
        assert f'"pid": {os.getpid()}' in path.read_text()
    assert not path.parent.exists()  # released: the file and its empty directory are gone


# what the tests above cover, for tests/test_bad_input.py's count by kind
FAULTS = ([("lock", f"second-{what}-waits") for what in AREAS.values()]
          + [("signal", f"{stop.id}-mid-{what}") for stop in STOPS for what in AREAS.values()]
          + [("lock", "refused-then-holder-killed")])
