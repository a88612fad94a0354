#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A hostile FHIR server for scripts/load/hostile.sh (issue 13). Loopback only.

Every GET under /fhir/ answers 200 with a search Bundle of about PAGE_BYTES of small JSON
numbers ("x": [1,1,1,...], cheap on the wire, 30-80 bytes each once parsed) and a `next` link
to another page on the same server, for ever. It counts the pages it served and prints the count
when it stops (and at GET /served), which it does by itself after --seconds (default 300), so a forgotten server
never outlives the measurement.

    scripts/load/hostile_fhir.py --port 18090 [--page-bytes 1000000] [--seconds 300]
"""

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True, help="0: any free port (printed)")
    ap.add_argument("--page-bytes", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=300.0)
    args = ap.parse_args()
    numbers = ("1," * (args.page_bytes // 2)).rstrip(",").encode()
    base = f"http://127.0.0.1:{args.port}/fhir"
    served = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/served":  # the pages served so far, for the script
                body = str(served[0]).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if not self.path.startswith("/fhir/"):
                self.send_error(404)
                return
            with lock:
                served[0] += 1
                page = served[0]
            body = (
                b'{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"'
                + f"{base}/Observation?page={page}".encode()
                + b'"}],"x":['
                + numbers
                + b"]}"
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the service stopped reading: what the budget is for

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    # The port bound (the system's choice with --port 0), on one line for scripts/lib.sh.
    port = server.server_address[1]
    base = f"http://127.0.0.1:{port}/fhir"
    print(f"LISTENING {port}", flush=True)
    server.daemon_threads = True
    timer = threading.Timer(args.seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    print(f"hostile_fhir: serving {base} for at most {args.seconds:.0f} s", flush=True)
    try:
        server.serve_forever()
    finally:
        timer.cancel()
        server.server_close()
        print(f"hostile_fhir: served {served[0]} pages", flush=True)


if __name__ == "__main__":
    main()
