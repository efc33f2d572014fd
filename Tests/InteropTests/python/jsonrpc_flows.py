"""DTM's json-rpc protocol against swift-dtm, with raw JSON-RPC 2.0 requests (stdlib only).

Usage: jsonrpc_flows.py <json-rpc url, e.g. http://127.0.0.1:36789/api/json-rpc>

Starts a JSON-RPC busi (stdlib http.server, POST /api/json-rpc?method=...) on a free port,
then calls the coordinator's /api/json-rpc as DTM's json-rpc SDK does: newGid, then submit a
saga that succeeds and a saga whose TransIn answers FAILURE (-32901) and must be compensated,
and sends malformed requests whose JSON-RPC error codes it records. Prints one JSON line
({"busi": port, "saga": gid, "saga_rollback": gid, "errors": {...}}), then keeps serving the
coordinator's calls until stdin closes. GET /calls answers the calls received, per gid.
"""

import json
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

calls = {}
lock = threading.Lock()


class Busi(BaseHTTPRequestHandler):
    """A JSON-RPC busi: TransIn answers error -32901 (FAILURE) when its params say so."""

    def log_message(self, *args):
        pass

    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with lock:
            self.answer(calls)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        method = request["method"]
        params = request["params"]
        assert request["jsonrpc"] == "2.0" and request["id"], request
        assert parse_qs(urlparse(self.path).query)["method"] == [method], (self.path, method)
        with lock:
            calls.setdefault(params["gid"], []).append(f'{method}/{params["op"]}/{params["branch_id"]}')
        if method == "TransIn" and params.get("trans_in_result") == "FAILURE":
            self.answer({"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32901, "message": "TransIn refused"}})
        else:
            self.answer({"jsonrpc": "2.0", "id": request["id"], "result": {"amount": params["amount"]}})


def rpc(url, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def call(url, method, params, id="py"):
    answer = rpc(url, {"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    if answer.get("error") is not None:
        raise RuntimeError(f"{method}: {answer}")
    assert answer["id"] == id, answer
    return answer.get("result")


def saga(url, busi, trans_in_result):
    gid = call(url, "newGid", {})["gid"]
    steps = [{"action": f"{busi}?method=TransOut", "compensate": f"{busi}?method=TransOutRevert"},
             {"action": f"{busi}?method=TransIn", "compensate": f"{busi}?method=TransInRevert"}]
    payload = json.dumps({"amount": 30, "trans_in_result": trans_in_result})
    call(url, "submit", {"gid": gid, "trans_type": "saga", "protocol": "json-rpc", "steps": steps,
                         "payloads": [payload, payload]})
    return gid


def main():
    url = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    busi = f"http://127.0.0.1:{server.server_address[1]}/api/json-rpc"
    result = {"busi": server.server_address[1], "saga": saga(url, busi, ""),
              "saga_rollback": saga(url, busi, "FAILURE")}
    malformed = {
        "parse": b'{"jsonrpc": "2.0", "id": "1", "method": ',
        "invalid": {"jsonrpc": "2.0", "method": "newGid"},
        "unknown": {"jsonrpc": "2.0", "id": "2", "method": "forceStop", "params": {}},
    }
    result["errors"] = {name: (rpc(url, body).get("error") or {}).get("code") for name, body in malformed.items()}
    result["after"] = bool(call(url, "newGid", {}, id="after")["gid"])
    print(json.dumps(result), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
