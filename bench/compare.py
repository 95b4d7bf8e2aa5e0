"""Side by side, under TCG: kernlab's cold boot and snapshot restore against virtme-ng, and
kernlab's readiter round trip against a hand-run QEMU + ssh baseline; N runs of each.

    python bench/compare.py --kernel BUILD_ID [--runs 5] [--skip-vng] [--skip-readiter]

Boot rows time "start to the output of `uname -r`": kernlab from `start_vm` (cold, or a
restore of the snapshot) through a fresh SSH connection to the command's output;
virtme-ng as `vng --run BZIMAGE --disable-kvm -- uname -r`, from its start until the
release is printed. virtme-ng is installed from PyPI into its own venv under
``<KERNLAB_CACHE>/bench/`` (not part of the repository); it needs 9p in the guest kernel,
which the lab configs leave out, so give it a build with bench/virtme.config:

    KERNLAB_WORK=DIR KERNLAB_LOCK=DIR/kernlab.lock \
        invoke build-kernel --version 6.1 --fragment bench/virtme.config --update-lock

(a copy of kernlab.lock, so the repository's stays as it is). The readiter rows: kernlab's
`run_experiment` with no VM running (a snapshot restore, the run, the stop) and with its VM
up, against the same steps typed by hand: QEMU booted cold on a qcow2 overlay, `ssh` polled
until it answers, the experiment kernlab built sent with `tar | ssh`, the loader and the
workload run and the trace read over `ssh`, QEMU stopped (and with that QEMU up: the ssh
part only). The table (median, min, max, ratio of medians) is printed and written to
bench/out/compare-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERNLAB_QUIET", "1")  # kernlab's progress lines; the rows are printed

from kernlab.core import paths  # noqa: E402
from kernlab.core.records import BuildRecord  # noqa: E402
from kernlab.experiments.run import run_experiment  # noqa: E402
from kernlab.experiments.suite import load_experiment  # noqa: E402
from kernlab.guest import qemu, remote  # noqa: E402
from kernlab.guest.ensure import ensure_vm  # noqa: E402
from kernlab.guest.image import build_image  # noqa: E402
from kernlab.guest.vm import CMDLINE, FAST_BOOT, find_vm, start_vm  # noqa: E402
from kernlab.kernel.selection import choose_kernel, find_build  # noqa: E402

VNG_VERSION = "1.42"
OUT = ROOT / "bench" / "out"
VM = "bench-compare"


# ---------------------------------------------------------------- virtme-ng
def vng_venv(log: Path) -> Path:
    """virtme-ng's own venv (made once): the directory holding its `vng`."""
    venv = paths.cache_dir() / "bench" / f"virtme-ng-{VNG_VERSION}"
    if not (venv / "bin" / "vng").is_file():
        with open(log, "a") as out:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], stdout=out, stderr=out, check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", f"virtme-ng=={VNG_VERSION}"],
                           stdout=out, stderr=out, check=True)
    return venv / "bin"


def time_vng(bin_dir: Path, bzimage: Path, release: str, log: Path) -> float:
    """Seconds from starting `vng --run` until it prints ``release``."""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    argv = [str(bin_dir / "vng"), "--run", str(bzimage), "--disable-kvm", "--cpus", "2",
            "--memory", "2G", "--", "uname", "-r"]
    with tempfile.TemporaryDirectory() as cwd, open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=out, stdin=subprocess.DEVNULL, text=True)
        seen = None
        for line in proc.stdout or []:
            out.write(line)
            if line.strip() == release and seen is None:
                seen = time.monotonic() - started
        proc.wait(timeout=300)
    if seen is None:
        raise SystemExit(f"vng never printed {release}; log: {log}")
    return seen


# ---------------------------------------------------------------- kernlab boots
def time_kernlab_boot(build: dict, image: dict, cold: bool) -> float:
    """Seconds from start_vm (cold, or a snapshot restore) to `uname -r`'s output."""
    stale = find_vm(VM)
    if stale:
        stale.stop()
    started = time.monotonic()
    vm = start_vm(build, image, VM, cold=cold, defer_settle=True)  # uname -r sets the clock
    try:
        out = remote.run(remote.connect(vm), "uname -r", timeout=60).stdout.strip()
        took = time.monotonic() - started
        assert out == build["kernelrelease"], out
        assert vm.record["boot"] == ("cold" if cold else "snapshot"), vm.record["boot"]
        return took
    finally:
        vm.stop()


# ---------------------------------------------------------------- readiter
def time_readiter(build_id: str, keep_vm: bool, scratch: Path) -> float:
    started = time.monotonic()
    readiter(build_id, keep_vm, scratch)
    return time.monotonic() - started


def readiter(build_id: str, keep_vm: bool, scratch: Path) -> Path:
    """One kernlab readiter run (it must pass); its bundle."""
    bundle = run_experiment(load_experiment("readiter"), choose_kernel(build_id), keep_vm=keep_vm,
                            vm_name=VM, root=scratch)
    assert bundle.status == "PASS", bundle.dir
    return bundle.dir


class HandVm:
    """The baseline: QEMU and OpenSSH as a researcher would type them."""

    def __init__(self, build: dict, image: dict, work: Path) -> None:
        self.kernel = BuildRecord.from_json(build).bzimage
        self.image = image
        self.work = work
        self.port = qemu.free_port()
        self.proc: subprocess.Popen | None = None
        (work / "known_hosts").write_text(
            remote.known_hosts_line("127.0.0.1", self.port, image["host_key_pub"]))

    def ssh(self, command: str, stdin: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        argv = ["ssh", "-p", str(self.port), "-i", self.image["client_key"], "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.work / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
                "root@127.0.0.1", command]
        return subprocess.run(argv, input=stdin, capture_output=True, check=check, timeout=120)

    def boot(self) -> None:
        overlay = self.work / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        self.image["image"]["path"], str(overlay)], check=True)
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg,thread=multi", "-cpu", "max",
             "-smp", "2", "-m", "2G", "-nodefaults", "-display", "none", "-no-reboot",
             "-kernel", str(self.kernel), "-append", f"{CMDLINE} {FAST_BOOT}",
             "-drive", f"file={overlay},if=virtio,format=qcow2",
             "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
             "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci",
             "-serial", f"file:{self.work / 'console.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while self.ssh("true", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"hand-run QEMU never answered over ssh; {self.work / 'console.log'}")
            time.sleep(0.2)

    def readiter(self, built: Path) -> None:
        tar = subprocess.run(["tar", "cf", "-", "-C", str(built), "."], capture_output=True,
                             check=True).stdout
        self.ssh("rm -rf /root/r && mkdir -p /root/r && tar xf - -C /root/r", stdin=tar)
        out = self.ssh("cd /root/r && : > /sys/kernel/tracing/trace && "
                       "(./klload readiter.bpf.o > load.log 2>&1 &) && "
                       "until grep -q 'klload: ready' load.log; do sleep 0.05; done; "
                       "./readiter data.txt; pkill -INT klload; cat /sys/kernel/tracing/trace").stdout
        assert b"data=KERNLAB-READITER-CONTENT" in out, out[-2000:]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


def readiter_build(build_id: str, scratch: Path) -> Path:
    """The readiter kernlab built for this kernel (a run names it in its build log)."""
    for _ in range(2):  # the first run may build it; the next one names the cached build
        log = (readiter(build_id, False, scratch) / "logs" / "build.log").read_text()
        for line in log.splitlines():
            if line.startswith("# cached build reused: "):
                return Path(line.split(": ", 1)[1])
    raise SystemExit("no cached readiter build found in the bundles' build logs")


def time_hand(build: dict, image: dict, built: Path, work: Path, boot: bool, hand: HandVm | None) -> float:
    started = time.monotonic()
    vm = hand or HandVm(build, image, work)
    if boot:
        vm.boot()
    vm.readiter(built)
    if boot:
        vm.stop()
    return time.monotonic() - started


# ---------------------------------------------------------------- the table
def sample(what: str, runs: int, once: Callable[[], float]) -> dict:
    values = []
    for i in range(runs):
        values.append(once())
        print(f"  {what} run {i + 1}: {values[-1]:.2f} s", flush=True)
    return {"what": what, "runs": [round(v, 3) for v in values],
            "median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def table(rows: list[dict], pairs: list[tuple[str, str]]) -> str:
    """A markdown table of the rows, with each row's median over its reference's."""
    by = {r["what"]: r for r in rows}
    ref = dict(pairs)
    lines = ["| what | median s | min s | max s | ratio |", "|---|---|---|---|---|"]
    for row in rows:
        base = by.get(ref.get(row["what"], ""))
        ratio = f"{row['median'] / base['median']:.2f}x {base['what']}" if base else ""
        lines.append(f"| {row['what']} | {row['median']:.2f} | {row['min']:.2f} | "
                     f"{row['max']:.2f} | {ratio} |")
    return "\n".join(lines)


def boot_rows(build: dict, image: dict, runs: int, skip_vng: bool, log: Path) -> list[dict]:
    rows = []
    if not skip_vng:
        bin_dir = vng_venv(log)
        bzimage, release = BuildRecord.from_json(build).bzimage, build["kernelrelease"]
        rows.append(sample("virtme-ng `vng --run` to uname -r", runs,
                           lambda: time_vng(bin_dir, bzimage, release, log)))
    rows.append(sample("kernlab cold boot to uname -r", runs,
                       lambda: time_kernlab_boot(build, image, cold=True)))
    time_kernlab_boot(build, image, cold=False)  # makes the snapshot if there is none
    rows.append(sample("kernlab snapshot restore to uname -r", runs,
                       lambda: time_kernlab_boot(build, image, cold=False)))
    return rows


def readiter_rows(build: dict, image: dict, runs: int, scratch: Path) -> list[dict]:
    build_id = f"{build['version']}-{build['key'][:12]}"
    built = readiter_build(build_id, scratch)  # builds readiter once (cached after)
    rows = [sample("kernlab readiter, no VM running (snapshot restore)", runs,
                   lambda: time_readiter(build_id, False, scratch))]
    ensure_vm(build, image, VM)
    try:
        rows.append(sample("kernlab readiter, VM up", runs, lambda: time_readiter(build_id, True, scratch)))
    finally:
        find_vm(VM).stop()
    rows.append(sample("hand QEMU + ssh readiter, cold boot", runs,
                       lambda: time_hand(build, image, built, scratch, True, None)))
    hand = HandVm(build, image, scratch)
    hand.boot()
    try:
        rows.append(sample("hand QEMU + ssh readiter, VM up", runs,
                           lambda: time_hand(build, image, built, scratch, False, hand)))
    finally:
        hand.stop()
    return rows


PAIRS = [("kernlab cold boot to uname -r", "virtme-ng `vng --run` to uname -r"),
         ("kernlab snapshot restore to uname -r", "virtme-ng `vng --run` to uname -r"),
         ("kernlab readiter, no VM running (snapshot restore)", "hand QEMU + ssh readiter, cold boot"),
         ("kernlab readiter, VM up", "hand QEMU + ssh readiter, VM up")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1", help="a version or build id (one with 9p for vng)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-vng", action="store_true")
    parser.add_argument("--skip-readiter", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = OUT / f"compare-{stamp}.log"
    build, image = find_build(args.kernel), build_image()
    facts = {"kernel": f"{build['version']}-{build['key'][:12]}", "release": build["kernelrelease"],
             "runs": args.runs, "qemu": qemu.qemu_version(), "vng": VNG_VERSION,
             "host_cpus": os.cpu_count(), "load_before": os.getloadavg()}
    rows = boot_rows(build, image, args.runs, args.skip_vng, log)
    if not args.skip_readiter:
        with tempfile.TemporaryDirectory(prefix="kernlab-compare-") as scratch:
            rows += readiter_rows(build, image, args.runs, Path(scratch))
    facts["load_after"] = os.getloadavg()
    text = (f"{facts['kernel']} ({facts['release']}), TCG, {args.runs} runs each, {facts['qemu']}, "
            f"virtme-ng {VNG_VERSION}; load {facts['load_before'][0]:.1f} before, "
            f"{facts['load_after'][0]:.1f} after\n\n{table(rows, PAIRS)}\n")
    (OUT / f"compare-{stamp}.json").write_text(json.dumps({**facts, "rows": rows}, indent=2) + "\n")
    (OUT / f"compare-{stamp}.md").write_text(text)
    print(text)
    print(f"figures: {OUT / f'compare-{stamp}.json'}; log: {log}")
    shutil.rmtree(OUT / "tmp", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
