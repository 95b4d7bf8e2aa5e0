#!/bin/sh
# cpustat writes scaling_max_freq to make cpu_frequency events, but a QEMU guest has
# no cpufreq: in a private mount namespace, put a writable stand-in where it looks.
# cpustat prints its table at once (its SIGINT handler is set by then), every 5 s, and
# once more on SIGINT. Stop it with SIGINT one second after its first table (at most
# ${1:-12} s after the start), so the last table counts that second of idle time.
if [ -z "${CPUSTAT_NS:-}" ]; then CPUSTAT_NS=1 exec unshare -m "$0" "$@"; fi
set -e
CPU0=/sys/devices/system/cpu/cpu0
mount -t tmpfs kernlab-cpufreq "$CPU0"
mkdir -p "$CPU0/cpufreq" && echo 0 > "$CPU0/cpufreq/scaling_max_freq"
out=$(mktemp)
stdbuf -oL ./cpustat >"$out" 2>&1 &
pid=$!
set +e
tenths=0
while [ "$tenths" -lt $((${1:-12} * 10)) ] && kill -0 "$pid" 2>/dev/null &&
      ! grep -q "CPU states statistics:" "$out"; do
  sleep 0.1; tenths=$((tenths + 1))
done
sleep 1
kill -INT "$pid" 2>/dev/null
wait "$pid"; status=$?
cat "$out"
exit "$status"
