import DtmGRPC
import DtmProto
import Logging

/// The `dtmgimp.Dtm` gRPC service: the coordinator API DTM's SDKs call.
public struct DtmGRPCService: Sendable {
    public static let serviceName = "dtmgimp.Dtm"

    /// Every method of the service, in proto order.
    public static let methods = ["NewGid", "Submit", "Prepare", "Abort", "RegisterBranch",
                                 "PrepareWorkflow", "Subscribe", "Unsubscribe", "DeleteTopic"]

    let gids: GidGenerator
    let logger: Logger

    public init(gids: GidGenerator = GidGenerator(), logger: Logger = Logger(label: "dtm.grpc.service")) {
        self.gids = gids
        self.logger = logger
    }

    /// Registers every method of `dtmgimp.Dtm` on `router`.
    public func register(on router: inout GRPCRouter) {
        let gids = self.gids
        router.register(service: Self.serviceName, method: "NewGid", .sync { request throws(RPCError) in
            _ = try decode(Empty.self, request)
            return GRPCResponse(message: DtmGidReply(gid: gids.next()).encode())
        })
        for method in Self.methods where method != "NewGid" {
            router.register(service: Self.serviceName, method: method, .sync { _ throws(RPCError) in
                throw RPCError(.unimplemented,
                               "\(Self.serviceName)/\(method) is not available yet: the transaction engine is not wired in")
            })
        }
    }
}

/// Decodes a request message, turning bad bytes into INVALID_ARGUMENT that names the type.
func decode<M: ProtoMessage>(_ type: M.Type, _ request: GRPCRequest) throws(RPCError) -> M {
    do {
        return try M(decoding: request.message)
    } catch {
        throw RPCError(.invalidArgument, "request is not a valid \(M.protoName): \(error)")
    }
}
