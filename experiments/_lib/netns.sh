#!/bin/sh
# kernlab: the network experiments' test bed, as xdp-tutorial's testenv sets it up: a veth
# pair kl0 (here, 10.11.0.1/24) <-> kl1 (in namespace kl, 10.11.0.2/24 and 10.11.0.3/24),
# so traffic comes from two sources. Started anew each time (a reused VM may hold one).
#   sh lib/netns.sh        make it
#   sh lib/netns.sh down   remove it (the suite runs the next experiment in the same VM)
set -eu
ip netns del kl 2>/dev/null || true
ip link del kl0 2>/dev/null || true
if [ "${1:-}" = down ]; then
    echo "netns: kl and kl0 removed"
    exit 0
fi
ip netns add kl
ip link add kl0 type veth peer name kl1
ip link set kl1 netns kl
ip addr add 10.11.0.1/24 dev kl0
ip link set kl0 up
ip -n kl addr add 10.11.0.2/24 dev kl1
ip -n kl addr add 10.11.0.3/24 dev kl1
ip -n kl link set kl1 up
ip -n kl link set lo up
echo "netns: kl0 10.11.0.1 <-> kl1 (netns kl) 10.11.0.2, 10.11.0.3"
