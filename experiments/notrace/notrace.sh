#!/bin/sh
# A kprobe on copy_page_to_iter through tracefs, as the thesis asked for it by hand.
set -u
T=/sys/kernel/tracing
[ -w "$T/kprobe_events" ] || T=/sys/kernel/debug/tracing
if [ ! -w "$T/kprobe_events" ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || mount -t debugfs nodev /sys/kernel/debug
    T=/sys/kernel/tracing
    [ -w "$T/kprobe_events" ] || T=/sys/kernel/debug/tracing
fi
echo "tracefs: $T"
if echo 'p:kernlab_notrace copy_page_to_iter' >> "$T/kprobe_events" 2>/tmp/notrace.err; then
    # an instance of its own: kernlab's capture drains the main buffer through trace_pipe
    I="$T/instances/kernlab_notrace"
    mkdir "$I"
    echo 1 > "$I/events/kprobes/kernlab_notrace/enable"
    md5sum notrace.sh > /dev/null  # read(2): filemap_read copies through copy_page_to_iter
    echo 0 > "$I/events/kprobes/kernlab_notrace/enable"
    hits=$(grep -c 'kernlab_notrace:' "$I/trace")
    [ "$hits" -gt 0 ] && echo "fired: kernlab_notrace ($hits hits)"
    grep -m 1 'kernlab_notrace:' "$I/trace"
    rmdir "$I"
    echo '-:kernlab_notrace' >> "$T/kprobe_events"
    echo "kprobe copy_page_to_iter: accepted"
else
    echo "kprobe copy_page_to_iter: refused ($(tr -d '\n' < /tmp/notrace.err))"
    dmesg | grep 'Could not probe notrace function' | tail -n 1 | sed 's/^\[[ 0-9.]*\] //'
fi
