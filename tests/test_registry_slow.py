"""End to end with real artifacts: the lab's 6.1 build, its headers disk and the bookworm image
pushed to a real registry on 127.0.0.1; a fresh area (empty work, state and cache) runs an
experiment that pulls all three instead of building them; a pulled kernel (4.15) rebuilt
from source gives the same bzImage bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from guests import ci_build
from ociregistry import Registry

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, lab_kernel, lab_image):
    """A registry holding the lab kernel (with its headers disk) and image; its address."""
    server = Registry(tmp_path_factory.mktemp("registry")).start()
    address = f"{server.host}/kernlab"
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "push", "--kernel",
                           lab_kernel.version, "--image", lab_image.recipe, "--registry", address],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    yield address
    server.stop()


def fresh_env(tmp: Path, address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNLAB_") or k == "KERNLAB_ACCEL"}
    for name in ("work", "state", "cache", "results"):
        (tmp / name).mkdir()
    env.update(KERNLAB_WORK=str(tmp / "work"), KERNLAB_STATE=str(tmp / "state"),
               KERNLAB_CACHE=str(tmp / "cache"), KERNLAB_RESULTS=str(tmp / "results"),
               KERNLAB_REGISTRY=address, KERNLAB_PLAIN="1")
    return env


def test_a_fresh_area_pulls_kernel_headers_and_image_and_the_experiment_passes(
        filled: str, tmp_path: Path, vm_name) -> None:
    env = fresh_env(tmp_path, filled)
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "run-experiment", "readiter",
                           "--kernel", "6.1", "--vm-name", vm_name("pulled")], env=env,
                          capture_output=True, text=True, timeout=1800)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    for what in ("pulled kernel build 6.1-", "pulled headers disk 6.1-", "pulled image bookworm-"):
        assert what in log
    assert "make bzImage" not in log and "mmdebstrap" not in log and "mke2fs" not in log
    assert not (tmp_path / "work" / "src").exists()
    manifest = json.loads(next((tmp_path / "results").rglob("manifest.json")).read_text())
    assert set(manifest["artifacts"]) == {"kernel", "kheaders", "image"}
    assert manifest["artifacts"]["kernel"] == manifest["build"]["pulled"]["digest"]


def test_a_pulled_kernel_rebuilt_from_source_is_the_same_bytes(filled: str, tmp_path: Path) -> None:
    """4.15 (a tarball source, the toolchain backports, kernlab's -fmacro-prefix-map): pushed,
    pulled into a fresh area and rebuilt there. 6.1's rebuild in a fresh area is the pack's
    offline reproduction (tests/test_pack.py), from a Debian .deb; 4.15 builds in half the time."""
    pushed = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "push", "--kernel",
                             ci_build("4.15").version, "--registry", filled],
                            capture_output=True, text=True, timeout=1800)
    assert pushed.returncode == 0, pushed.stderr
    env = fresh_env(tmp_path, filled)
    env.update({k: v for k, v in os.environ.items()
                if k in ("KERNLAB_LOCAL_KERNELS", "KERNLAB_CCACHE_SHARE")})
    env["KERNLAB_CACHE"] = os.environ.get("KERNLAB_CACHE", str(Path.home() / ".cache" / "kernlab"))  # ccache
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "build-kernel", "--version",
                           "4.15", "--rebuild-check"], env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr
    assert "bzImage identical to its rebuild from source, sha256 " in done.stdout
    assert "pulled kernel build 4.15-" in done.stdout + done.stderr
    scratch = tmp_path / "work" / "rebuild-check"
    assert not scratch.exists() or not any(scratch.iterdir()), "an identical rebuild is removed"
