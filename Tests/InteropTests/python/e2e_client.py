"""A grpcio client doing a DTM SDK's job against swift-dtm, step by step, as the test says.

Usage: e2e_client.py HOST:PORT 'JSON list of operations'

Prints one JSON object {"results": [...]} with one result per operation:
  {"code": "OK" | gRPC code name, "details": str, "elapsed": seconds, "start": unix time, "end": unix time}
Operations:
  {"rpc": "Submit"|"Prepare"|"Abort"|"RegisterBranch"|"NewGid", "req": {...}, "timeout": s}
      req uses the proto field names (Gid, TransType, TransOptions, Steps, BinPayloads, ...);
      Steps may be a list (sent as JSON text) or a string (sent as is); a payload
      (BinPayloads item, BusiPayload) is {"busi": {Amount, TransOutResult, TransInResult}}
      (a serialised busi.ReqGrpc), {"json": value}, {"text": str} or {"hex": str}.
  {"raw": "/dtmgimp.Dtm/Submit", "hex": "ffff"}            bytes that are whatever the test says
  {"busi": "host:port", "method": "TransOutTcc", "req": {...}, "metadata": {...}}
      a direct call of a busi method, as the SDK makes for a TCC try or an XA action
  {"http": url, "method": "POST", "body": value, "headers": {...}}
      a direct HTTP call of a busi route; code is "HTTP_<status>"
  {"sleep": s}
  {"submit_until_down": {"req": {...}, "prefix": "gid-", "count": n, "interval": s, "timeout": s}}
      Submits req with gids prefix0, prefix1, ... until n were sent or 3 calls in a row failed;
      the result lists the acknowledged gids ("acked") and the refused ones ("refused").
"""
import base64
import copy
import json
import sys
import time
import urllib.error
import urllib.request

import grpc
from google.protobuf import json_format
from google.protobuf import empty_pb2

from stubs import load

dtmgimp_pb2, dtmgimp_pb2_grpc, busi_pb2, busi_pb2_grpc = load("dtmgimp", "busi")


def payload(item):
    if "busi" in item:
        return json_format.ParseDict(item["busi"], busi_pb2.ReqGrpc()).SerializeToString()
    if "json" in item:
        return json.dumps(item["json"]).encode()
    if "text" in item:
        return item["text"].encode()
    return bytes.fromhex(item.get("hex", ""))


def b64(data):
    return base64.b64encode(data).decode()


def dtm_request(spec):
    spec = copy.deepcopy(spec)
    if isinstance(spec.get("Steps"), list):
        spec["Steps"] = json.dumps(spec["Steps"])
    if "BinPayloads" in spec:
        spec["BinPayloads"] = [b64(payload(item)) for item in spec["BinPayloads"]]
    return json_format.ParseDict(spec, dtmgimp_pb2.DtmRequest())


def branch_request(spec):
    spec = copy.deepcopy(spec)
    if "BusiPayload" in spec:
        spec["BusiPayload"] = b64(payload(spec["BusiPayload"]))
    return json_format.ParseDict(spec, dtmgimp_pb2.DtmBranchRequest())


def outcome(call):
    start = time.time()
    result = {"start": start}
    try:
        reply = call()
        result.update(code="OK", details="")
        if hasattr(reply, "Gid"):
            result["gid"] = reply.Gid
    except grpc.RpcError as error:
        result.update(code=error.code().name, details=error.details() or "")
    result["end"] = time.time()
    result["elapsed"] = result["end"] - start
    return result


def http_call(op):
    start = time.time()
    body = json.dumps(op["body"]).encode() if "body" in op else None
    request = urllib.request.Request(op["http"], data=body, method=op.get("method", "POST"),
                                     headers={"Content-Type": "application/json", **op.get("headers", {})})
    try:
        with urllib.request.urlopen(request, timeout=op.get("timeout", 10)) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    end = time.time()
    return {"code": f"HTTP_{status}", "details": text, "start": start, "end": end, "elapsed": end - start}


def submit_until_down(stub, spec):
    acked, refused = [], []
    failures_in_row = 0
    for i in range(spec.get("count", 100)):
        req = copy.deepcopy(spec["req"])
        req["Gid"] = f"{spec['prefix']}{i}"
        message = dtm_request(req)
        result = outcome(lambda: stub.Submit(message, timeout=spec.get("timeout", 2)))
        if result["code"] == "OK":
            acked.append(req["Gid"])
            failures_in_row = 0
        else:
            refused.append({"gid": req["Gid"], "code": result["code"]})
            failures_in_row += 1
            if failures_in_row >= 3:
                break
        time.sleep(spec.get("interval", 0.02))
    return {"code": "OK", "acked": acked, "refused": refused}


def main():
    target = sys.argv[1]
    ops = json.loads(sys.argv[2])
    results = []
    with grpc.insecure_channel(target) as channel:
        stub = dtmgimp_pb2_grpc.DtmStub(channel)
        busi_channels = {}
        for op in ops:
            timeout = op.get("timeout", 10)
            if "rpc" in op:
                name, req = op["rpc"], op.get("req", {})
                if name == "NewGid":
                    results.append(outcome(lambda: stub.NewGid(empty_pb2.Empty(), timeout=timeout)))
                elif name == "RegisterBranch":
                    message = branch_request(req)
                    results.append(outcome(lambda: stub.RegisterBranch(message, timeout=timeout)))
                else:
                    method, message = getattr(stub, name), dtm_request(req)
                    results.append(outcome(lambda: method(message, timeout=timeout)))
            elif "raw" in op:
                raw = channel.unary_unary(op["raw"])
                results.append(outcome(lambda: raw(bytes.fromhex(op.get("hex", "")), timeout=timeout)))
            elif "busi" in op:
                target_busi = op["busi"]
                if target_busi not in busi_channels:
                    busi_channels[target_busi] = grpc.insecure_channel(target_busi)
                busi = busi_pb2_grpc.BusiStub(busi_channels[target_busi])
                method = getattr(busi, op["method"])
                req = json_format.ParseDict(op.get("req", {}), busi_pb2.ReqGrpc())
                metadata = tuple(op.get("metadata", {}).items())
                results.append(outcome(lambda: method(req, metadata=metadata, timeout=timeout)))
            elif "http" in op:
                results.append(http_call(op))
            elif "sleep" in op:
                time.sleep(op["sleep"])
                results.append({"code": "OK"})
            elif "submit_until_down" in op:
                results.append(submit_until_down(stub, op["submit_until_down"]))
            else:
                raise SystemExit(f"unknown operation {op}")
        for busi_channel in busi_channels.values():
            busi_channel.close()
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
