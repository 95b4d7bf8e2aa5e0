"""Network experiments, fast: the `network:` key, the hooks the probe atlas says it does not
check, the matrix's networking section, and the XDP and tc programs themselves run on this
machine's own kernel (real BPF_PROG_TEST_RUN; a real veth pair into a namespace, inside a
private network and mount namespace, so nothing is left on the host). The same programs in
guests of every lab kernel: tests/test_network_slow.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_experiment_format import load_error

from kernlab.compare import network_report
from kernlab.compare.matrix import NA, PASS, Cell, Matrix, load_matrix, write_report
from kernlab.experiments.probecheck import network_hooks, network_note
from kernlab.experiments.suite import load_experiment

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "experiments" / "_lib"
NETWORK = {"xdp-ipstats": "xdp generic", "xdp-ipstats-native": "xdp native",
           "xdp-ipstats-testrun": "xdp test-run", "xdp-ipstats-bcc": "xdp generic (bcc)",
           "xdp-filter": "xdp generic (xdp-tools)", "tc-ipstats": "tc ingress+egress"}

SPEC = """\
title: t
description: d
network: {NETWORK}
run:
  steps:
    - name: w
      cmd: echo hi
expect:
  - in: step:w
    contains: hi
"""


def test_the_network_experiments_declare_their_hook_and_mode():
    for name, label in NETWORK.items():
        assert load_experiment(name).network.label() == label
    assert load_experiment("readiter").network is None


@pytest.mark.parametrize(("value", "message"), [
    ("{hook: ebpf, mode: generic}", "network.hook: must be one of xdp, tc, got 'ebpf'"),
    ("{hook: xdp}", "network.mode: is required"),
    ("{hook: xdp, mode: generic, dev: kl0}", "unknown key 'dev' in network; allowed: hook, mode"),
    ("xdp", "network: must be a dict"),
])
def test_a_bad_network_key_names_file_and_key(tmp_path, value, message):
    assert message in load_error(tmp_path, SPEC.replace("{NETWORK}", value))


def test_the_hooks_come_from_the_sources_and_the_atlas_says_it_does_not_check_them():
    assert network_hooks(load_experiment("xdp-ipstats")) == ["XDP"]  # SEC("xdp") in lib/ipstats.bpf.c
    assert network_hooks(load_experiment("tc-ipstats")) == ["tc"]  # SEC("tc") in tc.bpf.c
    assert network_hooks(load_experiment("xdp-ipstats-bcc")) == ["XDP"]  # attach_xdp in ipstats.py
    assert network_hooks(load_experiment("readiter")) == []
    note = network_note(load_experiment("tc-ipstats"))
    assert note.startswith("its tc programs attach to a network device") and "does not check" in note


def _matrix() -> Matrix:
    kernels, names = ["4.15", "6.1"], ["readiter", "xdp-ipstats", "xdp-ipstats-native"]
    matrix = Matrix(kernels, names, network=network_report.network_hooks(names))
    for kernel in kernels:
        for name in names:
            matrix.cells[(kernel, name)] = Cell(kernel, name, PASS)
    matrix.cells[("4.15", "xdp-ipstats-native")] = Cell(
        "4.15", "xdp-ipstats-native", NA, "needs native XDP on veth (Linux 4.19)")
    return matrix


def test_the_matrix_report_has_a_networking_section_that_survives_a_rerender(tmp_path):
    written = write_report(_matrix(), tmp_path)
    text = written["markdown"].read_text()
    assert "## Networking" in text
    assert "| xdp native | xdp-ipstats-native | n/a: needs native XDP on veth (Linux 4.19) | works |" in text
    assert "| xdp generic | xdp-ipstats | works | works |" in text
    assert "readiter |" not in text.split("## Networking")[1].split("##")[0]
    assert json.loads(written["json"].read_text())["network"]["xdp-ipstats"] == "xdp generic"
    again = load_matrix(written["json"])  # --rerender and --merge read matrix.json, not the suite
    assert again.network == _matrix().network
    assert "<h2>Networking</h2>" in written["html"].read_text()


def test_a_matrix_without_network_experiments_has_no_networking_section(tmp_path):
    matrix = Matrix(["6.1"], ["readiter"], cells={("6.1", "readiter"): Cell("6.1", "readiter", PASS)})
    assert "Networking" not in write_report(matrix, tmp_path)["markdown"].read_text()


# ---------------------------------------------------------------- the programs on this machine's kernel
@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """lib/ipstats.bpf.o, tc-ipstats's tc.bpf.o and the loader, compiled as the experiment
    build compiles them (clang -target bpf, gcc -lbpf), against this machine's headers."""
    for tool in ("clang", "gcc"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (`./kl setup` installs it)")
    work = tmp_path_factory.mktemp("ipstats")
    shutil.copytree(LIB, work / "lib")
    shutil.copy(ROOT / "experiments" / "tc-ipstats" / "tc.bpf.c", work)
    bpf = ["clang", "-O2", "-g", "-Wall", "-target", "bpf", "-D__TARGET_ARCH_x86", "-DBPF_NO_GLOBAL_DATA",
           "-I.", "-Ilib", "-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu", "-c"]
    for source, out in (("lib/ipstats.bpf.c", "ipstats.bpf.o"), ("tc.bpf.c", "tc.bpf.o")):
        subprocess.run([*bpf, source, "-o", out], cwd=work, check=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-I.", "-Ilib", "-o", "ipstats", "lib/ipstats.c", "-lbpf"],
                   cwd=work, check=True)
    probe = subprocess.run(["./ipstats", "-n", "1", "testrun", "10.0.0.1"], cwd=work, capture_output=True,
                           text=True, check=False)
    if probe.returncode != 0 and "Operation not permitted" in probe.stderr:
        pytest.skip("this machine's kernel does not let the tests load BPF programs (not root?)")
    return work


def test_test_run_passes_the_allowed_source_and_drops_the_blocked_one(built):
    done = subprocess.run(["./ipstats", "-b", "10.11.0.3", "-n", "4", "testrun", "10.11.0.2", "10.11.0.3"],
                          cwd=built, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "test-run from 10.11.0.2: 4 frames of 98 bytes, XDP_PASS" in out
    assert "test-run from 10.11.0.3: 4 frames of 98 bytes, XDP_DROP" in out
    assert "from 10.11.0.2 packets=4 bytes=392 dropped=0" in out
    assert "from 10.11.0.3 packets=4 bytes=392 dropped=4" in out


@pytest.mark.parametrize("args", [["bridge", "kl0"], ["skb"], ["-b", "10.11.0.300", "testrun", "10.0.0.1"],
                                  ["skb", "no-such-dev"]])
def test_a_bad_loader_argument_is_refused_saying_why(built, args):
    done = subprocess.run(["./ipstats", *args], cwd=built, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "ipstats" in done.stderr and "ready" not in done.stdout


def _in_private_netns(built: Path, script: str) -> subprocess.CompletedProcess:
    """``script`` in a new network and mount namespace with its own /run/netns: the veth
    pair and the namespace lib/netns.sh makes vanish with it."""
    wrapper = f"mkdir -p /run/netns && mount -t tmpfs kernlab /run/netns && ip link set lo up && {script}"
    return subprocess.run(["unshare", "--net", "--mount", "sh", "-ec", wrapper], cwd=built,
                          capture_output=True, text=True, check=False, timeout=120)


PINGS = ("ip netns exec kl ping -n -c 5 -i 0.2 -W 5 -I 10.11.0.2 10.11.0.1; "
         "ip netns exec kl ping -n -c 5 -i 0.2 -W 1 -I 10.11.0.3 10.11.0.1 || echo blocked-exit=$?")


@pytest.mark.parametrize(("mode", "args", "reported"), [
    ("skb", "skb kl0", "in skb mode; the kernel reports skb"),
    ("native", "native kl0", "in native mode; the kernel reports native"),
    ("tc", "tc kl0 tc.bpf.o", "attached tc_egress (tc, direct action"),
])
def test_real_traffic_through_a_veth_pair_is_counted_and_the_blocked_source_dropped(built, mode, args,
                                                                                   reported):
    if not shutil.which("ping") or not shutil.which("unshare"):
        pytest.skip("ping (iputils-ping) or unshare is missing: `./kl setup` installs them")
    script = (f"sh lib/netns.sh; ./ipstats -b 10.11.0.3 {args} > loader.log 2>&1 & loader=$!; "
              "for i in $(seq 100); do grep -q 'ipstats: ready' loader.log && break; sleep 0.1; done; "
              f"{PINGS}; kill -INT $loader; wait $loader; cat loader.log")
    done = _in_private_netns(built, script)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "5 packets transmitted, 5 received" in out and "5 packets transmitted, 0 received" in out
    assert "blocked-exit=1" in out and reported in out
    assert "from 10.11.0.2 packets=5 bytes=490 dropped=0" in out
    assert "from 10.11.0.3 packets=5 bytes=490 dropped=5" in out
    if mode == "tc":  # egress: the host's five replies to the allowed source, none to the other
        assert "to 10.11.0.2 packets=5 bytes=490 dropped=0" in out and "to 10.11.0.3" not in out
    assert not Path("/run/netns/kl").exists()  # the namespace went with the test's own


def test_a_stopped_loader_detaches_its_program(built):
    script = ("sh lib/netns.sh > /dev/null; ./ipstats skb kl0 > loader.log 2>&1 & loader=$!; "
              "for i in $(seq 100); do grep -q 'ipstats: ready' loader.log && break; sleep 0.1; done; "
              "ip link show kl0 | grep -c xdpgeneric; kill -INT $loader; wait $loader; "
              "ip link show kl0 | grep -c xdpgeneric || true")
    done = _in_private_netns(built, script)
    assert done.stdout.split() == ["1", "0"], done.stdout + done.stderr


def test_the_test_bed_comes_down_for_the_next_experiment_in_the_vm(built):
    """A suite runs the next experiment in the same VM: `netns.sh down` removes the
    namespace and the veth pair (and `netns.sh` twice in a row makes one, not two)."""
    count = "ip -o link show type veth | wc -l"
    done = _in_private_netns(built, f"sh lib/netns.sh; sh lib/netns.sh; {count}; sh lib/netns.sh down; "
                                    f"ip netns list | wc -l; {count}")
    counts = [line for line in done.stdout.split() if line.isdigit()]
    assert counts == ["1", "0", "0"], done.stdout + done.stderr  # veths, then netns and veths after down
