"""Busi services for the end-to-end tests: a grpcio `busi.Busi` server and an HTTP busi server
(DTM's `/api/busi/<Method>` routes) in one process.

Usage: e2e_busi.py --log FILE --control DIR [--remove-on-exit DIR]

Prints one JSON line `{"grpc": <port>, "http": <port>}` once both serve, then nothing more on
stdout; exits when its stdin closes (the test process ended or stopped it).

Every call is appended to the log FILE as one JSON line, written when the call arrives:
  {"t": <unix time>, "transport": "grpc"|"http", "method": "TransOut", "gid", "trans_type",
   "branch_id", "op", "dtm", "amount", "result", "delay", "overlap", "headers": {...}, "http_method", "query"}
gid / trans_type / branch_id / op come from DTM's gRPC metadata (`dtm-*`) or HTTP query params.
"overlap" counts the calls of the same method, gid, branch_id and op still in progress when this
one arrived: anything but 0 means two callers (e.g. two coordinators) ran one branch at once.

Results. For a call of METHOD in transaction GID, the first of these that is set decides:
  1. the control file DIR/<GID>.json (reread on every call), key METHOD: a result string, or a
     list of them used in turn by successive calls (the last one repeats);
  2. for TransOut/TransOutTcc/TransOutXa the request's TransOutResult (HTTP body
     `trans_out_Result`), for TransIn/TransInTcc/TransInXa its TransInResult (`trans_in_result`);
  3. SUCCESS (compensations, confirms and back-checks succeed by default).
Result strings: SUCCESS or "" -> OK / 200; FAILURE -> ABORTED / 409 with message
"reason:<METHOD> insufficient balance"; ONGOING -> FAILED_PRECONDITION / 425;
ONGOING_LEGACY -> ABORTED "ONGOING" / 200 {"dtm_result":"ONGOING"}; UNAVAILABLE -> UNAVAILABLE / 503;
anything else (e.g. ERROR) -> INTERNAL / 500.
The control file's "delay" (seconds, a number or a {METHOD: seconds} map) makes calls slow.
"""
import argparse
import json
import os
import shutil
import sys
import threading
import time
import urllib.parse
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import empty_pb2

from stubs import load

busi_pb2, busi_pb2_grpc = load("busi")

METHODS = ["TransIn", "TransOut", "TransInRevert", "TransOutRevert", "TransInConfirm", "TransOutConfirm",
           "TransInTcc", "TransOutTcc", "TransInXa", "TransOutXa", "QueryPrepared"]
OUT_FIELD = {"TransOut", "TransOutTcc", "TransOutXa"}
IN_FIELD = {"TransIn", "TransInTcc", "TransInXa"}


class Busi:
    def __init__(self, log_path, control_dir):
        self.log = open(log_path, "a", encoding="utf-8")
        self.control_dir = control_dir
        self.lock = threading.Lock()
        self.counts = {}
        self.in_flight = {}

    def control(self, gid):
        if not gid:
            return {}
        path = os.path.join(self.control_dir, os.path.basename(gid) + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def decide(self, method, gid, out_result, in_result):
        """Returns (result, delay) for this call and counts it."""
        control = self.control(gid)
        with self.lock:
            key = (gid, method)
            index = self.counts.get(key, 0)
            self.counts[key] = index + 1
        result = None
        if method in control:
            planned = control[method]
            if isinstance(planned, list):
                result = planned[min(index, len(planned) - 1)] if planned else "SUCCESS"
            else:
                result = planned
        elif method in OUT_FIELD:
            result = out_result
        elif method in IN_FIELD:
            result = in_result
        delay = control.get("delay", 0)
        if isinstance(delay, dict):
            delay = delay.get(method, 0)
        return (result or "SUCCESS"), float(delay or 0)

    def enter(self, entry):
        """Counts the call in flight until `leave`; returns how many of the same key already were."""
        key = (entry["method"], entry["gid"], entry["branch_id"], entry["op"])
        with self.lock:
            overlap = self.in_flight.get(key, 0)
            self.in_flight[key] = overlap + 1
        entry["overlap"] = overlap
        return key

    def leave(self, key):
        with self.lock:
            self.in_flight[key] -= 1
            if not self.in_flight[key]:
                del self.in_flight[key]

    def record(self, entry):
        line = json.dumps(entry, sort_keys=True)
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()


def failure_message(method):
    return f"reason:{method} insufficient balance"


def make_grpc_handler(busi, method):
    def handle(request, context):
        metadata = {}
        for key, value in context.invocation_metadata():
            if key != "user-agent" and not key.startswith("grpc-"):
                metadata[key] = value
        gid = metadata.get("dtm-gid", "")
        result, delay = busi.decide(method, gid, request.TransOutResult, request.TransInResult)
        entry = {"t": time.time(), "transport": "grpc", "method": method, "gid": gid,
                 "trans_type": metadata.get("dtm-trans_type", ""), "branch_id": metadata.get("dtm-branch_id", ""),
                 "op": metadata.get("dtm-op", ""), "dtm": metadata.get("dtm-dtm"), "amount": request.Amount,
                 "result": result, "delay": delay, "headers": metadata}
        key = busi.enter(entry)
        try:
            busi.record(entry)
            if delay > 0:
                time.sleep(delay)
        finally:
            busi.leave(key)
        if result == "SUCCESS":
            return busi_pb2.BusiReply(message="SUCCESS") if method == "QueryPrepared" else empty_pb2.Empty()
        if result == "FAILURE":
            context.abort(grpc.StatusCode.ABORTED, failure_message(method))
        if result == "ONGOING":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "ONGOING")
        if result == "ONGOING_LEGACY":
            context.abort(grpc.StatusCode.ABORTED, "ONGOING")
        if result == "UNAVAILABLE":
            context.abort(grpc.StatusCode.UNAVAILABLE, "busi unavailable")
        context.abort(grpc.StatusCode.INTERNAL, f"injected error {result}")
    return handle


def grpc_servicer(busi):
    servicer = busi_pb2_grpc.BusiServicer()
    for method in METHODS:
        setattr(servicer, method, make_grpc_handler(busi, method))
    return servicer


def make_http_handler(busi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep stdout/stderr quiet
            pass

        def body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def answer(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_call(self):
            url = urllib.parse.urlsplit(self.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
            raw = self.body()
            prefix = "/api/busi/"
            method = url.path[len(prefix):] if url.path.startswith(prefix) else ""
            if method not in METHODS:
                self.answer(404, {"error": f"no route {url.path}"})
                return
            try:
                req = json.loads(raw) if raw else {}
                if not isinstance(req, dict):
                    req = {}
            except ValueError:
                req = {}
            gid = query.get("gid", "")
            result, delay = busi.decide(method, gid, req.get("trans_out_Result", ""), req.get("trans_in_result", ""))
            headers = {k.lower(): v for k, v in self.headers.items()}
            entry = {"t": time.time(), "transport": "http", "method": method, "gid": gid,
                     "trans_type": query.get("trans_type", ""), "branch_id": query.get("branch_id", ""),
                     "op": query.get("op", ""), "dtm": query.get("dtm"), "amount": req.get("amount", 0),
                     "result": result, "delay": delay, "headers": headers, "http_method": self.command,
                     "query": query, "body": raw.decode("utf-8", "replace")}
            key = busi.enter(entry)
            try:
                busi.record(entry)
                if delay > 0:
                    time.sleep(delay)
            finally:
                busi.leave(key)
            if result == "SUCCESS":
                self.answer(200, {"dtm_result": "SUCCESS"})
            elif result == "FAILURE":
                self.answer(409, {"dtm_result": "FAILURE", "message": failure_message(method)})
            elif result == "ONGOING":
                self.answer(425, {"dtm_result": "ONGOING"})
            elif result == "ONGOING_LEGACY":
                self.answer(200, {"dtm_result": "ONGOING"})
            elif result == "UNAVAILABLE":
                self.answer(503, {"error": "busi unavailable"})
            else:
                self.answer(500, {"error": f"injected error {result}"})

        do_GET = handle_call
        do_POST = handle_call

    return Handler


class QuietHTTPServer(ThreadingHTTPServer):
    """A caller that hangs up mid-request (a coordinator killed by the crash tests) is normal."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--remove-on-exit", help="a folder (the test's log and control files) to delete on exit")
    args = parser.parse_args()
    os.makedirs(args.control, exist_ok=True)
    busi = Busi(args.log, args.control)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=128))
    busi_pb2_grpc.add_BusiServicer_to_server(grpc_servicer(busi), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    http = QuietHTTPServer(("127.0.0.1", 0), make_http_handler(busi))
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()

    print(json.dumps({"grpc": grpc_port, "http": http.server_address[1]}), flush=True)
    try:
        sys.stdin.read()  # exits when the test closes our stdin
    finally:
        http.shutdown()
        server.stop(0)
        if args.remove_on_exit:
            shutil.rmtree(args.remove_on_exit, ignore_errors=True)


if __name__ == "__main__":
    main()
