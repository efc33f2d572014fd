"""DTM's Python SDK (dtmcli from PyPI) against swift-dtm's HTTP API.

Usage: dtmcli_flows.py <dtm url, e.g. http://127.0.0.1:36789/api/dtmsvr>

Starts a busi service (stdlib http.server) on a free port, runs a saga that succeeds, a
saga that rolls back, a msg left prepared so the coordinator must ask its query_prepared
URL, a tcc that commits and a tcc that rolls back. Prints one JSON line with the gids (and
the busi port), then keeps serving the coordinator's callbacks until stdin closes.
GET /api/busi/calls answers how often each busi endpoint was called.
"""

import contextlib
import io
import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from dtmcli import msg, saga, tcc, utils

calls = Counter()
lock = threading.Lock()


class Busi(BaseHTTPRequestHandler):
    """DTM's test busi convention: 200 {"dtm_result":"SUCCESS"}, or 409 FAILURE when the
    body asks for it (trans_in_result / trans_out_result = FAILURE)."""

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_call(self):
        name = urlparse(self.path).path.rsplit("/", 1)[-1]
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        if name == "calls":
            with lock:
                return self.answer(200, dict(calls))
        with lock:
            calls[name] += 1
        wanted = body.get("trans_in_result") if name.startswith("TransIn") else body.get("trans_out_result")
        if wanted == "FAILURE" and not name.endswith(("Revert", "Cancel", "Confirm")):
            return self.answer(409, {"dtm_result": "FAILURE", "message": "reason:" + name + " refused"})
        self.answer(200, {"dtm_result": "SUCCESS"})

    do_GET = handle_call
    do_POST = handle_call


def main():
    dtm = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    busi = "http://127.0.0.1:%d/api/busi" % server.server_address[1]
    gids = {"busi": str(server.server_address[1])}

    # Saga: two steps that succeed.
    gid = utils.gen_gid(dtm)
    saga.Saga(dtm, gid).add({"amount": 30}, busi + "/TransOut", busi + "/TransOutRevert") \
        .add({"amount": 30}, busi + "/TransIn", busi + "/TransInRevert").submit()
    gids["saga"] = gid

    # Saga whose second action answers FAILURE: both steps are compensated.
    gid = utils.gen_gid(dtm)
    saga.Saga(dtm, gid).add({"amount": 30}, busi + "/TransOut", busi + "/TransOutRevert") \
        .add({"amount": 30, "trans_in_result": "FAILURE"}, busi + "/TransIn", busi + "/TransInRevert").submit()
    gids["saga_rollback"] = gid

    # Msg prepared and never submitted (as if the app died after its local commit): the
    # coordinator times it out and asks query_prepared, which answers SUCCESS.
    gid = utils.gen_gid(dtm)
    m = msg.Msg(dtm, gid).add({"amount": 30}, busi + "/TransIn")
    m.trans_base.timeout_to_fail = 1
    m.prepare(busi + "/QueryPrepared")
    gids["msg"] = gid

    # TCC: both tries succeed, then confirm.
    def transfer(t, in_result=""):
        t.call_branch({"amount": 30}, busi + "/TransOutTry", busi + "/TransOutConfirm", busi + "/TransOutCancel")
        t.call_branch({"amount": 30, "trans_in_result": in_result}, busi + "/TransInTry",
                      busi + "/TransInConfirm", busi + "/TransInCancel")

    gids["tcc"] = tcc.tcc_global_transaction(dtm, utils.gen_gid(dtm), transfer)

    # TCC whose second try answers FAILURE: the SDK aborts and both branches are cancelled.
    gid = utils.gen_gid(dtm)
    with contextlib.redirect_stderr(io.StringIO()):  # the SDK prints the try's traceback
        if tcc.tcc_global_transaction(dtm, gid, lambda t: transfer(t, "FAILURE")) == "":
            gids["tcc_rollback"] = gid

    print(json.dumps(gids), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
