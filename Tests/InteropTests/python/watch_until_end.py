"""Watches grpc.health.v1.Health until the server ends the call.

Usage: watch_until_end.py HOST:PORT OUTFILE — prints the first status on stdout, then writes
the call's final status code and details to OUTFILE as one JSON line.
"""
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main():
    target, outfile = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(next(watch).status), flush=True)
        try:
            for _ in watch:
                pass
            end = {"code": "OK", "details": ""}
        except grpc.RpcError as error:
            end = {"code": error.code().name, "details": error.details()}
    with open(outfile, "w") as out:
        out.write(json.dumps(end) + "\n")


if __name__ == "__main__":
    main()
