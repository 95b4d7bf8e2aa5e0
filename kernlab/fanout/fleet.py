"""Matrix cells on other Linux hosts over SSH (fabric): ship kernlab, run there, fetch back.

A hosts file (YAML) names the machines. Each kernel of the matrix is given to one
runner (this machine, ``local``, or a host); a host gets kernlab's project files (a
content-addressed tree under its ``workdir``), runs ``./kl matrix`` for its kernels there
(its own build, image and boot; its own venv and host packages through ``./kl``), and
its report and bundles are copied back under ``<out>/hosts/<name>/``. The run's
experiments that live outside the checkout's experiments/ (KERNLAB_EXPERIMENTS,
KERNLAB_EXPERIMENT_PATH, experiment-path.txt) go with the tree, under
``extra-experiments/``, and the host's run is pointed at them.

Security as for the lab VM: key-only login with a 0600 private key, the host's key must
already be in the given known_hosts (paramiko RejectPolicy, never auto-added), and the
fetched archive is extracted with escaping members refused.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import shlex
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import paramiko
from fabric import Connection

from kernlab.core import inuse, paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter, without_stamp
from kernlab.core.spec import SpecFile
from kernlab.core.util import read_json
from kernlab.core.validate import inside_path, plain_name
from kernlab.experiments.spec import LIB_DIR, PATH_ENV
from kernlab.experiments.suite import experiment_folder
from kernlab.guest.remote import key_only_connection
from kernlab.kernel.source import safe_extract

LOCAL = "local"  # this machine, as a runner of matrix cells
TOP_KEYS = ("hosts", "include_local")
HOST_KEYS = ("name", "address", "port", "user", "key", "known_hosts", "workdir", "env", "kernels")

RUN_TIMEOUT = 6 * 3600.0  # a cold remote build + image + suite, under TCG, with margin
SHIPPED = (  # what a host needs to run kernlab: the package, its front and the project data
    "kernlab", "tasks.py", "kl", "pyproject.toml", "README.md", "kernlab.lock",
    "configs", "patches", "vm", "experiments",
)
PROGRESS_PREFIXES = ("> ", "< ", "x ", "! ", "kernlab:")  # remote lines echoed locally


@dataclass
class Host:
    """One machine that runs matrix cells."""

    name: str
    address: str
    key: Path
    known_hosts: Path
    port: int = 22
    user: str = "root"
    workdir: str = "kernlab-remote"  # relative paths are under the user's home
    env: dict[str, str] = field(default_factory=dict)
    kernels: list[str] = field(default_factory=list)  # pinned cells; empty: any

    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


@dataclass
class HostsFile:
    hosts: list[Host]
    include_local: bool = True
    path: Path | None = None


# ---------------------------------------------------------------- the hosts file
def load_hosts(path: Path) -> HostsFile:
    """Read and check a hosts file; every error names the file, the host and the fix."""
    if not path.is_file():
        raise KernlabError(f"no hosts file {path}", "pass --hosts FILE (see configs/hosts.example.yaml)")
    spec = SpecFile(path, "fix the hosts file (see configs/hosts.example.yaml)")
    data = spec.load(empty={})
    if not isinstance(data, dict):
        raise KernlabError(f"{path}: the top level is a {type(data).__name__}, not a mapping",
                           "write `hosts:` with the list under it (see configs/hosts.example.yaml)")
    spec.known(data, TOP_KEYS)
    spec.typed(data.get("include_local", True), bool, "include_local")
    raw_hosts = data.get("hosts")
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise KernlabError(f"{path} lists no hosts", "add a `hosts:` list (see configs/hosts.example.yaml)")
    hosts = [_host(spec, raw) for raw in raw_hosts]
    names = [h.name for h in hosts]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise KernlabError(f"{path}: host names repeat: {', '.join(dupes)}", "give each host its own name")
    return HostsFile(hosts, bool(data.get("include_local", True)), path)


def _host(spec: SpecFile, raw: Any) -> Host:
    path = spec.path
    if not isinstance(raw, dict) or not raw.get("name") or not raw.get("address"):
        raise KernlabError(f"{path}: every host needs a name and an address (got {raw!r})",
                           "fix the hosts file")
    name = str(raw["name"])
    if name == LOCAL:
        raise KernlabError(f"{path}: `{LOCAL}` is this machine's name", "rename the host")
    if problem := plain_name(name):  # it names the host's folder and log under --out/hosts/
        raise KernlabError(f"{path}: host name {problem}", "rename the host")
    spec.known(raw, HOST_KEYS, f"host {name}")
    workdir = str(raw.get("workdir", "kernlab-remote"))
    if problem := workdir_problem(workdir):
        raise KernlabError(f"{path}: host {name}: workdir {problem}",
                           "give a folder of its own: relative (under the login's home), e.g. "
                           "kernlab-remote, or absolute, e.g. /srv/kernlab")
    missing = [k for k in ("key", "known_hosts") if not raw.get(k)]
    if missing:
        raise KernlabError(f"{path}: host {name} lacks {', '.join(missing)}",
                           "name the private key and a known_hosts file holding the host's key")
    for key in ("key", "known_hosts", "address", "user", "workdir"):
        if key in raw and not isinstance(raw[key], str):
            raise KernlabError(f"{path}: host {name}: {key} must be text, got {raw[key]!r}",
                               "fix the hosts file (see configs/hosts.example.yaml)")
    port, env, kernels = raw.get("port", 22), raw.get("env") or {}, raw.get("kernels") or []
    if not isinstance(port, int) or not 0 < port < 65536:
        raise KernlabError(f"{path}: host {name}: port {port!r} is not a TCP port", "give a number, e.g. 22")
    if not isinstance(env, dict) or not isinstance(kernels, list):
        raise KernlabError(f"{path}: host {name}: `env` must be a mapping and `kernels` a list",
                           "fix the hosts file (see configs/hosts.example.yaml)")
    base = path.parent
    host = Host(
        name=name, address=str(raw["address"]), port=port,
        user=str(raw.get("user", "root")), workdir=workdir,
        key=(base / Path(raw["key"]).expanduser()).resolve(),
        known_hosts=(base / Path(raw["known_hosts"]).expanduser()).resolve(),
        env={str(k): str(v) for k, v in env.items()},
        kernels=[str(k) for k in kernels],
    )
    check_credentials(host)
    return host


def workdir_problem(workdir: str) -> str | None:
    """Why a host's workdir would put kernlab's files outside a folder of their own; None if fine.

    A relative workdir is under the login's home and must stay there (no '..'). An absolute
    one is the user's explicit choice of place (e.g. /srv/kernlab, a big disk), but never
    the root directory itself, and never through '..'.
    """
    path = PurePosixPath(workdir)
    if workdir.startswith("/") and ".." not in path.parts:
        return f"{workdir!r} is the root directory" if path == PurePosixPath("/") else None
    if workdir.startswith("/"):
        return f"{workdir!r} goes through '..'"
    problem = inside_path(workdir)
    return f"{problem}; a relative workdir is a folder under the login's home" if problem else None


def check_credentials(host: Host) -> None:
    """The private key exists and is 0600; known_hosts exists (keys are never learnt blindly)."""
    if not host.key.is_file():
        raise KernlabError(f"host {host.name}: private key {host.key} not found",
                           "fix `key` in the hosts file")
    mode = stat.S_IMODE(host.key.stat().st_mode)
    if mode & 0o077:
        raise KernlabError(f"host {host.name}: private key {host.key} is readable by others "
                           f"(mode {mode:o})", f"chmod 600 {host.key}")
    if not host.known_hosts.is_file():
        raise KernlabError(
            f"host {host.name}: known_hosts file {host.known_hosts} not found",
            f"check the host's key fingerprint, then: ssh-keyscan -p {host.port} {host.address} "
            f"> {host.known_hosts}")


def assign(kernels: list[str], hosts: HostsFile) -> dict[str, list[str]]:
    """Which runner (``local`` or a host name) runs which kernels; pinned kernels first."""
    plan: dict[str, list[str]] = {}
    free = list(kernels)
    for host in hosts.hosts:
        for kernel in host.kernels:
            if kernel in free:
                free.remove(kernel)
                plan.setdefault(host.name, []).append(kernel)
    runners = ([LOCAL] if hosts.include_local else []) + [h.name for h in hosts.hosts if not h.kernels]
    if free and not runners:
        raise KernlabError(f"no runner for kernels {', '.join(free)}: every host is pinned to others",
                           "add them to a host's `kernels`, or set include_local: true")
    for index, kernel in enumerate(free):
        plan.setdefault(runners[index % len(runners)], []).append(kernel)
    return {runner: sorted(ks, key=kernels.index) for runner, ks in plan.items()}


# ---------------------------------------------------------------- SSH
def open_connection(host: Host, timeout: float = 15.0) -> Connection:
    """An open fabric Connection that trusts only the host keys in ``host.known_hosts``."""
    conn = key_only_connection(host.address, host.port, host.user, host.key, host.known_hosts, timeout)
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise KernlabError(f"host {host.name} ({host.where}) offered a host key unlike the one in "
                           f"{host.known_hosts}", "check the host: it may not be the machine you meant",
                           ) from None
    except paramiko.AuthenticationException:
        raise KernlabError(f"host {host.name} ({host.where}) refused the key {host.key}",
                           f"add {host.key}.pub to {host.user}'s authorized_keys there") from None
    except paramiko.SSHException as error:
        if "not found in known_hosts" in str(error):
            raise KernlabError(
                f"host {host.name} ({host.where}): its host key is not in {host.known_hosts}",
                f"check its fingerprint, then add it: ssh-keyscan -p {host.port} {host.address} "
                f">> {host.known_hosts}") from None
        raise KernlabError(f"host {host.name} ({host.where}): SSH failed ({error})",
                           "check that sshd runs there") from None
    except OSError as error:
        raise KernlabError(f"cannot reach host {host.name} at {host.address}:{host.port} "
                           f"({error.strerror or error})",
                           "check the address and port in the hosts file and that sshd runs") from None
    return conn


def _run(conn: Connection, command: str, what: str, timeout: float = 600.0) -> str:
    result = conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    if result.exited != 0:
        said = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise KernlabError(f"{what} failed on {conn.host} (exit {result.exited}): {said[-1][:200]}",
                           "check the host's workdir and disk space")
    return result.stdout.strip()


# ---------------------------------------------------------------- shipping kernlab
def project_files(root: Path) -> list[Path]:
    """The files a host needs, sorted (no venvs, builds, results or caches)."""
    files = []
    for name in SHIPPED:
        top = root / name
        if top.is_file():
            files.append(top)
        elif top.is_dir():
            files += [p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(files)


EXTRA_DIR = "extra-experiments"  # in a shipped tree: the run's experiments from elsewhere


@dataclass(frozen=True)
class OutsideGroup:
    """Experiments of a run that live outside the checkout's experiments/, one folder's worth:
    shipped as ``extra-experiments/<index>/<name>/`` (with the folder's own ``_lib``)."""

    index: int
    folder: Path  # the folder holding them (KERNLAB_EXPERIMENTS', a path entry's, ...)
    experiments: tuple[Path, ...]
    is_suite: bool  # the local suite folder (KERNLAB_EXPERIMENTS): the host's suite too


def outside_groups(names: list[str]) -> list[OutsideGroup]:
    """The run's experiments the shipped checkout does not hold, grouped by their folder."""
    checkout, suite = (paths.root() / "experiments").resolve(), paths.experiments_dir().resolve()
    grouped: dict[Path, list[Path]] = {}
    for name in names:
        folder = experiment_folder(name)
        if folder is not None and folder.resolve().parent != checkout:
            grouped.setdefault(folder.resolve().parent, []).append(folder.resolve())
    return [OutsideGroup(i, parent, tuple(sorted(set(found))), parent == suite)
            for i, (parent, found) in enumerate(sorted(grouped.items()))]


def outside_files(groups: list[OutsideGroup]) -> list[tuple[str, Path]]:
    """(name in the archive, file) for each group's experiments and ``_lib``; a file whose
    real path leaves its experiment's folder (a symlink out) is not shipped."""
    files = []
    for group in groups:
        lib = group.folder / LIB_DIR
        for top in (*group.experiments, *([lib] if lib.is_dir() else [])):
            for path in sorted(top.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and \
                        path.resolve().is_relative_to(top):
                    files.append((f"{EXTRA_DIR}/{group.index}/{top.name}/{path.relative_to(top)}", path))
    return files


def outside_env(groups: list[OutsideGroup], tree: str) -> dict[str, str]:
    """The host's KERNLAB_EXPERIMENTS / KERNLAB_EXPERIMENT_PATH for the shipped groups."""
    env = {}
    added = [f"{tree}/{EXTRA_DIR}/{g.index}" for g in groups if not g.is_suite]
    if added:
        env[PATH_ENV] = ":".join(added)
    suite = [f"{tree}/{EXTRA_DIR}/{g.index}" for g in groups if g.is_suite]
    if suite:
        env["KERNLAB_EXPERIMENTS"] = suite[0]
    return env


def project_archive(root: Path, extra: list[tuple[str, Path]] | None = None) -> tuple[bytes, str]:
    """A tar.gz of the project files (and ``extra``: (name, file) pairs) and the sha256 of
    its tar (names the remote tree)."""
    buffer = io.BytesIO()
    entries = [(str(p.relative_to(root)), p) for p in project_files(root)] + (extra or [])
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in entries:
            info = tarfile.TarInfo(name)
            data = path.read_bytes()
            info.size, info.mtime = len(data), 0
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    return gzip.compress(blob, mtime=0), hashlib.sha256(blob).hexdigest()


def ship(conn: Connection, workdir: str, groups: list[OutsideGroup] | None = None) -> str:
    """Put this kernlab, with the run's experiments from outside it (``groups``), on the host
    (once per content); returns the remote tree's path."""
    blob, digest = project_archive(paths.root(), outside_files(groups or []))
    tree = f"{workdir}/tree-{digest[:12]}"
    done = conn.run(f"test -f {shlex.quote(tree)}/.kernlab-shipped", hide=True, warn=True, in_stream=False)
    if done.exited == 0:
        return tree
    staging, archive = f"{tree}.part", f"{tree}.tar.gz"
    _run(conn, f"rm -rf {shlex.quote(staging)} && mkdir -p {shlex.quote(staging)}", "mkdir")
    conn.put(io.BytesIO(blob), archive)
    q_archive, q_staging = shlex.quote(archive), shlex.quote(staging)
    _run(conn, f"tar -xzf {q_archive} -C {q_staging} && rm -f {q_archive}"
         f" && touch {q_staging}/.kernlab-shipped && mv {q_staging} {shlex.quote(tree)}", "unpacking kernlab")
    return tree


# ---------------------------------------------------------------- one host's run
@dataclass
class HostRun:
    """What came back from one host: its matrix.json (if any) and where it was put."""

    host: Host
    kernels: list[str]
    local_dir: Path
    log: Path
    matrix: dict[str, Any] | None = None
    remote_out: str = ""
    error: str = ""


def run_on_host(host: Host, kernels: list[str], experiments: list[str], out: Path, run_id: str) -> HostRun:
    """Ship, run ``./kl matrix`` for ``kernels`` there, fetch report and bundles back."""
    run = HostRun(host, kernels, out / "hosts" / host.name, out / "hosts" / f"{host.name}.log")
    run.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _connected(host) as conn:
            where = shlex.quote(host.workdir)  # relative: under the login directory
            workdir = _run(conn, f"mkdir -p {where} && cd {where} && pwd", "making the workdir")
            _check_platform(conn, host)
            groups = outside_groups(experiments)
            tree = ship(conn, workdir, groups)
            run.remote_out = f"{workdir}/runs/{run_id}"
            try:
                _remote_matrix(conn, host, tree, workdir, run.remote_out, kernels, experiments, run.log,
                               outside_env(groups, tree))
            finally:  # a failed run still brings back what it made (not after Ctrl-C)
                if not _STOPPING.is_set():
                    run.matrix = _fetch_keeping_the_first_error(conn, run)
    except KernlabError as error:
        run.error = error.one_line()
    except (OSError, EOFError, paramiko.SSHException) as error:
        run.error = f"host {host.name} ({host.where}): connection lost ({error}); log {run.log}"
    return run


def last_error(run: HostRun) -> str:
    """The host's own one-line error (``kernlab: error: ...``) from its log, if it printed one."""
    if not run.log.is_file():
        return ""
    errors = [line for line in run.log.read_text(errors="replace").splitlines()
              if line.startswith("kernlab: error: ")]
    return f"host {run.host.name}: {errors[-1].removeprefix('kernlab: error: ')}" if errors else ""


def _fetch_keeping_the_first_error(conn: Connection, run: HostRun) -> dict[str, Any] | None:
    """fetch_run, whose own failure goes to the host log instead of hiding the run's."""
    try:
        return fetch_run(conn, run.remote_out, run.local_dir)
    except (KernlabError, OSError, EOFError, paramiko.SSHException) as error:
        with run.log.open("a") as sink:
            sink.write(f"kernlab: fetching {run.remote_out} failed: {error}\n")
        run.error = run.error or f"host {run.host.name}: results not fetched ({error}); log {run.log}"
        return None


_RUNNING: dict[str, tuple[Connection, str]] = {}  # host name -> (connection, remote pid file)
_STOPPING = threading.Event()
_RUNNING_LOCK = threading.Lock()
INTERRUPT_GRACE = 60.0  # seconds a host gets to stop its VM and exit after Ctrl-C


@contextlib.contextmanager
def _connected(host: Host) -> Iterator[Connection]:
    if _STOPPING.is_set():
        raise KernlabError(f"host {host.name}: not started (interrupted)", "run the matrix again")
    conn = open_connection(host)
    try:
        yield conn
    finally:
        conn.close()


def interrupt_all() -> None:
    """Ctrl-C: send SIGINT to every host's ``./kl`` process group, as a Ctrl-C there would.

    Each host's kernlab then stops its VM and exits (130); the run threads return when
    it has. Nothing is fetched after an interrupt.
    """
    _STOPPING.set()
    with _RUNNING_LOCK:
        running = list(_RUNNING.items())
    for name, (conn, pid_file) in running:
        reporter().note(f"[{name}] interrupting")
        with contextlib.suppress(Exception):  # a second channel on the same SSH connection
            conn.run(f"kill -INT -- -$(cat {shlex.quote(pid_file)})", hide=True, warn=True,
                     timeout=15, in_stream=False)


def hang_up_all() -> None:
    """Close the connections of hosts still running after the grace period."""
    with _RUNNING_LOCK:
        running = list(_RUNNING.values())
    for conn, _ in running:
        with contextlib.suppress(Exception):
            conn.close()


def _check_platform(conn: Connection, host: Host) -> None:
    system = _run(conn, "uname -sm", "uname")
    if not system.startswith("Linux"):
        raise KernlabError(f"host {host.name} runs {system}, not Linux", "use a Linux host")
    python = conn.run("python3 -c 'import sys; print(sys.version_info >= (3, 11))'", hide=True,
                      warn=True, in_stream=False)
    if python.stdout.strip() != "True":
        raise KernlabError(f"host {host.name} has no Python 3.11 or newer",
                           "use a Debian 12 (or newer) host, or install python3 there")


def remote_env(host: Host, workdir: str, remote_out: str,
               experiments_env: dict[str, str] | None = None) -> dict[str, str]:
    """Where the host keeps builds, images and caches (kept across runs), where the run's
    experiments from outside the checkout were shipped, then the hosts file's env."""
    return {
        "KERNLAB_WORK": f"{workdir}/kernels", "KERNLAB_STATE": f"{workdir}/state",
        "KERNLAB_CACHE": f"{workdir}/cache", "KERNLAB_RESULTS": f"{remote_out}/bundles",
        "KERNLAB_PLAIN": "1", "CI": "1",
        **(experiments_env or {}),
        **host.env,
    }


def remote_command(host: Host, tree: str, workdir: str, remote_out: str, kernels: list[str],
                   experiments: list[str], experiments_env: dict[str, str] | None = None
                   ) -> tuple[str, str]:
    """The shell command that runs ``./kl matrix`` on the host, and its pid file.

    It runs in its own session (setsid) and writes its pid, which is also its process
    group id, so a Ctrl-C here can be passed on to the whole group there.
    """
    env = " ".join(f"{k}={shlex.quote(v)}"
                   for k, v in remote_env(host, workdir, remote_out, experiments_env).items())
    pid_file = f"{remote_out}.pid"
    matrix = (f"exec env {env} ./kl matrix --kernels {shlex.quote(','.join(kernels))}"
              f" --experiments {shlex.quote(','.join(experiments))} --out {shlex.quote(remote_out)}/report")
    inner = f"echo $$ > {shlex.quote(pid_file)}; {matrix}"
    return (f"cd {shlex.quote(tree)} && mkdir -p {shlex.quote(remote_out)} && exec setsid -w sh -c "
            f"{shlex.quote(inner)}", pid_file)


def _remote_matrix(conn: Connection, host: Host, tree: str, workdir: str, remote_out: str,
                   kernels: list[str], experiments: list[str], log: Path,
                   experiments_env: dict[str, str]) -> None:
    command, pid_file = remote_command(host, tree, workdir, remote_out, kernels, experiments,
                                       experiments_env)
    reporter().note(f"[{host.name}] {', '.join(kernels)}: running there, log {log}")
    with log.open("a") as sink:
        sink.write(f"$ {command}\n")
        stream = _LogStream(sink, host.name)
        with _RUNNING_LOCK:
            _RUNNING[host.name] = (conn, pid_file)
        try:
            result = conn.run(command, warn=True, hide=False, out_stream=stream, err_stream=stream,
                              timeout=RUN_TIMEOUT, in_stream=False, pty=False)
        finally:
            with _RUNNING_LOCK:
                _RUNNING.pop(host.name, None)
            stream.flush()
    if result.exited not in (0, 1):  # 1: the matrix ran and some cell failed
        raise KernlabError(f"host {host.name}: `./kl matrix` exited {result.exited}; log {log}",
                           "read the log's last lines (the host's own one-line error is there)")


class _LogStream:
    """A file-like sink for fabric: everything to the log, progress lines to the reporter."""

    def __init__(self, sink: Any, name: str) -> None:
        self.sink, self.name, self.partial = sink, name, ""
        self.lock = threading.Lock()

    def write(self, text: str) -> None:
        with self.lock:
            self.sink.write(text)
            self.partial += text
            *lines, self.partial = self.partial.split("\n")
        for line in lines:
            shown = without_stamp(line.strip()).lstrip()  # the host's kernlab writes plain, timestamped lines
            if shown.startswith(PROGRESS_PREFIXES):
                reporter().note(f"[{self.name}] {shown}")

    def flush(self) -> None:
        self.sink.flush()


def fetch_run(conn: Connection, remote_out: str, local_dir: Path) -> dict[str, Any] | None:
    """Copy the host's run directory back (tar over SFTP, extracted safely); its matrix.json."""
    archive = f"{remote_out}.tar.gz"
    packed = conn.run(f"test -d {shlex.quote(remote_out)} && tar -czf {shlex.quote(archive)} "
                      f"-C {shlex.quote(remote_out)} .", hide=True, warn=True, in_stream=False)
    if packed.exited != 0:
        return None
    with tempfile.TemporaryDirectory(prefix="kernlab-fetch-") as tmp:
        local_archive = Path(tmp) / "run.tar.gz"
        conn.get(archive, str(local_archive))
        conn.run(f"rm -f {shlex.quote(archive)}", hide=True, warn=True, in_stream=False)
        staging = local_dir.with_name(f".{local_dir.name}.part")
        shutil.rmtree(staging, ignore_errors=True)
        with inuse.temporary(staging, f"fetching {local_dir.name}"):
            safe_extract(local_archive, staging)
            shutil.rmtree(local_dir, ignore_errors=True)
            staging.rename(local_dir)
    found = local_dir / "report" / "matrix.json"
    return read_json(found) if found.is_file() else None
