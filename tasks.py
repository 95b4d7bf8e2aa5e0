"""kernlab command line: `invoke --list`. Each task parses flags and calls kernlab.

Tasks import kernlab inside their bodies for start-up speed only: `invoke --list` takes
0.09 s this way, about 1.0 s with every module imported at the top (measured on this machine).
"""

from __future__ import annotations

import os
import sys

from invoke import Collection, Exit

from kernlab.core.cli import NameOrAllTask, friendly, names, one_line_parse_errors, print_json, task
from kernlab.core.errors import KernlabError
from kernlab.core.validate import not_empty, number

one_line_parse_errors()


REGISTRY_HELP = ("OCI registry HOST[:PORT]/NAMESPACE to pull kernel builds, headers disks and images "
                 "from by key before building them (default: KERNLAB_REGISTRY; plain HTTP only on "
                 "loopback or with KERNLAB_REGISTRY_INSECURE=1).")


def _use_registry(value) -> None:
    """--registry: checked, then used as KERNLAB_REGISTRY by everything this command does."""
    if value is None:
        return
    from kernlab.core import oci

    oci.parse_address(not_empty("registry", value))
    os.environ[oci.REGISTRY_ENV] = value


# ---------------------------------------------------------------- host setup
@task(help={"dry_run": "Only print the packages that would be installed."})
@friendly
def setup(c, dry_run=False):
    """Install the host packages kernlab needs (idempotent; says what it installs)."""
    from kernlab.core.hostdeps import setup_host

    setup_host(dry_run=dry_run)


@task(help={"fast": "Skip the slow end-to-end tests (real kernel builds and QEMU boots).",
            "k": "Only tests matching this pytest -k expression.",
            "junit": "Where to write JUnit XML (default results/junit.xml)."})
@friendly
def test(c, fast=False, k="", junit="results/junit.xml"):
    """Lint, then run the test suite (slow end-to-end tests included unless --fast)."""
    import shlex
    from pathlib import Path

    from kernlab.compare.matrix import junit_counts
    from kernlab.core.hostdeps import TEST_PACKAGES, missing_packages, setup_host

    if not junit.strip() or Path(junit).is_dir():
        raise KernlabError(f"--junit {junit!r} is not a file name", "give --junit PATH/junit.xml")
    if os.geteuid() == 0 and missing_packages(TEST_PACKAGES):
        setup_host(extra=TEST_PACKAGES)  # sshd (--hosts), shellcheck (actionlint), Slurm (--slurm)
    python = sys.executable  # the interpreter running invoke: kernlab's venv under ./kl
    c.run(f"{python} -m ruff check kernlab tasks.py tests bench", pty=False)
    marker = '-m "not slow"' if fast else ""
    select = f"-k {shlex.quote(k)}" if k else ""
    Path(junit).unlink(missing_ok=True)  # a stale file must not count as this run's
    result = c.run(f"{python} -m pytest {marker} {select} --junitxml={shlex.quote(junit)} -v "
                   "--durations=15", pty=False, warn=True)
    ran = junit_counts(Path(junit))["tests"] if Path(junit).is_file() else 0
    if result.exited == 5 or ran == 0:  # pytest's "no tests collected"
        raise KernlabError("no test ran" + (f" (none matches -k {k!r})" if k else ""),
                           "check the -k expression; `invoke test --fast` runs the fast suite")
    if result.exited:
        raise Exit(f"kernlab: error: tests failed (pytest exit {result.exited}); the failures are "
                   f"listed above, JUnit XML in {junit}", code=result.exited)


# ---------------------------------------------------------------- kernels
@task(
    help={
        "version": "Catalog version to build (see `invoke list-kernels`), e.g. 6.1 or 5.4.",
        "plan": "Print what would be done (sources, checksums, patches, fragments, compiler); "
        "no network, no build.",
        "tarball": "Build from this local tarball instead of the catalog's sources.",
        "git": "Build from this local git tree (exported at --ref; the tree is not modified).",
        "ref": "Git ref for --git (default HEAD); only with --git.",
        "url": "Download the tarball from this URL instead of the catalog's.",
        "sha256": "Pin the sha256 of the tarball (for --tarball/--url or an unpinned catalog entry).",
        "deb": "Use this linux-source .deb for a Debian-sourced version (checked against kernlab.lock).",
        "allow_unverified": "Accept a tarball with no pinned sha256 (the record says unverified).",
        "patches": "Extra patch series directory applied after the catalog's (repeatable).",
        "fragment": "Extra config fragment merged after the catalog's (repeatable).",
        "jobs": "make -j (default or 0: number of cores).",
        "no_ccache": "Do not use ccache even when installed.",
        "no_samples": "Skip samples/bpf.",
        "no_patch": "Leave out a patch of the catalog's series (file name, repeatable): a variant build "
        "with its own key, e.g. --no-patch 0001-lib-iov_iter-make-copyout-probe-able.patch.",
        "clean": "Remove this build's output directory first and build from scratch.",
        "json": "Print the build record as JSON when done.",
        "update_lock": "Accept inputs that differ from kernlab.lock (e.g. a newer Debian package) "
        "and record them there.",
        "registry": REGISTRY_HELP,
        "rebuild_check": "Rebuild the build (pulled from the registry, or made here) from source in a "
        "scratch area and compare the bzImages byte for byte; a difference is an error naming both sha256s.",
    },
    iterable=["patches", "fragment", "no_patch"],
)
@friendly
def build_kernel(c, version=None, plan=False, tarball=None, git=None, ref=None, url=None, sha256=None,
                 deb=None, allow_unverified=False, patches=None, fragment=None, jobs=0, no_ccache=False,
                 no_samples=False, clean=False, json=False, update_lock=False, no_patch=None, registry=None,
                 rebuild_check=False):
    """Fetch, patch, configure (verified), build a kernel with headers and samples/bpf; record it."""
    from pathlib import Path

    from kernlab.kernel import build
    from kernlab.kernel.catalog import load_catalog
    from kernlab.kernel.source import SourceOptions

    version = not_empty("version", version) or load_catalog().default
    for flag, items in (("patches", patches), ("fragment", fragment), ("no-patch", no_patch)):
        for item in items or []:
            not_empty(flag, item)
    opts = build.BuildOptions(
        source=SourceOptions.from_flags(
            tarball=not_empty("tarball", tarball), git=not_empty("git", git), url=not_empty("url", url),
            ref=not_empty("ref", ref), sha256=not_empty("sha256", sha256),
            allow_unverified=allow_unverified, deb=deb, update_lock=update_lock),
        extra_patches=[Path(p).resolve() for p in patches or []],
        extra_fragments=[Path(f).resolve() for f in fragment or []],
        without_patches=tuple(no_patch or ()),
        jobs=number("jobs", jobs, low=0, high=1024, integer=True,
                    fix="give --jobs N with 1 <= N <= 1024, or leave it out (one job per core)"),
        ccache=not no_ccache, clean=clean, samples=not no_samples, update_lock=update_lock,
    )
    if plan:
        print_json(build.describe_plan(build.make_plan(version, opts)))
        return
    _use_registry(registry)
    if rebuild_check:
        record, _ = build.rebuild_check(version, opts)
        print(f"{record.id}: bzImage identical to its rebuild from source, sha256 "
              f"{record.output_sha256('bzImage')}")
        return
    record = build.build_kernel(version, opts)
    if json:
        print_json(record)
    else:
        print(f"{record.kernelrelease}: {record.bzimage}")


@task(help={"version": "Catalog version or build id (default: the catalog's default); "
                       "see `invoke list-kernels`.",
            "json": "Print the whole build record as JSON."})
@friendly
def kernel_info(c, version=None, json=False):
    """Show a built kernel: where its bzImage is, what went into it."""
    from kernlab.kernel.build import summarize_record
    from kernlab.kernel.catalog import load_catalog
    from kernlab.kernel.selection import find_build

    record = find_build(not_empty("version", version) or load_catalog().default, "--version")
    if json:
        print_json(record)
    else:
        print(summarize_record(record))


@task(help={"kernel": "Kernel to push: a catalog version or build id (repeatable); its headers disk too.",
            "image": "Image recipe to push (repeatable), e.g. bookworm.",
            "all_": "Every complete kernel build (with its headers disk) and every recipe's current image.",
            "registry": "HOST[:PORT]/NAMESPACE (default: KERNLAB_REGISTRY).",
            "registry_insecure": "Allow plain HTTP to a registry that is not on loopback."},
      iterable=["kernel", "image"])
@friendly
def push(c, kernel=None, image=None, all_=False, registry=None, registry_insecure=False):
    """Publish builds and images as OCI artifacts tagged by key (`oras pull` fetches them too)."""
    from kernlab.artifacts.push import push as push_all
    from kernlab.artifacts.push import require_registry
    from kernlab.core.util import human_bytes

    kernels = [not_empty("kernel", k) for k in kernel or []]
    recipes = [not_empty("image", r) for r in image or []]
    client = require_registry(not_empty("registry", registry) if registry is not None else None,
                              registry_insecure)
    done = push_all(client, kernels, recipes, every=all_)
    for item in done:
        print(item.line())
    print(f"pushed {len(done)} artifacts, {human_bytes(sum(i.size for i in done))} uploaded or already there")


@task(help={"version": "Kernel version or build id to lock (repeatable; default: the build each "
                       "built catalog version uses).",
            "image": "Image recipe to lock (repeatable; default: bookworm when built)."},
      iterable=["version", "image"])
@friendly
def lock(c, version=None, image=None):
    """Write kernlab.lock from the current builds: source, patch, fragment, compiler, package pins."""
    from kernlab.pinning.built import lock_built

    path, locked = lock_built([not_empty("version", v) for v in version or []], list(image or []))
    print(f"{path}: locked {', '.join(locked)}")


@task
@friendly
def list_kernels(c):
    """List the catalog's kernel versions, the build each uses, and every build's id."""
    from kernlab.kernel.selection import catalog_table

    print(catalog_table())


@task(
    positional=["version"],
    help={"version": "The version to add (e.g. 6.12): its catalog key, patches/VERSION/, lab-VERSION.config.",
          "like": "The catalog version to start from: its entry, lab fragment and patches (e.g. 6.1).",
          "release": "A kernel.org release (e.g. 6.12.118): the source is its tarball (needs --sha256).",
          "sha256": "The sha256 of --release's tarball (or of --tarball's file).",
          "tarball": "A local kernel tarball as the source (pinned by its sha256)."},
)
@friendly
def new_kernel(c, version=None, like=None, release=None, sha256=None, tarball=None):
    """Add a kernel version like another: entry, fragment, series; each patch tried on its tree."""
    from pathlib import Path

    from kernlab.kernel.catalog import normalise_sha256
    from kernlab.kernel.newkernel import new_kernel as add

    version, like = not_empty("version", version), not_empty("like", like)
    if not version or not like:
        raise KernlabError("new-kernel needs VERSION and --like V",
                           "e.g. `invoke new-kernel 6.12 --like 6.1`")
    tarball, sha256 = not_empty("tarball", tarball), not_empty("sha256", sha256)
    print(add(version, like, release=not_empty("release", release),
              sha256=normalise_sha256(sha256, "--sha256") if sha256 else None,
              tarball=Path(tarball) if tarball else None).report())


@task(help={"yes": "Remove them (without it: only list what would go and its size)."})
@friendly
def clean(c, yes=False):
    """Free disk: old kernel builds, source trees and headers disks no kept build uses."""
    from kernlab.guest.vm import list_vms
    from kernlab.kernel.tidy import clean as clean_kernels

    print(clean_kernels({vm.info.kernel_key for vm in list_vms()}, yes))  # a running VM's build stays


# ---------------------------------------------------------------- image and VM
@task(help={"recipe": "Image recipe in vm/ (default bookworm).",
            "json": "Print the image record as JSON.",
            "update_lock": "Accept recipe files or package versions unlike kernlab.lock's; record them."})
@friendly
def build_image(c, recipe="bookworm", json=False, update_lock=False):
    """Build the lab root filesystem image (mmdebstrap + mke2fs -d); cached by recipe hash."""
    from kernlab.guest.image import build_image as build

    record = build(recipe, update_lock=update_lock)
    print_json(record) if json else print(record.disk)


def _vm_or_exit(name, connect=False):
    """The running VM ``name`` whose SSH answers (``connect``: connected); else one line
    saying what is wrong with it."""
    from kernlab.guest.vm import usable_vm

    return usable_vm(name, connect)


@task(name="up", help={
    "kernel": "Kernel to boot: a version or a build id (`invoke list-kernels`) of a build "
              "from `invoke build-kernel`.",
    "name": "VM name (run dir <state>/vms/NAME; default: default).",
    "recipe": "Image recipe in vm/ (built first if needed).",
    "append": "Extra kernel parameters.",
    "memory": "Guest memory (default 2G; at least 128M).",
    "cpus": "Guest CPUs (default 2; 1 to 255).",
    "timeout": "Seconds to wait for SSH (default or 0: 30, x5 under TCG).",
    "cold": "Boot cold: do not restore (or save) the snapshot of this kernel, image and settings.",
    "gdb": "Start QEMU's gdbstub on 127.0.0.1:PORT (`--gdb` alone: a free port); boots cold with "
           "nokaslr on a KASLR kernel. Then `invoke vm.gdb --name NAME`.",
}, optional=["gdb"])
@friendly
def vm_up(c, kernel, name="default", recipe="bookworm", append="", memory="2G", cpus=2,
          timeout=0.0, cold=False, gdb=None):
    """Boot a built kernel on the lab image (from its snapshot when there is one) and wait
    until SSH answers."""
    from kernlab.core.validate import memory as memory_size
    from kernlab.guest.ensure import Target
    from kernlab.guest.qemu import forced_accel
    from kernlab.guest.vm import run_dir_of
    from kernlab.kernel.selection import choose_kernel

    run_dir_of(name)  # a bad name fails before any build
    forced_accel()
    opts = {"append": append, "memory": memory_size("memory", memory),
            "cpus": number("cpus", cpus, low=1, high=255, integer=True),
            "timeout": number("timeout", timeout, low=0, high=86400,
                              fix="give --timeout SECONDS (1 to 86400), or 0 for the default") or None,
            "cold": bool(cold), "gdb_port": gdb_port(gdb)}
    target = Target(choose_kernel(not_empty("kernel", kernel)), recipe, name, build_missing=False,
                    restart=True, vm_opts=opts)
    vm = target.up()
    print(f"VM {vm.name}: ssh -F {vm.info.ssh_config} kernlab-{vm.name}")
    if vm.info.data.get("gdb_port"):
        print(f"gdbstub: 127.0.0.1:{vm.info.data['gdb_port']} (`invoke vm.gdb --name {vm.name}`)")


def gdb_port(value):
    """``--gdb``: None (off), True (a free port) or a port number."""
    from kernlab.guest.qemu import free_port

    if value in (None, False):
        return None
    if value is True or value == "":
        return free_port()
    return int(number("gdb", value, low=1, high=65535, integer=True,
                      fix="give --gdb PORT (1 to 65535), or --gdb alone for a free port"))


@task(name="gdb", help={"name": "VM name (booted with `vm.up --gdb`).",
                        "batch": "Run gdb in batch mode on this command file (gdb -batch -x FILE)."})
@friendly
def vm_gdb(c, name="default", batch=""):
    """gdb on the VM's kernel: its vmlinux, sources mapped, the kernel's gdb scripts, the stub."""
    from pathlib import Path

    from kernlab.guest.gdb import gdb_argv
    from kernlab.guest.vm import find_vm, not_running, vmlinux_of

    vm = find_vm(name)
    if vm is None:
        raise not_running(name)
    if batch and not Path(batch).is_file():
        raise KernlabError(f"no gdb command file {batch}", "give --batch FILE, a file of gdb commands")
    argv = gdb_argv(vm.info.data, vmlinux_of(vm), Path(batch) if batch else None)
    if batch:
        import subprocess

        raise Exit(code=subprocess.run(argv, check=False).returncode)
    os.execv(argv[0], argv)


@task(name="ssh", help={"command": "Command to run in the guest (default: interactive shell).",
                        "name": "VM name.", "timeout": "Seconds before the command is stopped."})
@friendly
def vm_ssh(c, command="", name="default", timeout=600.0):
    """Run a command in the VM (its exit status is returned), or open a shell."""
    from kernlab.core.proc import require_tool
    from kernlab.guest.remote import connect, run

    timeout = number("timeout", timeout, above=0, high=86400,
                     fix="give --timeout SECONDS, more than 0 and at most 86400")
    vm = _vm_or_exit(name, connect=bool(command))
    if not command:
        ssh = require_tool("ssh", "openssh-client")
        os.execv(ssh, [ssh, "-F", str(vm.info.ssh_config), f"kernlab-{vm.name}"])
    result = run(connect(vm), command, timeout=timeout, check=False, stream=True)
    if result.exited:
        raise Exit(code=result.exited if result.exited > 0 else 255)  # -1: killed by a signal


@task(name="down", help={"name": "VM name."})
@friendly
def vm_down(c, name="default"):
    """Stop the VM (QMP quit, then signals) and drop its overlay; logs are kept."""
    from kernlab.guest.vm import find_vm, forget_death, in_use_by, run_dir_of

    run_dir_of(name)
    vm = find_vm(name)
    if vm is None:
        note = forget_death(name)
        print(f"VM {name} is not running" + (f" (it had stopped: {note['state']}: {note.get('detail')})"
                                             if note else ""))
        return
    if user := in_use_by(name):  # stopped anyway (a hung run's VM): that command is told why
        print(f"VM {name} is in use by {user}: stopping it anyway; that command will fail")
    vm.stop()
    print(f"VM {name} stopped (console log: {vm.console_log})")


@task(name="status", help={"name": "Only this VM.", "json": "Print the VM records (and states) as JSON."})
@friendly
def vm_status(c, name="", json=False):
    """List VMs and their state: running, frozen, panicked, ssh not answering, or stopped;
    and the kernel splats in each one's console and dmesg."""
    from kernlab.guest.vm import kernel_splats, not_running, run_dir_of, status_json, status_text, survey

    if name:
        run_dir_of(name)
    rows = survey(name)
    if name and not rows:
        raise not_running(name)
    found = {each: kernel_splats(each, state, vm) for each, state, vm in rows}
    print_json(status_json(rows, found)) if json else print(status_text(rows, found))


@task(name="verify", help={"name": "VM name."})
@friendly
def vm_verify(c, name="default"):
    """Run the testinfra guest checks (kernel, debugfs/tracefs, bpf, kprobes, bpftrace)."""
    from kernlab.guest.verify import verify_vm

    log = verify_vm(_vm_or_exit(name))
    print(f"guest checks passed (log: {log})")


@task(name="dump", help={"name": "VM name.",
                         "out": "Where to write the vmcore (default: <state>/vms/NAME/dumps/).",
                         "format": "elf (default), kdump-zlib, kdump-lzo or kdump-snappy."})
@friendly
def vm_dump(c, name="default", out="", format="elf"):
    """Write a crash dump (vmcore) of the running VM and how to open it with crash or drgn."""
    from kernlab.guest.vm import dump_vm

    record = dump_vm(name, out, format)
    print(f"vmcore: {record['vmcore']} ({record['size']} bytes, {record['format']})")
    for tool, command in record.get("open", {}).items():
        print(f"{tool}: {command}")


vm_tasks = Collection("vm", vm_up, vm_ssh, vm_down, vm_status, vm_verify, vm_dump, vm_gdb)

# ---------------------------------------------------------------- experiments
NA_EXIT = 77  # run-experiment NAME on a kernel it does not apply to (the test-suite "skip" code)
LANES_HELP = ("VMs run side by side, each restored from the same snapshot, one experiment at a "
              "time each (default: KERNLAB_LANES, else one more than the host's cores, at most "
              "4 and what free memory holds; 1: one VM).")

@task(help={"kernel": "Say for this kernel (a version or build id) whether each experiment "
                      "runs, or why it is n/a."})
@friendly
def list_experiments(c, kernel=""):
    """Table of the experiments: name, what it shows, kernels (or fit to --kernel), needs.

    A folder whose experiment.yaml does not load is listed as BROKEN with its error (the
    others still list); the command then fails naming the broken ones.
    """
    from kernlab.experiments.suite import experiments_table

    table, broken = experiments_table(kernel)
    print(table)
    if broken:
        raise broken


@task(
    klass=NameOrAllTask,
    positional=["name"],
    help={
        "name": "Experiment to run: a name (see `invoke list-experiments`) or the path of a "
                "folder holding an experiment.yaml, anywhere.",
        "kernel": "Kernel: a catalog version or a build id (`invoke list-kernels`); default: "
                  "the catalog's default. Its build from `invoke build-kernel` is used; an "
                  "unbuilt version is built from the catalog.",
        "keep_vm": "Leave the VM running afterwards (the next run reuses it).",
        "all_": "Run every experiment on one kernel, in --lanes VMs side by side.",
        "vm_name": "Name of the VM to use or boot (with --all: lane 1's).",
        "lanes": LANES_HELP + " With --all only.",
        "registry": REGISTRY_HELP,
        "gdb": "Boot the VM with QEMU's gdbstub on 127.0.0.1:PORT (`--gdb` alone, after NAME: a "
               "free port; KASLR off) and wait for a debugger before the workload: `invoke vm.gdb "
               "--name VM`, set breakpoints, `continue`. One experiment, not --all.",
    },
    optional=["gdb"],
)
@friendly
def run_experiment(c, name=None, kernel=None, keep_vm=False, all_=False, vm_name="default",
                   lanes=None, registry=None, gdb=None):
    """Run an experiment in the lab VM; last line: bundle path and PASS/FAIL.

    Exit status: 0 PASS, 1 FAIL or error, 77 (NA_EXIT) the experiment is n/a on the kernel.
    """
    from kernlab.experiments.run import NotApplicable, verdict_text
    from kernlab.experiments.run import run_experiment as run_one
    from kernlab.experiments.suite import load_experiment
    from kernlab.experiments.suiterun import run_suite, summary_table, whole_suite
    from kernlab.guest.qemu import forced_accel
    from kernlab.guest.vm import run_dir_of
    from kernlab.kernel.selection import choose_kernel

    kernel = not_empty("kernel", kernel)
    run_dir_of(vm_name)  # a bad name fails before any build
    _use_registry(registry)
    forced_accel()
    port = gdb_port(gdb)
    if port is not None and (all_ or lanes is not None):
        raise KernlabError("--gdb stops one experiment's workload for a debugger, not a suite's",
                           "name one experiment: `invoke run-experiment NAME --gdb`")
    if whole_suite(name, all_, lanes):
        bundles = run_suite(None, kernel=kernel, keep_vm=keep_vm, vm_name=vm_name, lanes=lanes)
        print(summary_table(bundles))
        failed = [b for b in bundles if not b.passed and not b.skipped]
        if failed:
            raise Exit(f"{len(failed)} experiment(s) failed", code=1)
        return
    exp = load_experiment(name)
    choice = choose_kernel(kernel or None)
    try:
        bundle = run_one(exp, choice, keep_vm=keep_vm, vm_name=vm_name, gdb_port=port)
    except NotApplicable as na:
        raise Exit(f"kernlab: n/a: {na.line()}", code=NA_EXIT) from None
    print(verdict_text(bundle))
    if not bundle.passed:
        raise Exit(code=1)


@task(help={"name": "The new folder: a bare name goes into the suite's experiments/, a path "
                    "(with a /) anywhere.",
            "kind": "bpftrace, libbpf, bcc or shell."})
@friendly
def new_experiment(c, name, kind="bpftrace"):
    """Write a working experiment skeleton (experiment.yaml with comments, sources) to start from."""
    from kernlab.experiments.skeleton import made_text
    from kernlab.experiments.skeleton import new_experiment as make

    print(made_text(make(not_empty("name", name), kind), kind))


@task(help={"name": "An experiment's name or the path of its folder.",
            "kernels": "Comma-separated built kernels (versions or build ids) to check "
                       "against; default: the catalog's default."})
@friendly
def check_experiment(c, name, kernels=""):
    """Check an experiment without booting: YAML, needs, BPF build, bpftrace programs and probes.

    Exit status 0 when every check passed or could not apply, 1 otherwise.
    """
    from kernlab.experiments.check import check_command

    wanted = names("kernels", kernels, "kernel", "6.1,4.15") if kernels else []
    text, failed = check_command(not_empty("name", name), wanted)
    print(text)
    if failed:
        raise failed


# ---------------------------------------------------------------- reproducibility and CI
SLURM_HELP = {
    "slurm": "Run the kernels as one Slurm job array, one task per kernel, from a login node "
             "(README: Slurm); the tasks' reports are merged into --out.",
    "partition": "With --slurm: the partition to submit to.",
    "account": "With --slurm: the account to charge.",
    "time": "With --slurm: each task's time limit, as Slurm writes it (e.g. 2:00:00).",
    "slurm_dir": "With --slurm: a folder every node sees, for the shared kernels, image and run "
                 "folders (default KERNLAB_SLURM_DIR, else slurm/ in the checkout).",
    "retry": "With --slurm: resubmit the tasks that ended without a report (cancelled, time "
             "limit, out of memory, node failure) up to N times (default 0).",
}


def _matrix(kernels: str, experiments: str, out: str, hosts: str = "", lanes: str | None = None,
            slurm=None):
    from pathlib import Path

    from kernlab.compare import matrix
    from kernlab.guest.qemu import forced_accel

    kernel_list = names("kernels", kernels, "kernel", "4.15,5.4.286,6.1 (see `invoke list-kernels`)")
    forced_accel()
    chosen = None if experiments.strip() == "all" else names(
        "experiments", experiments, "experiment", "readiter,hellotrace, or all")
    if slurm is not None:
        from kernlab.compare.merge import slurm_report

        result, shown, interrupted = slurm_report(kernel_list, chosen, matrix.out_dir(out), slurm)
        print(shown)
        if interrupted:
            raise Exit(f"kernlab: interrupted; the report holds what finished: {matrix.out_dir(out)}",
                       code=130)
    else:
        result, shown = matrix.run_and_report(kernel_list, chosen, Path(hosts) if hosts else None,
                                              matrix.out_dir(out), lanes)
        print(shown)
    if not result.ran:
        raise matrix.nothing_ran(result)
    return result


@task(help={"kernels": "Comma-separated kernels: catalog versions or build ids (`invoke list-kernels`), "
                       "e.g. 4.15,5.4.286,6.1. Each uses its build from `invoke build-kernel`.",
            "experiments": "Comma-separated experiment names, or `all` (default).",
            "out": "Report directory (default results/matrix/<time>).",
            "hosts": "Hosts file (YAML): share the kernels out to these machines over SSH "
            "(see configs/hosts.example.yaml); their bundles come back under OUT/hosts/.",
            "rerender": "Only rewrite the report in --out from its matrix.json (no runs).",
            "merge": "Merge earlier runs' --out directories into one report in --out (no runs): "
            "repeat the flag, comma-separate, or give a quoted glob, e.g. --merge 'artifacts/*/report'.",
            "lanes": LANES_HELP, **SLURM_HELP},
      iterable=["merge"])
@friendly
def matrix(c, kernels="", experiments="all", out="", hosts="", rerender=False, merge=None,
           lanes=None, slurm=False, partition="", account="", time="", slurm_dir="", retry=0):
    """Run every experiment on every kernel (one VM per kernel) and write a comparison report.

    Each cell is PASS, FAIL, or n/a with the reason (the kernel lacks a needs.features entry).
    """
    from pathlib import Path

    from kernlab.compare import matrix as mx
    from kernlab.fanout.slurm import slurm_options

    others = "--merge" if merge else "--rerender" if rerender else ""
    options = slurm_options(slurm, hosts, lanes, others, partition=partition, account=account,
                            time=time, slurm_dir=slurm_dir, retry=retry)
    mode = mx.report_mode(kernels, experiments, out, hosts, rerender, merge)
    if mode == "merge":
        from kernlab.compare.merge import merge_reports

        result, written = merge_reports(merge, Path(out) if out else mx.default_out())
        print(mx.report_text(result, written))
        if not result.passed:
            raise Exit("kernlab: merged matrix FAIL (see the report)", code=1)
        return
    if mode == "rerender":
        result = mx.load_matrix(mx.out_dir(out) / "matrix.json")
        mx.write_report(result, Path(out))
        print(mx.grid_text(result))
        return
    result = _matrix(kernels, experiments, out, hosts, lanes, options)
    if not result.passed:
        raise Exit("kernlab: matrix FAIL (see the report)", code=1)


@task(help={"kernels": "Comma-separated catalog versions or build ids (default: the catalog's default).",
            "experiments": "Comma-separated experiment names, or `all` (default).",
            "out": "Report directory (default results/matrix/<time>); JUnit XML is junit.xml there.",
            "hosts": "Hosts file (YAML) of other machines to share the kernels with (see `matrix`).",
            "lanes": LANES_HELP, "registry": REGISTRY_HELP, **SLURM_HELP})
@friendly
def ci(c, kernels="", experiments="all", out="", hosts="", lanes=None, slurm=False, partition="",
       account="", time="", slurm_dir="", retry=0, registry=None):
    """Non-interactive run for CI: plain progress, builds what is missing, matrix, JUnit XML, exit status."""
    from kernlab.fanout.slurm import slurm_options
    from kernlab.kernel.catalog import load_catalog

    _use_registry(registry)
    os.environ.setdefault("CI", "1")
    os.environ["KERNLAB_PLAIN"] = "1"
    options = slurm_options(slurm, hosts, lanes, partition=partition, account=account, time=time,
                            slurm_dir=slurm_dir, retry=retry)
    result = _matrix(kernels or load_catalog().default, experiments, out, hosts, lanes, options)
    if not result.passed:
        raise Exit("kernlab: ci FAIL", code=1)
    print("kernlab: ci PASS")


@task(help={"bundle": "A results bundle directory (results/<experiment>/<kernel>/<time>).",
            "out": "Where to write the pack (default results/packs/<experiment>-<kernel>-<time>"
            ".kernlab-pack.tar).",
            "small": "Leave the kernel source and the image's .debs out (named by version and sha256)."})
@friendly
def pack(c, bundle, out="", small=False):
    """One archive that reproduces a bundle on another machine, offline: `invoke reproduce PACK`."""
    from pathlib import Path

    from kernlab.artifacts.pack import pack_bundle
    from kernlab.core.util import human_bytes

    written = pack_bundle(Path(bundle), Path(out) if out else None, small=small)
    print(f"{written} ({human_bytes(written.stat().st_size)})")


@task(help={"bundle": "A results bundle directory (results/<experiment>/<kernel>/<time>) or a pack "
            "(*.kernlab-pack.tar from `invoke pack`).",
            "anyway": "Rerun even if today's kernel inputs differ from the bundle's.",
            "keep_vm": "Leave the VM running afterwards.",
            "vm_name": "VM to use (reused when it runs the same kernel and image).",
            "json": "Print the comparison as JSON.",
            "registry": REGISTRY_HELP + " A bundle's kernel, headers disk and image are pulled at the "
            "digests its manifest names."})
@friendly
def reproduce(c, bundle, anyway=False, keep_vm=False, vm_name="default", json=False, registry=None):
    """Rebuild or reuse what a bundle names, rerun it, compare hashes, expectations and trace."""
    from pathlib import Path

    from kernlab.artifacts.pack import is_pack, reproduce_pack
    from kernlab.compare.reproduce import reproduce as run
    from kernlab.guest.vm import run_dir_of

    run_dir_of(vm_name)
    _use_registry(registry)
    target = Path(not_empty("bundle", bundle))
    rerun = reproduce_pack if is_pack(target) else run
    comparison = rerun(target, anyway=anyway, keep_vm=keep_vm, vm_name=vm_name)
    if json:
        print_json(comparison.to_json())
    else:
        print(comparison.text())
    if not comparison.identical:
        raise Exit(code=1)


@task(
    positional=["targets"],
    help={
        "targets": "kprobe/kretprobe function names, tracepoint:CAT:NAME, uprobe:BINARY:FUNC "
                   "(space- or comma-separated).",
        "kernels": "Comma-separated kernels (catalog versions or build ids); default: every built "
                   "catalog version. A version with no build uses a built point release (5.4 → 5.4.286).",
        "experiment": "Also check the targets an experiment uses (its SEC() names, bpftrace probes, "
                      "kprobe_events lines).",
        "live": "Boot each kernel and confirm every verdict by registering and removing the probe.",
        "json": "Print the rows as JSON.",
        "vm_name": "Name of the VM --live boots (it is stopped afterwards).",
    },
)
@friendly
def probes(c, targets=None, kernels="", experiment=None, live=False, json=False, vm_name="probes"):
    """Can I probe it here? Each target on each built kernel: verdict, reason, fix, evidence."""
    from kernlab.experiments.probecheck import atlas_rows
    from kernlab.guest.vm import run_dir_of
    from kernlab.probes.atlas import table

    run_dir_of(vm_name)  # -v NAME is checked with or without --live
    words = [t for t in (targets or "").split(",") if t.strip()]
    chosen = [k.strip() for k in (kernels or "").split(",") if k.strip()]
    result = atlas_rows(words, chosen, not_empty("experiment", experiment), live=live, vm_name=vm_name)
    if json:
        print_json(result.to_json())
    else:
        print(result.text(table))
    if result.defects:
        raise Exit(f"kernlab: error: {len(result.defects)} live result(s) disagree with the static "
                   "verdict (listed above); report them as atlas defects", code=1)


@task(
    positional=["function"],
    help={"function": "A static or inlined C function of the kernel (e.g. file_ppos).",
          "version": "Kernel: catalog version or build id whose tree the patch is made against.",
          "json": "Print what was written as JSON."},
)
@friendly
def make_probeable(c, function=None, version=None, json=False):
    """Write a patch into patches/<V>/ that makes FUNCTION a real, probe-able symbol (or refuse, why)."""
    from kernlab.probes.probeable import describe
    from kernlab.probes.probeable import make_probeable as make

    function, version = not_empty("function", function) or "", not_empty("version", version) or ""
    made = make(function, version)
    if json:
        print_json(describe(made))
    else:
        print(made.summary(version))


ns = Collection(setup, test, build_kernel, kernel_info, list_kernels, new_kernel, lock, push, matrix, ci,
                reproduce, pack, clean)
ns.add_task(build_image)
ns.add_collection(vm_tasks)
ns.add_task(list_experiments)
ns.add_task(run_experiment)
ns.add_task(new_experiment)
ns.add_task(check_experiment)
ns.add_task(probes)
ns.add_task(make_probeable)
