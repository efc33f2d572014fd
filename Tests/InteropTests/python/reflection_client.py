"""grpcio-reflection's client against swift-dtm: lists the services, resolves dtmgimp.Dtm's file
descriptor (and its imports) through reflection alone, builds a NewGid call from it and makes it.

Usage: reflection_client.py HOST:PORT — prints one JSON object.
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def v1_exchange(channel, requests):
    """The same canonical messages on grpc.reflection.v1's path, several on one stream."""
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return list(call(iter(requests), timeout=10))


def main():
    results = {}
    with grpc.insecure_channel(sys.argv[1]) as channel:
        # v1alpha through grpcio-reflection's descriptor database, as tools use it.
        database = ProtoReflectionDescriptorDatabase(channel)
        results["services"] = sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("dtmgimp.Dtm")
        results["file"] = service.file.name
        results["dependencies"] = [d.name for d in service.file.dependencies]
        results["methods"] = [m.name for m in service.methods]
        method = service.FindMethodByName("NewGid")
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        new_gid = channel.unary_unary(f"/{service.full_name}/{method.name}",
                                      request_serializer=request_class.SerializeToString,
                                      response_deserializer=reply_class.FromString)
        reply = new_gid(request_class(), timeout=10)
        results["gid"] = getattr(reply, "Gid")
        results["submit_fields"] = [f.name for f in pool.FindMessageTypeByName("dtmgimp.DtmRequest").fields][:3]

        # v1, several requests on one stream, with errors for what does not exist.
        Request = reflection_pb2.ServerReflectionRequest
        answers = v1_exchange(channel, [
            Request(list_services=""),
            Request(file_containing_symbol="dtmgimp.Dtm.Submit"),
            Request(file_by_filename="google/protobuf/empty.proto"),
            Request(file_containing_symbol="no.such.Symbol"),
            Request(file_by_filename="missing.proto"),
        ])
        results["v1_kinds"] = [a.WhichOneof("message_response") for a in answers]
        results["v1_services"] = sorted(s.name for s in answers[0].list_services_response.service)
        files = [descriptor_pb2.FileDescriptorProto.FromString(b).name
                 for b in answers[1].file_descriptor_response.file_descriptor_proto]
        results["v1_symbol_files"] = files
        results["v1_errors"] = [[a.error_response.error_code, a.error_response.error_message] for a in answers[3:]]
        results["v1_echo"] = answers[3].original_request.file_containing_symbol
    print(json.dumps(results))


if __name__ == "__main__":
    main()
