#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Slow clients for scripts/load/hostile.sh (issue 13). Loopback only, bounded in time.

Each of --conns threads opens a connection to 127.0.0.1:--port, sends a POST declaring
`Content-Length: --declared` (8 MiB) and then one byte of body per second until the service
answers or closes, and starts over, until --seconds have passed. Prints how many connections
were made, the statuses received, and how long the service let a connection trickle.

    scripts/load/slow_body.py --port 8080 [--conns 1] [--seconds 30] [--declared 8388608]
"""

import argparse
import socket
import statistics
import threading
import time
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--declared", type=int, default=8 * 1024 * 1024)
    ap.add_argument("--path", default="/cds-services/iort-coverage")
    args = ap.parse_args()
    end = time.monotonic() + args.seconds
    lock = threading.Lock()
    statuses: Counter = Counter()
    held: list = []

    def one() -> None:
        while time.monotonic() < end:
            started = time.monotonic()
            status = "no answer"
            try:
                s = socket.create_connection(("127.0.0.1", args.port), timeout=2)
                s.sendall(
                    f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {args.declared}\r\n\r\n{{".encode()
                )
                s.settimeout(1.0)
                while time.monotonic() < end:
                    try:
                        data = s.recv(4096)
                    except socket.timeout:
                        s.sendall(b" ")  # one more byte, a second later
                        continue
                    if data:
                        status = data.split(b" ", 2)[1].decode(errors="replace")
                    else:
                        status = "closed"
                    break
                s.close()
            except OSError as e:
                status = type(e).__name__
            with lock:
                statuses[status] += 1
                if status not in ("no answer",):
                    held.append(time.monotonic() - started)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=args.seconds + 10)
    made = sum(statuses.values())
    med = f"{statistics.median(held):.1f}" if held else "-"
    mx = f"{max(held):.1f}" if held else "-"
    print(
        f"slow_body: {args.conns} slow client(s), {made} connections in {args.seconds:.0f} s, "
        f"statuses {dict(statuses)}, held per connection: median {med} s, max {mx} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
