#!/usr/bin/env python3
"""A flood of CDS client JWTs with valid-looking claims and bad signatures, from one address.

Measures what issue 13 saw (each such token costs the service a signature check): the
statuses the flood gets, its rate, the service's CPU time over the run, and the latency of
/healthz probed every 100 ms meanwhile.

    scripts/load/bad_tokens.py --url http://127.0.0.1:18080 --pid PID --iss ISS --kid KID \
        [--connections 16] [--seconds 10]

The service must trust ISS (any key with KID); the tokens' aud is URL + the service path.
Standard library only.
"""
import argparse, asyncio, base64, json, os, time, collections

SERVICE = "/cds-services/iort-coverage"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(iss: str, kid: str, aud: str) -> str:
    now = int(time.time())
    header = {"alg": "ES384", "typ": "JWT", "kid": kid}
    claims = {"iss": iss, "sub": "flood", "aud": aud, "iat": now, "exp": now + 300,
              "jti": os.urandom(8).hex()}
    parts = [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()),
             b64(os.urandom(96))]
    return ".".join(parts)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def flood(host, port, request, deadline, counts):
    """Send the request over and over, on a kept-alive connection while the service keeps
    it (an answer before the body was read closes it), else on a new one."""
    reader = writer = None
    while time.monotonic() < deadline:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            writer.close()
            writer = None
            counts["closed before answering"] += 1
            continue
        status = status_line.split()[1].decode()
        length, close = 0, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            if name.strip().lower() == b"connection" and b"close" in value.lower():
                close = True
        if length:
            await reader.readexactly(length)
        counts[status] += 1
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def probe(host, port, deadline, latencies):
    while time.monotonic() < deadline:
        start = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        await reader.read()
        writer.close()
        latencies.append((time.monotonic() - start) * 1000)
        await asyncio.sleep(0.1)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--iss", required=True)
    ap.add_argument("--kid", required=True)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    host, port = a.url.split("//")[1].split(":")
    port = int(port)
    jwt = token(a.iss, a.kid, a.url + SERVICE)
    body = b"{}"
    request = (f"POST {SERVICE} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {jwt}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    counts, latencies = collections.Counter(), []
    cpu0, t0 = cpu_seconds(a.pid), time.monotonic()
    deadline = t0 + a.seconds
    await asyncio.gather(probe(host, port, deadline, latencies),
                         *(flood(host, port, request, deadline, counts) for _ in range(a.connections)))
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(a.pid) - cpu0
    latencies.sort()
    total = sum(counts.values())
    print(f"  {total} requests in {elapsed:.1f} s ({total / elapsed:.0f}/s), statuses {dict(counts)}")
    print(f"  service CPU {cpu:.1f} s over {elapsed:.1f} s ({100 * cpu / elapsed:.0f}% of one core)")
    if latencies:
        p50 = latencies[len(latencies) // 2]
        print(f"  /healthz during the flood: {len(latencies)} probes, p50 {p50:.1f} ms, max {latencies[-1]:.1f} ms")


asyncio.run(main())
