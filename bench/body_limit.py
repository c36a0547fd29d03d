"""An oversized chunked request body against a running API process, and that process's peak memory.

`make bench` reports how far the API's peak resident memory (VmHWM) rises under a 200 MB chunked body with
no Content-Length (`api_peak_rss_growth_mib`); tests/security/test_body_limits.py asserts the same on a
process of its own. The API counts body bytes as they stream and answers 413 at its limit without reading
further (services/app.py), so the figure stays near zero: before, such a body took the process from 145 MB
to a 936 MB peak.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

CHUNK = 256 * 1024


def peak_rss_mib(pid: int) -> float:
    """A process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmHWM for process {pid}")


def send_chunked(host: str, port: int, path: str, total: int) -> tuple[int, int]:
    """POST up to `total` bytes of JSON-looking filler as a chunked body over a raw socket, stopping as soon
    as the server answers or closes; returns the answer's status (0 for none) and how many bytes were sent."""
    sent = 0
    chunk = b" " * CHUNK
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    answer = b""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.setblocking(False)
        try:
            while sent < total and not answer:
                try:
                    answer = sock.recv(65536)
                    if answer:
                        break
                except BlockingIOError:
                    pass
                try:
                    sock.sendall(frame)
                except BlockingIOError:
                    time.sleep(0.005)
                    continue
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.setblocking(True)
        sock.settimeout(10)
        try:
            while b"\r\n" not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent
