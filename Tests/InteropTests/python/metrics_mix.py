"""Runs a known mix of transactions against a dtm's HTTP API, then reads its /api/metrics with
prometheus-client's text parser.

    metrics_mix.py HTTP_BASE GID_PREFIX SUCCEEDING FAILING

Starts its own HTTP busi (counting every call it receives), submits SUCCEEDING two-step sagas
that succeed, FAILING two-step sagas whose second action answers FAILURE (so they compensate),
and one msg, waits until all are final, and prints one JSON object on stdout:
  {"busi": {"<op>:<result>": calls, ...}, "statuses": {gid: status},
   "samples": [{"name": ..., "labels": {...}, "value": ...}, ...]}
"""
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.parser import text_string_to_metric_families

calls = {}
lock = threading.Lock()


class Busi(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        path = self.path.split("?")[0].strip("/")
        # /<op>/<result>: answer as told, count it.
        op, _, result = path.partition("/")
        with lock:
            calls[op + ":" + result] = calls.get(op + ":" + result, 0) + 1
        if result == "fail":
            self.send_response(409)
            body = b'{"dtm_result":"FAILURE"}'
        else:
            self.send_response(200)
            body = b'{"dtm_result":"SUCCESS"}'
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read().decode())


def get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def main():
    base, prefix, succeeding, failing = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    busi = "http://127.0.0.1:%d" % server.server_address[1]

    gids = []
    for index in range(succeeding + failing):
        gid = "%s-saga-%d" % (prefix, index)
        second = "fail" if index >= succeeding else "ok"
        steps = [{"action": busi + "/action/ok", "compensate": busi + "/compensate/ok"},
                 {"action": busi + "/action/" + second, "compensate": busi + "/compensate/ok"}]
        post(base + "/api/dtmsvr/submit", {"gid": gid, "trans_type": "saga", "steps": steps,
                                           "payloads": ["{}", "{}"]})
        gids.append(gid)
    msg = prefix + "-msg"
    post(base + "/api/dtmsvr/submit", {"gid": msg, "trans_type": "msg", "steps": [{"action": busi + "/msg/ok"}],
                                       "payloads": ["{}"]})
    gids.append(msg)

    statuses = {}
    deadline = time.time() + 120
    while time.time() < deadline:
        for gid in gids:
            if statuses.get(gid) in ("succeed", "failed"):
                continue
            answer = json.loads(get(base + "/api/dtmsvr/query?gid=" + gid))
            statuses[gid] = (answer.get("transaction") or {}).get("status")
        if all(statuses.get(gid) in ("succeed", "failed") for gid in gids):
            break
        time.sleep(0.1)

    # A final status is visible to /query a moment before the coordinator counts it: read the
    # metrics until every finish is counted (or the deadline passes; the test then fails).
    while True:
        samples = []
        for family in text_string_to_metric_families(get(base + "/api/metrics")):
            for sample in family.samples:
                samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
        finished = sum(s["value"] for s in samples if s["name"] == "dtm_transactions_finished_total")
        if finished >= len(gids) or time.time() > deadline:
            break
        time.sleep(0.1)
    with lock:
        counted = dict(calls)
    print(json.dumps({"busi": counted, "statuses": statuses, "samples": samples}))
    server.shutdown()


if __name__ == "__main__":
    main()
