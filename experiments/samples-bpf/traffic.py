#!/usr/bin/env python3
"""Send small UDP datagrams over loopback (for tracex1, which watches `lo`)."""

import socket
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + seconds
sent = 0
while time.monotonic() < end:
    sock.sendto(b"kernlab" * 8, ("127.0.0.1", 9))
    sent += 1
    time.sleep(0.2)
print(f"traffic: sent {sent} datagrams")
