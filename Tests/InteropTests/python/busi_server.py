"""A grpcio busi.Busi server for interop tests. Prints its port on stdout once serving.

Each method answers according to the request's TransOutResult (TransOut*) or TransInResult
(TransIn*): "" or SUCCESS → OK, FAILURE → ABORTED, ONGOING → FAILED_PRECONDITION,
UNAVAILABLE → UNAVAILABLE, SLEEP → sleeps 30 s then OK, anything else → INTERNAL.
Received metadata is echoed back as initial metadata (keys prefixed "echo-"), and the
amount as trailing metadata "amount".

Usage: busi_server.py [--tls CERT KEY [CLIENT_CA]]  (TLS; with CLIENT_CA, mutual TLS)
"""
import sys
import time
from concurrent import futures

import grpc
from google.protobuf import empty_pb2

from stubs import load

busi_pb2, busi_pb2_grpc = load("busi")

CODES = {"FAILURE": grpc.StatusCode.ABORTED, "ONGOING": grpc.StatusCode.FAILED_PRECONDITION,
         "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE}


def answer(result, request, context):
    echo = []
    for key, value in context.invocation_metadata():
        if key.startswith("x-") or key.startswith("dtm-"):
            echo.append(("echo-" + key, value))
    context.send_initial_metadata(tuple(echo))
    context.set_trailing_metadata((("amount", str(request.Amount)),))
    if result in ("", "SUCCESS"):
        return empty_pb2.Empty()
    if result == "SLEEP":
        time.sleep(30)
        return empty_pb2.Empty()
    if result in CODES:
        context.abort(CODES[result], "reason:" + result)
    context.abort(grpc.StatusCode.INTERNAL, "unexpected result " + result)


class Busi(busi_pb2_grpc.BusiServicer):
    def TransOut(self, request, context):
        return answer(request.TransOutResult, request, context)

    def TransOutRevert(self, request, context):
        return answer(request.TransOutResult, request, context)

    def TransIn(self, request, context):
        return answer(request.TransInResult, request, context)

    def TransInRevert(self, request, context):
        return answer(request.TransInResult, request, context)

    def QueryPrepared(self, request, context):
        answer(request.TransInResult, request, context)
        return busi_pb2.BusiReply(message="prepared")


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    busi_pb2_grpc.add_BusiServicer_to_server(Busi(), server)
    # --tls CERT KEY [CLIENT_CA]: serve over TLS; with CLIENT_CA, require a client certificate.
    if len(sys.argv) >= 4 and sys.argv[1] == "--tls":
        cert, key = (open(path, "rb").read() for path in sys.argv[2:4])
        client_ca = open(sys.argv[4], "rb").read() if len(sys.argv) > 4 else None
        credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                                  require_client_auth=client_ca is not None)
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    try:
        sys.stdin.read()  # exits when the test closes our stdin
    finally:
        server.stop(0)


if __name__ == "__main__":
    main()
