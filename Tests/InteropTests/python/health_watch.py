"""grpcio-health-checking's stub against swift-dtm's grpc.health.v1.Health/Watch.

Usage: health_watch.py HOST:PORT OUTFILE
First checks a Watch with a deadline (ends DEADLINE_EXCEEDED after its first message) and a
Watch of an unknown service (SERVICE_UNKNOWN, call left open, then cancelled). Then watches the
whole server: prints its first status on stdout (the test then makes the store unhealthy and
healthy again) and appends every later status to OUTFILE as it arrives; once it has seen
NOT_SERVING and then SERVING it cancels the call, writes a JSON result line and exits.
"""
import json
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Status = health_pb2.HealthCheckResponse.ServingStatus


def main():
    target, outfile = sys.argv[1], sys.argv[2]
    result = {}
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # Connected first, and a deadline a loaded machine can meet: it must only outlast the
        # first message (one store probe), then end the quiet watch.
        grpc.channel_ready_future(channel).result(timeout=30)
        received = []
        started = time.monotonic()
        try:
            for response in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=4.0):
                received.append(Status.Name(response.status))
            result["deadline"] = "ended without error"
        except grpc.RpcError as error:
            result["deadline"] = error.code().name
        result["deadline_received"] = received
        result["deadline_seconds"] = round(time.monotonic() - started, 1)

        unknown = stub.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"))
        result["unknown"] = Status.Name(next(unknown).status)
        unknown.cancel()

        watch = stub.Watch(health_pb2.HealthCheckRequest(service="dtmgimp.Dtm"))
        seen = [Status.Name(next(watch).status)]
        print(seen[0], flush=True)
        with open(outfile, "a") as out:
            for response in watch:
                seen.append(Status.Name(response.status))
                out.write(f"status {seen[-1]}\n")
                out.flush()
                if "NOT_SERVING" in seen and seen[-1] == "SERVING":
                    break
            watch.cancel()
            result["watch"] = seen
            out.write("result " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
