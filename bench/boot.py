"""Lab VM figures: boot-to-SSH-ready (median of N), image build cold and cached, idle memory.

    python bench/boot.py [--kernel 6.1] [--runs 5] [--cold]

``--cold`` also builds the image from nothing (new state and .deb cache in a temp dir,
so every package is downloaded again). Figures are printed and written to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernlab.guest import image, remote  # noqa: E402
from kernlab.guest.vm import find_vm, start_vm  # noqa: E402
from kernlab.kernel.selection import find_build  # noqa: E402


def image_cold(recipe: str) -> float:
    """Seconds to build the image with an empty state dir and an empty .deb cache."""
    (ROOT / "bench/out").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cold-image-", dir=ROOT / "bench/out") as tmp:
        os.environ["KERNLAB_STATE"] = f"{tmp}/state"
        os.environ["KERNLAB_CACHE"] = f"{tmp}/cache"
        try:
            started = time.monotonic()
            image.build_image(recipe)
            return time.monotonic() - started
        finally:
            del os.environ["KERNLAB_STATE"], os.environ["KERNLAB_CACHE"]


def image_cached(recipe: str) -> tuple[dict, float]:
    image.build_image(recipe)  # builds once if needed; the timed call is the cached one
    started = time.monotonic()
    record = image.build_image(recipe)
    return record, time.monotonic() - started


def boot_once(build: dict, img: dict, name: str) -> dict:
    """Boot, wait for SSH, measure, stop. Returns the VM's timing figures."""
    stale = find_vm(name)
    if stale:
        stale.stop()
    vm = start_vm(build, img, name)
    try:
        return {k: vm.info.data.get(k) for k in
                ("ready_seconds", "console_ready_seconds", "guest_uptime_at_ready")}
    finally:
        vm.stop()


def idle_memory(build: dict, img: dict, name: str, settle: float = 10.0) -> dict:
    """Guest memory in use (MemTotal - MemAvailable) and QEMU's RSS, after ``settle`` s idle."""
    vm = start_vm(build, img, name)
    try:
        time.sleep(settle)
        meminfo = remote.run(remote.connect(vm), "cat /proc/meminfo", timeout=60).stdout
        fields = {line.split(":")[0]: int(line.split()[1]) for line in meminfo.splitlines()}
        status = Path(f"/proc/{vm.pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:"))
        return {"guest_used_mib": round((fields["MemTotal"] - fields["MemAvailable"]) / 1024),
                "guest_total_mib": round(fields["MemTotal"] / 1024),
                "qemu_rss_mib": round(rss / 1024)}
    finally:
        vm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--recipe", default="bookworm")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also time a cold image build")
    args = parser.parse_args()

    figures: dict = {"kernel": args.kernel, "recipe": args.recipe, "runs": args.runs,
                     "host_cpus": os.cpu_count(), "load_before": os.getloadavg()}
    if args.cold:
        figures["image_cold_seconds"] = round(image_cold(args.recipe), 1)
    img, cached = image_cached(args.recipe)
    figures["image_cached_seconds"] = round(cached, 3)
    build = find_build(args.kernel)
    boots = [boot_once(build, img, "bench") for _ in range(args.runs)]
    figures["boots"] = boots
    for key in ("ready_seconds", "console_ready_seconds", "guest_uptime_at_ready"):
        values = [b[key] for b in boots if b[key] is not None]
        figures[f"median_{key}"] = round(statistics.median(values), 2) if values else None
    figures["memory"] = idle_memory(build, img, "bench")
    figures["load_after"] = os.getloadavg()

    out = ROOT / "bench/out"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"boot-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"boot to SSH ready (median of {args.runs}): {figures['median_ready_seconds']} s "
          f"(console READY {figures['median_console_ready_seconds']} s, guest uptime "
          f"{figures['median_guest_uptime_at_ready']} s)")
    if "image_cold_seconds" in figures:
        print(f"image build cold: {figures['image_cold_seconds']} s")
    print(f"image build cached: {figures['image_cached_seconds']} s")
    mem = figures["memory"]
    print(f"idle memory: guest uses {mem['guest_used_mib']} MiB of {mem['guest_total_mib']} MiB;"
          f" QEMU RSS {mem['qemu_rss_mib']} MiB")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
