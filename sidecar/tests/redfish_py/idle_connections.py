"""Idle Redfish connections are closed by the BMC after its idle timeout, not before.

Usage: idle_connections.py URL USER PASSWORD VM H1_COUNT H2_COUNT TIMEOUT_SECONDS
Opens H1_COUNT TLS connections that each make one HTTP/1.1 keep-alive GET and then stay
silent, and H2_COUNT that speak HTTP/2 (ALPN h2, the client preface and SETTINGS) and then
stay silent. Prints one line per kind: how many the BMC closed, and the shortest and longest
time from the client's last request to the close.
"""
import selectors
import socket
import ssl
import sys
import time
from urllib.parse import urlparse

url, user, password, vm, h1_count, h2_count, timeout = sys.argv[1:8]
h1_count, h2_count, timeout = int(h1_count), int(h2_count), float(timeout)
target = urlparse(url)
host, port = target.hostname, target.port


def context(alpn):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


H1 = context("http/1.1")
H2 = context("h2")


def read_response(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, "closed before answering"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = conn.recv(65536)
        assert chunk, "closed inside the body"
        rest += chunk
    assert head.startswith(b"HTTP/1.1 200"), head[:40]


def open_h1():
    conn = H1.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
    conn.sendall(f"GET /redfish/v1 HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode())
    read_response(conn)
    return conn


def open_h2():
    conn = H2.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
    assert conn.selected_alpn_protocol() == "h2", conn.selected_alpn_protocol()
    # Client preface, an empty SETTINGS frame; then the server's SETTINGS arrive.
    conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    assert conn.recv(65536), "no SETTINGS from the server"
    return conn


selector = selectors.DefaultSelector()
last = {}
kinds = {}
for kind, count, opener in (("HTTP/1.1", h1_count, open_h1), ("HTTP/2", h2_count, open_h2)):
    for _ in range(count):
        conn = opener()
        conn.setblocking(False)
        last[conn] = time.monotonic()
        kinds[conn] = kind
        selector.register(conn, selectors.EVENT_READ)

closed = {}
deadline = time.monotonic() + timeout * 4 + 60
while len(closed) < len(last) and time.monotonic() < deadline:
    for key, _ in selector.select(timeout=1):
        conn = key.fileobj
        try:
            data = conn.recv(65536)
        except ssl.SSLWantReadError:
            continue
        except (ssl.SSLError, OSError):
            data = b""
        if data:
            # The server's own frames (a SETTINGS ack, a GOAWAY at close) are not the
            # client's traffic: the idle time counts from the client's last request.
            continue
        closed[conn] = time.monotonic()
        selector.unregister(conn)

for kind in ("HTTP/1.1", "HTTP/2"):
    mine = [c for c in last if kinds[c] == kind]
    lived = [closed[c] - last[c] for c in mine if c in closed]
    shortest = min(lived) if lived else -1
    longest = max(lived) if lived else -1
    print(f"{kind}: opened {len(mine)} closed {len(lived)} shortest {shortest:.2f} longest {longest:.2f}")
