"""A DTM client with authentication on: grpcio with `authorization` metadata and plain HTTP
(urllib) with the Authorization header, against a `dtm --auth-tokens ... --branch-allow ...`.

Usage: auth_client.py GRPC_TARGET HTTP_BASE TOKEN — prints one JSON object with what each call answered.
"""
import json
import sys
import urllib.error
import urllib.request

import grpc
from google.protobuf import empty_pb2

from stubs import load

dtmgimp_pb2, dtmgimp_pb2_grpc, health_pb2, health_pb2_grpc = load("dtmgimp", "health")


def grpc_code(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def http(base, method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def main():
    target, base, token = sys.argv[1], sys.argv[2], sys.argv[3]
    auth = [("authorization", "Bearer " + token)]
    results = {}
    with grpc.insecure_channel(target) as channel:
        dtm = dtmgimp_pb2_grpc.DtmStub(channel)
        results["grpc_no_token"] = grpc_code(lambda: dtm.NewGid(empty_pb2.Empty(), timeout=20))
        results["grpc_wrong_token"] = grpc_code(
            lambda: dtm.NewGid(empty_pb2.Empty(), timeout=20, metadata=[("authorization", "Bearer nope")]))
        gid = dtm.NewGid(empty_pb2.Empty(), timeout=20, metadata=auth).Gid
        results["grpc_gid"] = gid
        results["grpc_prepare"] = grpc_code(
            lambda: dtm.Prepare(dtmgimp_pb2.DtmRequest(Gid=gid, TransType="tcc"), timeout=20, metadata=auth))
        results["grpc_abort"] = grpc_code(
            lambda: dtm.Abort(dtmgimp_pb2.DtmRequest(Gid=gid, TransType="tcc"), timeout=20, metadata=auth))
        outside = dtmgimp_pb2.DtmRequest(Gid=gid + "-fence", TransType="saga", BinPayloads=[b""],
                                         Steps=json.dumps([{"action": "192.168.7.7:5000/busi.Busi/TransIn",
                                                            "compensate": ""}]))
        results["grpc_fenced_submit"] = grpc_code(lambda: dtm.Submit(outside, timeout=20, metadata=auth))
        health = health_pb2_grpc.HealthStub(channel)
        results["grpc_health_no_token"] = grpc_code(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=20))

    results["http_no_token"] = http(base, "GET", "/api/dtmsvr/newGid")[0]
    results["http_wrong_token"] = http(base, "GET", "/api/dtmsvr/newGid", token="nope")[0]
    results["http_ping_no_token"] = http(base, "GET", "/api/ping")[0]
    status, answer = http(base, "GET", "/api/dtmsvr/query?gid=" + gid, token=token)
    results["http_query"] = [status, (answer.get("transaction") or {}).get("status")]
    saga = {"gid": gid + "-http", "trans_type": "saga", "payloads": ["{}"],
            "steps": [{"action": "http://127.0.0.1:9/a", "compensate": "http://127.0.0.1:9/c"}],
            "branch_headers": {"Authorization": "Bearer branch-secret-xyz"}}
    results["http_submit_no_token"] = http(base, "POST", "/api/dtmsvr/submit", body=saga)[0]
    results["http_submit"] = http(base, "POST", "/api/dtmsvr/submit", token=token, body=saga)[0]
    fenced = dict(saga, gid=gid + "-http-fence",
                  steps=[{"action": "http://192.168.7.7/a", "compensate": "http://192.168.7.7/c"}])
    results["http_fenced_submit"] = http(base, "POST", "/api/dtmsvr/submit", token=token, body=fenced)[0]
    status, answer = http(base, "GET", "/api/dtmsvr/query?gid=" + gid + "-http", token=token)
    results["http_query_text"] = json.dumps(answer)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
