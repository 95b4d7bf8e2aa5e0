"""Real guests: bpftrace and bcc compile against the kernel headers kernlab mounts.

4.15 has neither BTF nor CONFIG_IKHEADERS, so without the headers disk bpftrace cannot
name a kernel type and bcc cannot compile at all. Each kernel boots on the real image
under TCG. A kernel that is not built is skipped here (saying how to build it); CI
(``CI`` set) builds those of guests.CI_BUILDS: 4.15 and 5.4.286 from KERNLAB_LOCAL_KERNELS
(.ci/run sets it).

bcc compiling against the headers disk is the suite's bcc-opensnoop experiment, which
tests/test_thesis_kernels.py runs on 4.15, 5.4.286 and 6.1 (a PASS cell each): CI pays
for bcc's minute of compiling under TCG there, once per kernel, not here again.
"""

from __future__ import annotations

import re

import pytest
from guests import ci_build

from kernlab.guest import remote
from kernlab.kernel import kheaders

pytestmark = pytest.mark.slow
KERNELS = ("4.15", "5.4.286", "5.10", "6.1")

# A kprobe that casts its argument to a kernel struct: without BTF only the headers
# define it (#include makes clang parse them on every kernel, BTF or not).
BPFTRACE_SCRIPT = r"""#include <linux/fs.h>
BEGIN { printf("READY\n"); }
kprobe:vfs_read /comm == "cat"/ {
  $f = (struct file *)arg0;
  printf("HDR %s mode=0x%x flags=0x%x\n", comm, $f->f_mode, $f->f_flags);
  exit();
}
"""

# Run TOOL in the background, keep reading a file with cat until WANT shows up (or the
# tool exits or 280 s pass), stop the tool and print what it wrote. SIGTERM: a background
# job of a non-interactive shell ignores SIGINT (python's KeyboardInterrupt never comes).
WATCH = r"""out=$(mktemp); PYTHONUNBUFFERED=1 timeout 300 {tool} >"$out" 2>&1 & pid=$!
for i in $(seq 1 280); do
  grep -qE '{want}' "$out" && break
  kill -0 $pid 2>/dev/null || break
  cat /etc/hostname >/dev/null; sleep 1
done
kill $pid 2>/dev/null; wait $pid; echo "waited=$i"; cat "$out"
"""


@pytest.fixture(scope="module", params=KERNELS)
def guest(request, lab_image: dict, vm_name):
    """(build, VM) for one kernel, booted with its headers disk; stopped afterwards."""
    from kernlab.guest.vm import start_vm

    build = ci_build(request.param)
    vm = start_vm(build, lab_image, vm_name(f"hdr-{request.param.replace('.', '')}"))
    yield build, vm
    vm.stop()


def _watch(vm, tool: str, want: str, timeout: float = 420) -> str:
    script = WATCH.replace("{tool}", tool).replace("{want}", want)
    return remote.run(remote.connect(vm), script, timeout=timeout).stdout


def test_headers_of_this_build_are_mounted_read_only(guest) -> None:
    build, vm = guest
    record = kheaders.find_headers(build)
    assert record is not None and vm.info.kheaders["sha256"] == record["image"]["sha256"]
    out = remote.run(remote.connect(vm), "d=/lib/modules/$(uname -r)/build; "
                     "findmnt -no SOURCE,OPTIONS $d; cat $d/include/config/kernel.release; "
                     "sha256sum < $d/.config; touch $d/x 2>&1 || true", timeout=60).stdout
    lines = out.splitlines()
    assert lines[0].startswith("/dev/vdb ro,"), out
    assert lines[1] == build.kernelrelease
    assert lines[2].split()[0] == build.config_sha256  # the kernel kernlab built
    assert "Read-only file system" in lines[3]


def test_bpftrace_names_a_kernel_type_from_the_headers(guest) -> None:
    _build, vm = guest
    remote.run(remote.connect(vm), "cat > /tmp/hdr.bt <<'EOF'\n" + BPFTRACE_SCRIPT + "EOF",
               timeout=30)
    out = _watch(vm, "bpftrace -B line /tmp/hdr.bt", "^HDR |ERROR")
    assert re.search(r"^HDR cat mode=0x[0-9a-f]+ flags=0x[0-9a-f]+$", out, re.M), out
    assert "unknown type name" not in out and "ERROR" not in out
