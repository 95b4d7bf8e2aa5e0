#!/bin/sh
# cpustat writes scaling_max_freq to make cpu_frequency events, but a QEMU guest has
# no cpufreq. In a private mount namespace, put a writable stand-in where it looks,
# then run it for a few seconds and stop it with SIGINT (it prints its table on exit).
set -e
CPU0=/sys/devices/system/cpu/cpu0
exec unshare -m sh -c "
  mount -t tmpfs kernlab-cpufreq $CPU0 &&
  mkdir -p $CPU0/cpufreq && echo 0 > $CPU0/cpufreq/scaling_max_freq &&
  timeout --preserve-status -s INT ${1:-12} ./cpustat"
