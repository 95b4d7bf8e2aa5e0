"""The rebuilder's check on a pulled kernel, in a work area of its own (issue 20).

Starts Debian's docker-registry on 127.0.0.1:PORT (storage in AREA/registry), pushes
kernel VERSION from this checkout's work area (`invoke push --kernel VERSION`), then, in
AREA/rebuilder with empty KERNLAB_WORK, KERNLAB_STATE, KERNLAB_CACHE and its own empty
ccache (a rebuilder elsewhere compiles everything itself), times

    invoke build-kernel --version VERSION --rebuild-check

which pulls the kernel, rebuilds it from source in a scratch area and compares the bzImage
byte for byte. Prints the wall time, the exit status and the command's last lines; the
log is AREA/rebuild-check-VERSION.log. The registry is stopped at the end.

    python3 bench/rebuild_check.py 4.15 --area /tmp/rebuild415
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"  # ./kl's venv, where invoke and kernlab are
INVOKE = [str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable), "-m", "invoke", "-r", str(ROOT)]


def start_registry(root: Path, port: int) -> subprocess.Popen:
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("docker-registry is not installed (apt-get install docker-registry)")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    with open(root / "registry.log", "w") as errors:  # the child keeps its own copy of the fd
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=errors)
    time.sleep(1.0)
    if proc.poll() is not None:
        sys.exit(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")
    return proc


def timed(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False).returncode
    return code, round(time.monotonic() - started, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version")
    parser.add_argument("--area", type=Path, required=True)
    parser.add_argument("--port", type=int, default=5110)
    args = parser.parse_args()
    area = args.area.resolve()
    registry = start_registry(area / "registry", args.port)
    address = f"127.0.0.1:{args.port}/kernlab"
    log = area / f"rebuild-check-{args.version}.log"
    try:
        env = {**os.environ, "KERNLAB_PLAIN": "1", "KERNLAB_REGISTRY": address}
        code, seconds = timed([*INVOKE, "push", "--kernel", args.version], env, log)
        print(f"push --kernel {args.version}: exit {code}, {seconds} s")
        if code:
            return code
        fresh = {k: v for k, v in env.items() if k not in ("KERNLAB_WORK", "KERNLAB_STATE", "CCACHE_DIR")}
        fresh.update({name: str(area / "rebuilder" / name.lower()) for name in
                      ("KERNLAB_WORK", "KERNLAB_STATE", "KERNLAB_CACHE", "KERNLAB_RESULTS")})
        code, seconds = timed([*INVOKE, "build-kernel", "--version", args.version, "--rebuild-check"],
                              fresh, log)
        print(f"build-kernel --version {args.version} --rebuild-check (fresh area, empty ccache): "
              f"exit {code}, {seconds} s")
        print("\n".join(log.read_text().splitlines()[-6:]))
        return code
    finally:
        registry.terminate()
        registry.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
