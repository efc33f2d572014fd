"""A grpcio client of swift-dtm's dtmgimp.Dtm service, built from proto/ with grpcio-tools.

Usage: dtm_client.py HOST:PORT — prints one JSON line per check and exits non-zero on a failed check.
"""
import json
import sys

import grpc
from google.protobuf import empty_pb2

from stubs import load

dtmgimp_pb2, dtmgimp_pb2_grpc = load("dtmgimp")


def main():
    target = sys.argv[1]
    results = {}
    with grpc.insecure_channel(target) as channel:
        stub = dtmgimp_pb2_grpc.DtmStub(channel)
        gids = [stub.NewGid(empty_pb2.Empty(), timeout=5).Gid for _ in range(50)]
        results["gids"] = gids
        # The raw method lets us send bytes that are not a valid DtmRequest.
        for method, request in [("Submit", dtmgimp_pb2.DtmRequest(Gid="", TransType="saga")),
                                ("RegisterBranch", dtmgimp_pb2.DtmBranchRequest(Gid="no-such-gid", TransType="tcc",
                                                                                BranchID="01"))]:
            try:
                getattr(stub, method)(request, timeout=5)
                results[method] = {"code": "OK"}
            except grpc.RpcError as error:
                results[method] = {"code": error.code().name, "details": error.details()}
        unknown = channel.unary_unary("/dtmgimp.Dtm/NoSuchMethod")
        try:
            unknown(b"", timeout=5)
            results["unknown"] = {"code": "OK"}
        except grpc.RpcError as error:
            results["unknown"] = {"code": error.code().name, "details": error.details()}
        garbage = channel.unary_unary("/dtmgimp.Dtm/NewGid")
        try:
            garbage(b"\xff\xff\xff", timeout=5)
            results["garbage"] = {"code": "OK"}
        except grpc.RpcError as error:
            results["garbage"] = {"code": error.code().name, "details": error.details()}
        # Still serving after the bad requests.
        results["after"] = stub.NewGid(empty_pb2.Empty(), timeout=5).Gid
    print(json.dumps(results))


if __name__ == "__main__":
    main()
