"""Client of the crash-recovery harness: drives a mix of transactions against a coordinator that
keeps dying, as SDKs do, retrying each protocol step while the coordinator is unreachable.

Usage: crash_client.py --addr FILE --busi-grpc HOST:PORT --busi-http HOST:PORT --control DIR
                       --stop FILE --out FILE --prefix GID_PREFIX --seed N [--concurrency N] [--count N]
                       [--kinds saga,msg,...] [--flaky P] [--delay SECONDS] [--rate N]

--addr names a JSON file {"grpc": "host:port", "http": "host:port"} that the driver rewrites each
time it restarts the coordinator; it is read again before every attempt. It may also hold a list
of such objects (several coordinators on one store): attempts then go to them in turn
(round-robin), so the steps of one transaction reach different coordinators and a step that
finds one down is retried on the next. Transactions are started
until --count were started or the --stop file exists; then the client waits for the ones under
way and writes --out: {"transactions": [...]} with, for each transaction,
  {"gid", "kind", "transport", "plan", "flaky", "steps": [{"name", "code", "attempts"}], "finish"}
where code is the last answer of the step ("OK", a gRPC code name, "HTTP_<status>" or "GAVE_UP")
and finish is what the client asked in the end: "submit", "abort", "succeed"/"failed" (workflow)
or null (nothing: a msg left to its back-check, or a step that never got through).

Kinds (gids are PREFIX-<index>-<kind>):
  saga      two steps TransOut, TransIn; plan "ok" or "rollback" (TransIn answers FAILURE)
  csaga     concurrent saga of three steps, custom_data orders {"2": [0, 1]}; plan "ok" or
            "rollback" (step 2's TransIn answers FAILURE)
  msg       Prepare then Submit of two steps; plan "ok"
  msgcheck  Prepare only; the back-check (QueryPrepared) answers SUCCESS (plan "ok") or
            FAILURE (plan "rollback")
  tcc       Prepare, RegisterBranch + try for two branches, Submit; plan "rollback": the second
            try answers FAILURE and the client aborts
  xa        Prepare, RegisterBranch + action for two branches, Submit (plan "ok") or Abort
  workflow  (HTTP) prepareWorkflow, register step 01, step 02 (succeed, or failed then a
            rollback of 01), submit with the final status. A "flaky" one stops after step 01 and
            is finished when the coordinator calls it back (query_prepared is this client's
            callback server), as the workflow SDK resumes one.
Results are injected through payloads and the busi's control files (see e2e_busi.py). About a
third of the transactions (--flaky) are "flaky": one of their branches first answers ERROR or ONGOING.
--kinds limits the mix; --delay makes every busi call of a transaction take up to that many seconds
(chosen per transaction), so that calls overlap the coordinators' leases and kills; --rate starts
at most N transactions a second, so that the load spans a known time. --gates N,M,... with
--gate-dir D: before starting transaction N, wait until the file D/go-N exists (a test disrupts the
coordinators at known points of a load that is certainly still running, however slow the machine).
"""
import argparse
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import http.client
import sys
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format

from stubs import load

dtmgimp_pb2, dtmgimp_pb2_grpc, busi_pb2, busi_pb2_grpc = load("dtmgimp", "busi")

TRANSIENT_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN"}
STEP_DEADLINE = 40.0
KINDS = ["saga", "csaga", "msg", "msgcheck", "tcc", "xa", "workflow"]
# Busi answers (control file entries) of a "flaky" transaction, given its back-check's final answer.
FLAKY = {
    "saga": lambda check: {"TransOut": ["ERROR", "SUCCESS"], "TransOutRevert": ["ONGOING", "SUCCESS"]},
    "csaga": lambda check: {"TransOut": ["ONGOING", "SUCCESS"], "TransOutRevert": ["ERROR", "SUCCESS"]},
    "msg": lambda check: {"TransIn": ["ERROR", "SUCCESS"]},
    "msgcheck": lambda check: {"QueryPrepared": ["ONGOING", check], "TransOut": ["ONGOING", "SUCCESS"]},
    "tcc": lambda check: {"TransInConfirm": ["ERROR", "SUCCESS"], "TransInRevert": ["ONGOING", "SUCCESS"]},
    # The first TransOutXa call is normally the client's own action.
    "xa": lambda check: {"TransOutXa": ["SUCCESS", "ERROR", "SUCCESS"]},
    "workflow": lambda check: {},
}


class Coordinator:
    """The coordinators' current addresses and a gRPC channel to each."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.stubs = {}  # grpc address -> (channel, stub)
        self.turn = 0

    def current(self):
        """(grpc stub, http base URL) of the next coordinator in turn, or None while the driver
        has none up."""
        try:
            with open(self.path, encoding="utf-8") as f:
                addrs = json.load(f)
        except (OSError, ValueError):
            return None
        if isinstance(addrs, dict):
            addrs = [addrs]
        if not addrs:
            return None
        with self.lock:
            live = {addr["grpc"] for addr in addrs}
            for gone in [key for key in self.stubs if key not in live]:
                self.stubs.pop(gone)[0].close()
            addr = addrs[self.turn % len(addrs)]
            self.turn += 1
            if addr["grpc"] not in self.stubs:
                channel = grpc.insecure_channel(addr["grpc"])
                self.stubs[addr["grpc"]] = (channel, dtmgimp_pb2_grpc.DtmStub(channel))
            return self.stubs[addr["grpc"]][1], f"http://{addr['http']}"


def grpc_code(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def http_post(url, body, timeout=5):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return "HTTP_200" if response.status == 200 else f"HTTP_{response.status}"
    except urllib.error.HTTPError as error:
        error.read()
        return f"HTTP_{error.code}"
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException, TimeoutError, OSError):
        return "CONNECT_ERROR"


def transient(code):
    return code in TRANSIENT_GRPC or code in ("CONNECT_ERROR", "HTTP_503", "NO_COORDINATOR")


class Client:
    def __init__(self, args):
        self.args = args
        self.coordinator = Coordinator(args.addr)
        self.busi_channel = grpc.insecure_channel(args.busi_grpc)
        self.busi = busi_pb2_grpc.BusiStub(self.busi_channel)
        self.lock = threading.Lock()
        self.workflows = {}
        self.abandoned = set()
        self.resuming = set()
        self.callbacks = self.serve_callbacks()

    # Branch URLs and payloads -------------------------------------------------------------

    def url(self, method, transport):
        if transport == "grpc":
            return f"{self.args.busi_grpc}/busi.Busi/{method}"
        return f"http://{self.args.busi_http}/api/busi/{method}"

    @staticmethod
    def payload(transport, trans_in=""):
        if transport == "grpc":
            return busi_pb2.ReqGrpc(Amount=30, TransInResult=trans_in).SerializeToString()
        return json.dumps({"amount": 30, "trans_in_result": trans_in}).encode()

    def control(self, gid, plan):
        path = os.path.join(self.args.control, gid + ".json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(plan, f)
        os.replace(path + ".tmp", path)

    # Steps ---------------------------------------------------------------------------------

    def step(self, record, name, grpc_call, http_call):
        """Runs one protocol step until it gets a non-transient answer (or the deadline)."""
        deadline = time.time() + STEP_DEADLINE
        attempts = 0
        while True:
            attempts += 1
            current = self.coordinator.current()
            if current is None:
                code = "NO_COORDINATOR"
            else:
                stub, base = current
                if record["transport"] == "grpc" and grpc_call is not None:
                    code = grpc_code(lambda: grpc_call(stub))
                else:
                    code = http_post(base + http_call[0], http_call[1])
            if not transient(code):
                break
            if time.time() > deadline:
                code = "GAVE_UP"
                break
            time.sleep(0.05 + random.random() * 0.1)
        record["steps"].append({"name": name, "code": code, "attempts": attempts})
        return code in ("OK", "HTTP_200")

    def dtm_request(self, gid, trans_type, steps=None, payloads=None, custom=None, query_prepared="",
                    reason=""):
        request = dtmgimp_pb2.DtmRequest(Gid=gid, TransType=trans_type, QueryPrepared=query_prepared,
                                         RollbackReason=reason)
        if steps is not None:
            request.Steps = json.dumps(steps)
            request.BinPayloads.extend(payloads)
        if custom is not None:
            request.CustomedData = custom  # carries "concurrent": true, as DTM's gRPC SDK sends it
        return request

    @staticmethod
    def http_body(gid, trans_type, steps=None, payloads=None, custom=None, query_prepared="", reason=""):
        body = {"gid": gid, "trans_type": trans_type}
        if steps is not None:
            body["steps"] = steps
            body["payloads"] = [p.decode() for p in payloads]
        if custom is not None:
            body["custom_data"] = custom
            body["concurrent"] = True
        if query_prepared:
            body["query_prepared"] = query_prepared
        if reason:
            body["rollback_reason"] = reason
        return body

    def global_step(self, record, rpc, path, gid, trans_type, **fields):
        request = self.dtm_request(gid, trans_type, **fields)
        body = self.http_body(gid, trans_type, **fields) if record["transport"] == "http" else None
        return self.step(record, rpc, lambda stub: getattr(stub, rpc)(request, timeout=5), (path, body))

    def register(self, record, gid, trans_type, branch_id, data, payload):
        request = dtmgimp_pb2.DtmBranchRequest(Gid=gid, TransType=trans_type, BranchID=branch_id, Data=data,
                                               BusiPayload=payload)
        body = None
        if record["transport"] == "http":
            body = {"gid": gid, "trans_type": trans_type, "branch_id": branch_id, "data": payload.decode(), **data}
        return self.step(record, f"RegisterBranch-{branch_id}",
                         lambda stub: stub.RegisterBranch(request, timeout=5), ("/api/dtmsvr/registerBranch", body))

    def direct(self, record, transport, method, gid, trans_type, branch_id, op, trans_in=""):
        """The SDK's own call of a busi method (a tcc try, an xa action); the busi answers it."""
        if transport == "grpc":
            metadata = (("dtm-gid", gid), ("dtm-trans_type", trans_type), ("dtm-branch_id", branch_id),
                        ("dtm-op", op), ("dtm-dtm", ""))
            req = busi_pb2.ReqGrpc(Amount=30, TransInResult=trans_in)
            code = grpc_code(lambda: getattr(self.busi, method)(req, metadata=metadata, timeout=10))
        else:
            query = urllib.parse.urlencode({"gid": gid, "trans_type": trans_type, "branch_id": branch_id, "op": op})
            code = http_post(f"{self.url(method, 'http')}?{query}", {"amount": 30, "trans_in_result": trans_in})
        record["steps"].append({"name": f"{method}-{branch_id}", "code": code, "attempts": 1})
        return code in ("OK", "HTTP_200")

    # Kinds -----------------------------------------------------------------------------------

    def run(self, index, kind, transport, plan, flaky):
        gid = f"{self.args.prefix}-{index}-{kind}"
        record = {"gid": gid, "kind": kind, "transport": transport, "plan": plan, "steps": [], "finish": None,
                  "flaky": flaky}
        control = {}
        if kind == "msg":
            control["QueryPrepared"] = "SUCCESS"
        elif kind == "msgcheck":
            control["QueryPrepared"] = "FAILURE" if plan == "rollback" else "SUCCESS"
        if flaky:
            # A first answer that is not final, so that retries, back-off and touchCron run too.
            control.update(FLAKY[kind](control.get("QueryPrepared", "SUCCESS")))
        if self.args.delay > 0:
            control["delay"] = round(random.random() * self.args.delay, 3)
        if control:
            self.control(gid, control)
        getattr(self, "run_" + kind)(record, gid, transport, plan)
        return record

    def run_saga(self, record, gid, transport, plan):
        trans_in = "FAILURE" if plan == "rollback" else ""
        steps = [{"action": self.url("TransOut", transport), "compensate": self.url("TransOutRevert", transport)},
                 {"action": self.url("TransIn", transport), "compensate": self.url("TransInRevert", transport)}]
        payloads = [self.payload(transport, trans_in)] * 2
        record["finish"] = "submit"
        self.global_step(record, "Submit", "/api/dtmsvr/submit", gid, "saga", steps=steps, payloads=payloads)

    def run_csaga(self, record, gid, transport, plan):
        steps = [{"action": self.url("TransOut", transport), "compensate": self.url("TransOutRevert", transport)},
                 {"action": self.url("TransOut", transport), "compensate": self.url("TransOutRevert", transport)},
                 {"action": self.url("TransIn", transport), "compensate": self.url("TransInRevert", transport)}]
        payloads = [self.payload(transport, "FAILURE" if plan == "rollback" else "")] * 3
        custom = json.dumps({"concurrent": True, "orders": {"2": [0, 1]}})
        record["finish"] = "submit"
        self.global_step(record, "Submit", "/api/dtmsvr/submit", gid, "saga", steps=steps, payloads=payloads,
                         custom=custom)

    def msg_fields(self, transport):
        steps = [{"action": self.url("TransOut", transport)}, {"action": self.url("TransIn", transport)}]
        return {"steps": steps, "payloads": [self.payload(transport)] * 2,
                "query_prepared": self.url("QueryPrepared", transport)}

    def run_msg(self, record, gid, transport, plan):
        fields = self.msg_fields(transport)
        if not self.global_step(record, "Prepare", "/api/dtmsvr/prepare", gid, "msg", **fields):
            return
        record["finish"] = "submit"
        self.global_step(record, "Submit", "/api/dtmsvr/submit", gid, "msg", **fields)

    def run_msgcheck(self, record, gid, transport, plan):
        self.global_step(record, "Prepare", "/api/dtmsvr/prepare", gid, "msg", **self.msg_fields(transport))

    def run_tcc(self, record, gid, transport, plan):
        if not self.global_step(record, "Prepare", "/api/dtmsvr/prepare", gid, "tcc"):
            return
        ok = True
        for branch, name in (("01", "TransOut"), ("02", "TransIn")):
            data = {"confirm": self.url(f"{name}Confirm", transport), "cancel": self.url(f"{name}Revert", transport)}
            if not self.register(record, gid, "tcc", branch, data, self.payload(transport)):
                ok = False
                break
            fail = "FAILURE" if plan == "rollback" and branch == "02" else ""
            if not self.direct(record, transport, f"{name}Tcc", gid, "tcc", branch, "try", trans_in=fail):
                ok = False
                break
        self.finish_two_phase(record, gid, "tcc", ok)

    def run_xa(self, record, gid, transport, plan):
        if not self.global_step(record, "Prepare", "/api/dtmsvr/prepare", gid, "xa"):
            return
        for branch, name in (("01", "TransOutXa"), ("02", "TransInXa")):
            if not self.register(record, gid, "xa", branch, {"url": self.url(name, transport)}, b""):
                break
            self.direct(record, transport, name, gid, "xa", branch, "action")
        self.finish_two_phase(record, gid, "xa", plan == "ok")

    def finish_two_phase(self, record, gid, trans_type, submit):
        record["finish"] = "submit" if submit else "abort"
        if submit:
            self.global_step(record, "Submit", "/api/dtmsvr/submit", gid, trans_type)
        else:
            self.global_step(record, "Abort", "/api/dtmsvr/abort", gid, trans_type, reason="client aborted")

    def run_workflow(self, record, gid, transport, plan):
        record["transport"] = "http"
        with self.lock:
            self.workflows[gid] = record
        if not self.workflow_steps(record, gid, plan, first_run=True):
            # Abandoned after its first step, as by a crashed application: the coordinator's
            # retry loop calls the workflow back (serve_callbacks) and the rest runs then.
            with self.lock:
                self.abandoned.add(gid)

    def workflow_steps(self, record, gid, plan, first_run):
        """Runs the workflow from its start, as the workflow SDK replays it; steps already
        recorded are refused as duplicates and skipped. False when it stopped halfway."""
        custom = json.dumps({"name": "transfer", "data": "aW5wdXQ="})
        body = {"gid": gid, "trans_type": "workflow", "custom_data": custom,
                "query_prepared": f"http://127.0.0.1:{self.callbacks.server_address[1]}/wf"}

        def http(name, path, payload):
            return self.step(record, name, None, (path, payload))

        if not http("PrepareWorkflow", "/api/dtmsvr/prepareWorkflow", body):
            return True

        def branch(branch_id, op, status):
            return http(f"Register-{branch_id}-{op}", "/api/dtmsvr/registerBranch",
                        {"gid": gid, "trans_type": "workflow", "branch_id": branch_id, "op": op, "status": status,
                         "data": ""})

        branch("01", "action", "succeed")
        if first_run and record["flaky"]:
            return False
        if plan == "ok":
            branch("02", "action", "succeed")
            final = "succeed"
        else:
            branch("02", "action", "failed")
            branch("01", "rollback", "succeed")
            final = "failed"
        record["finish"] = final
        http("Submit", "/api/dtmsvr/submit", {"gid": gid, "trans_type": "workflow",
                                              "req_extra": {"status": final, "rollback_reason": "step 02 failed"
                                                            if final == "failed" else "", "result": ""}})
        return True

    def resume(self, gid):
        """The coordinator called an abandoned workflow back: run it again (one run at a time)."""
        with self.lock:
            record = self.workflows.get(gid)
            if gid not in self.abandoned or gid in self.resuming:
                return
            self.resuming.add(gid)
        try:
            record["resumes"] = record.get("resumes", 0) + 1
            self.workflow_steps(record, gid, record["plan"], first_run=False)
            if any(step["name"] == "Submit" and step["code"] == "HTTP_200" for step in record["steps"]):
                with self.lock:
                    self.abandoned.discard(gid)
        finally:
            with self.lock:
                self.resuming.discard(gid)

    def serve_callbacks(self):
        client = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                client.resume(query.get("gid", [""])[-1])
                data = b'{"dtm_result":"SUCCESS"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


class QuietHTTPServer(ThreadingHTTPServer):
    """A coordinator killed mid-request is what this client is for."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--addr", "--busi-grpc", "--busi-http", "--control", "--stop", "--out", "--prefix"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--flaky", type=float, default=0.3)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--gates", default="")
    parser.add_argument("--gate-dir", default="")
    args = parser.parse_args()
    gates = {int(n) for n in args.gates.split(",") if n}
    kinds = args.kinds.split(",")
    rng = random.Random(args.seed)
    client = Client(args)
    records = []
    pending = set()
    with futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        index = 0
        began = time.time()
        while index < args.count and not os.path.exists(args.stop):
            if index in gates:
                gate = os.path.join(args.gate_dir, "go-%d" % index)
                while not os.path.exists(gate) and not os.path.exists(args.stop):
                    time.sleep(0.05)
                began = time.time() - (index / args.rate if args.rate > 0 else 0)
            if args.rate > 0:
                time.sleep(max(0.0, began + index / args.rate - time.time()))
            while len(pending) >= args.concurrency:
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    records.append(future.result())
                pending -= done
            kind = kinds[index % len(kinds)]
            transport = rng.choice(["grpc", "http"])
            plan = rng.choice(["ok", "rollback"]) if kind != "msg" else "ok"
            flaky = rng.random() < args.flaky
            pending.add(pool.submit(client.run, index, kind, transport, plan, flaky))
            index += 1
        for future in futures.as_completed(pending):
            records.append(future.result())
    # Abandoned workflows finish when the coordinator has called them back.
    deadline = time.time() + 90
    while time.time() < deadline:
        with client.lock:
            if not client.abandoned:
                break
        time.sleep(0.1)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"transactions": records}, f)
    os.replace(args.out + ".tmp", args.out)
    print(json.dumps({"started": len(records)}), flush=True)


if __name__ == "__main__":
    main()
