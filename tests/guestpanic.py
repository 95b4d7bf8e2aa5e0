"""Make a lab guest's kernel panic, for the fault tests (its text runs inside the guest).

The lab kernels have no CONFIG_MAGIC_SYSRQ (`echo c > /proc/sysrq-trigger` is out) and
init (PID 1) ignores every signal sent from inside the guest. So this script, run as
root in the guest, attaches to PID 1 with ptrace and turns its next system call into
exit_group(0): init exits and the kernel panics with "Attempted to kill init!". The lab
command line (panic=-1) and QEMU's -no-reboot then end QEMU.
"""

from __future__ import annotations

import base64

SCRIPT = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
ATTACH, SYSCALL, GETREGS, SETREGS, DETACH = 16, 24, 12, 13, 17
RAX, RDI, ORIG_RAX = 10, 14, 15  # struct user_regs_struct, x86_64
ENOSYS = 2 ** 64 - 38  # rax at a system call's entry stop
regs = (ctypes.c_ulonglong * 27)()

def call(request, data=None):
    if libc.ptrace(request, 1, None, data) < 0:
        sys.exit(f"ptrace {request}: errno {ctypes.get_errno()}")

print("panicking the guest now", flush=True)
call(ATTACH)
os.waitpid(1, 0x40000000)
while True:
    call(SYSCALL)
    os.waitpid(1, 0x40000000)
    call(GETREGS, ctypes.byref(regs))
    if regs[RAX] == ENOSYS:
        regs[ORIG_RAX], regs[RDI] = 231, 0  # exit_group(0)
        call(SETREGS, ctypes.byref(regs))
        call(DETACH)
        break
'''


def shell_command() -> str:
    """A guest shell command that writes the script to /tmp and runs it."""
    encoded = base64.b64encode(SCRIPT.encode()).decode()
    return f"echo {encoded} | base64 -d > /tmp/kernlab-panic.py && python3 /tmp/kernlab-panic.py"
