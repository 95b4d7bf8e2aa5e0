"""A fake "kernel" tree that kernlab's real build pipeline builds in a second or two.

Its Makefile answers the targets kernlab runs (tinyconfig, olddefconfig, bzImage,
modules, headers_install) by writing the outputs a build record names, after sleeping
FAKE_MAKE_SECONDS in bzImage (so that two builds overlap) and printing FAKE_MAKE_WARN (a
compiler's warning, as make's log would hold it); merge_config.sh concatenates
the fragments, so every requested option verifies. The lock and interrupt tests run the
real `invoke build-kernel` on it without compiling a kernel.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

MAKEFILE = """\
VERSION = 9
PATCHLEVEL = 9
SUBLEVEL = 0
EXTRAVERSION =
O ?= .
.PHONY: tinyconfig olddefconfig bzImage modules headers_install
tinyconfig:
\tmkdir -p $(O) && : > $(O)/.config
olddefconfig:
\t@true
bzImage:
\techo "fake make pid $$$$ starts bzImage"
\t@if [ -n "$${FAKE_MAKE_WARN}" ]; then echo "$${FAKE_MAKE_WARN}"; fi
\tsleep $${FAKE_MAKE_SECONDS:-0}
\tmkdir -p $(O)/arch/x86/boot $(O)/include/config
\techo fake-vmlinux > $(O)/vmlinux
\techo "ffffffff81000000 T _text" > $(O)/System.map
\techo 9.9.0-kernlab > $(O)/include/config/kernel.release
\techo "fake bzImage $$$$" > $(O)/arch/x86/boot/bzImage
modules:
\t@true
headers_install:
\tmkdir -p $(O)/usr/include/linux && : > $(O)/usr/include/linux/bpf.h
"""

MERGE_CONFIG = """\
#!/bin/sh
# merge_config.sh -m -O OBJ OBJ/.config FRAGMENT...: the fragments, concatenated.
while [ $# -gt 0 ]; do
    case "$1" in -m) shift ;; -O) out=$2; shift 2 ;; *) break ;; esac
done
shift  # the base .config
cat "$@" >> "$out/.config"
"""


def tarball(path: Path, padding: int = 0) -> str:
    """Write the fake tree as ``path`` (.tar.gz, top directory linux-9.9/); returns its sha256.

    ``padding`` bytes of incompressible data make it as large as a download test needs.
    """
    import random

    blob = random.Random(9).randbytes(padding)
    with tarfile.open(path, "w:gz") as tar:
        for name, data, mode in (("Makefile", MAKEFILE.encode(), 0o644),
                                 ("scripts/kconfig/merge_config.sh", MERGE_CONFIG.encode(), 0o755),
                                 ("padding.bin", blob, 0o644)):
            info = tarfile.TarInfo(f"linux-9.9/{name}")
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def catalog(configs: Path, source: dict, patches: tuple[str, ...] = ()) -> None:
    """A catalog in ``configs`` whose one kernel, 9.9, comes from ``source`` (a catalog source),
    patched by the series directories ``patches`` (absolute paths, see ``patch_series``)."""
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "fake.config").write_text("CONFIG_MODULES=y\nCONFIG_BPF=y\n")
    (configs / "kernels.yaml").write_text(yaml.safe_dump({
        "mirror": "http://127.0.0.1:9",
        "default": "9.9",
        "kernels": {"9.9": {"release": "9.9", "description": "a fake kernel for lock tests",
                            "sources": [source],
                            **({"patches": list(patches)} if patches else {}),
                            "config": {"base": "tinyconfig", "fragments": ["fake.config"]},
                            "compiler": "gcc"}},
    }))


def patch_series(directory: Path, line: str) -> Path:
    """A series directory with one patch, note.patch, that adds NOTE (holding ``line``) to the tree."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "series").write_text("# written for: 9.9\nnote.patch\n")
    (directory / "note.patch").write_text(f"--- /dev/null\n+++ b/NOTE\n@@ -0,0 +1 @@\n+{line}\n")
    return directory


def environ(tmp: Path, **extra: str) -> dict[str, str]:
    """This process's environment with every kernlab area (work, cache, state, configs,
    lock) moved under ``tmp``, plain output, and ``extra`` (FAKE_MAKE_SECONDS=...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNLAB_")}
    env.update({"KERNLAB_WORK": str(tmp / "work"), "KERNLAB_CACHE": str(tmp / "cache"),
                "KERNLAB_STATE": str(tmp / "state"), "KERNLAB_CONFIGS": str(tmp / "configs"),
                "KERNLAB_LOCK": str(tmp / "kernlab.lock"), "KERNLAB_PLAIN": "1", **extra})
    return env


def cli(env: dict[str, str], *args: str, code: int = 0) -> str:
    """`invoke ARGS` of this checkout in ``env``: its exit status must be ``code``, no traceback;
    stdout and stderr together."""
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(Path(__file__).resolve().parents[1]),
                           *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout + done.stderr
