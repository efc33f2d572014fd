"""TLS clients of swift-dtm for the TLS interop tests. Each command prints one JSON line.

CERT and KEY are a client certificate and key (PEM files) or "-" for none.

  grpc TARGET CA CERT KEY OPS
      grpcio over TLS (grpc.ssl_channel_credentials): runs OPS, a JSON list of
      {"rpc": "Submit"|"NewGid", "req": {...}, "timeout": s} (req as e2e_client.py takes it);
      prints {"results": [{"code", "details", "gid"?}, ...]}
  https METHOD URL CA CERT KEY [BODY]
      urllib over TLS; prints {"status", "body"} or {"error"}
  wait BASE CA CERT KEY GID TIMEOUT
      polls BASE/api/dtmsvr/query?gid=GID over TLS until the transaction is succeed or failed;
      prints {"status", "branches": [status, ...], "rollback_reason"} or {"error"}
  peer HOST PORT CA CERT KEY ALPN
      one TLS connection with the ssl module (ALPN protocol ALPN), then a read of up to one
      record: prints {"serial", "cn", "alpn", "read": "data"|"eof"|"error: ..."} or
      {"error": "..."} when the handshake fails
  hold TARGET HTTPS_HOSTPORT CA GOFILE OUTFILE
      opens a grpcio channel and a keep-alive https connection, makes one call on each, prints
      "ready"; when GOFILE exists makes one more call on each (the same connections) and
      writes {"grpc": code, "https": status, "same_socket": bool, "serial_before",
      "serial_after"} to OUTFILE
"""
import json
import os
import signal
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
import http.client

import grpc
from google.protobuf import empty_pb2

from e2e_client import dtm_request
from stubs import load

dtmgimp_pb2, dtmgimp_pb2_grpc = load("dtmgimp")


def read(path):
    return None if path == "-" else open(path, "rb").read()


def ssl_context(ca, cert, key, alpn=None):
    context = ssl.create_default_context(cafile=ca)
    if cert != "-":
        context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols([alpn])
    return context


def channel(target, ca, cert, key):
    credentials = grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key),
                                               certificate_chain=read(cert))
    return grpc.secure_channel(target, credentials)


def grpc_ops(target, ca, cert, key, ops):
    stub = dtmgimp_pb2_grpc.DtmStub(channel(target, ca, cert, key))
    results = []
    for op in ops:
        try:
            if op["rpc"] == "NewGid":
                reply = stub.NewGid(empty_pb2.Empty(), timeout=op.get("timeout", 15))
                results.append({"code": "OK", "details": "", "gid": reply.Gid})
            else:
                getattr(stub, op["rpc"])(dtm_request(op["req"]), timeout=op.get("timeout", 15))
                results.append({"code": "OK", "details": ""})
        except grpc.RpcError as error:
            results.append({"code": error.code().name, "details": error.details() or ""})
    return {"results": results}


def https(method, url, ca, cert, key, body=None):
    request = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15, context=ssl_context(ca, cert, key)) as response:
            return {"status": response.status, "body": response.read().decode()}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": error.read().decode()}
    except Exception as error:  # the test reads the reason
        return {"error": repr(error)}


def wait(base, ca, cert, key, gid, timeout):
    deadline = time.time() + float(timeout)
    last = None
    while time.time() < deadline:
        last = https("GET", f"{base}/api/dtmsvr/query?gid={gid}", ca, cert, key)
        if last.get("status") == 200:
            answer = json.loads(last["body"])
            status = (answer.get("transaction") or {}).get("status")
            if status in ("succeed", "failed"):
                return {"status": status, "branches": [b["status"] for b in answer.get("branches") or []],
                        "rollback_reason": answer["transaction"].get("rollback_reason", "")}
        time.sleep(0.1)
    return {"error": f"not finished within {timeout} s: {last}"}


def serial_of(sock):
    return sock.getpeercert()["serialNumber"].upper()


def peer(host, port, ca, cert, key, alpn):
    context = ssl_context(ca, cert, key, alpn)
    raw = socket.create_connection((host, int(port)), timeout=15)
    try:
        sock = context.wrap_socket(raw, server_hostname=host)
    except (ssl.SSLError, OSError) as error:
        raw.close()
        return {"error": repr(error)}
    with sock:
        result = {"serial": serial_of(sock), "cn": dict(x[0] for x in sock.getpeercert()["subject"])["commonName"],
                  "alpn": sock.selected_alpn_protocol()}
        try:
            if alpn == "h2":
                # The client preface: the server answers with its SETTINGS.
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
            else:
                sock.sendall(b"GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            result["read"] = "data" if sock.recv(1) else "eof"
        except (ssl.SSLError, OSError) as error:
            result["read"] = "error: " + repr(error)
        return result


def hold(target, https_hostport, ca, gofile, outfile):
    # The test stops us with SIGTERM, which the parent may have left ignored or blocked.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    stub = dtmgimp_pb2_grpc.DtmStub(channel(target, ca, "-", "-"))
    host, port = https_hostport.rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), timeout=15, context=ssl_context(ca, "-", "-"))

    def http_get():
        connection.request("GET", "/api/dtmsvr/newGid")
        response = connection.getresponse()
        response.read()
        return response.status

    stub.NewGid(empty_pb2.Empty(), timeout=15)
    http_get()
    sock_before = connection.sock
    serial_before = serial_of(connection.sock)
    print("ready", flush=True)
    deadline = time.time() + 300
    while not os.path.exists(gofile):
        if time.time() > deadline:
            sys.exit("no go file within 300 s")
        time.sleep(0.05)
    result = {}
    try:
        stub.NewGid(empty_pb2.Empty(), timeout=15)
        result["grpc"] = "OK"
    except grpc.RpcError as error:
        result["grpc"] = error.code().name + ": " + (error.details() or "")
    try:
        result["https"] = http_get()
    except Exception as error:
        result["https"] = repr(error)
    result["same_socket"] = connection.sock is sock_before
    result["serial_before"] = serial_before
    result["serial_after"] = serial_of(connection.sock) if connection.sock else None
    with open(outfile + ".tmp", "w") as out:
        json.dump(result, out)
    os.rename(outfile + ".tmp", outfile)
    sys.stdin.read()


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "grpc":
        result = grpc_ops(*args[:4], json.loads(args[4]))
    elif command == "https":
        result = https(*args)
    elif command == "wait":
        result = wait(*args)
    elif command == "peer":
        result = peer(*args)
    elif command == "hold":
        hold(*args)
        return
    else:
        result = {"error": f"unknown command {command}"}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
