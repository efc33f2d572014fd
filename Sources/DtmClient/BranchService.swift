import DtmGRPC

/// One call to a branch handler: which transaction and branch it is for, and its body.
public struct BranchRequest: Sendable {
    public var info: TransInfo
    /// The request body: a serialised protobuf (gRPC) or the payload bytes (HTTP).
    public var body: [UInt8]
    /// gRPC metadata of the call (empty for HTTP).
    public var metadata: Metadata
    /// HTTP query parameters (empty for gRPC).
    public var query: [String: String]

    public init(info: TransInfo, body: [UInt8], metadata: Metadata = Metadata(), query: [String: String] = [:]) {
        self.info = info
        self.body = body
        self.metadata = metadata
        self.query = query
    }

    /// A barrier for this call, to run the handler's local transaction through.
    public var barrier: BranchBarrier { BranchBarrier(info) }

    /// The body decoded as a protobuf message.
    public func decode<Message: ProtoMessage>(_ type: Message.Type) throws(DtmClientError) -> Message {
        do {
            return try Message(decoding: body)
        } catch {
            throw .invalidArgument("request body is not a valid \(Message.protoName): \(error)")
        }
    }
}

extension GRPCRouter {
    /// Serves `path` (`/package.Service/Method`) as a DTM branch: the handler gets the
    /// transaction information from the `dtm-*` metadata; what it throws reaches the coordinator
    /// as DTM expects (`.failure` → ABORTED, `.ongoing` → FAILED_PRECONDITION, anything else →
    /// INTERNAL, which is retried). A call without DTM metadata is answered INVALID_ARGUMENT.
    public mutating func registerBranch(_ path: String,
                                        _ handler: @escaping @Sendable (BranchRequest) async throws -> [UInt8]) {
        register(path, .async { call throws(RPCError) in
            let info: TransInfo
            do throws(DtmClientError) {
                info = try TransInfo(metadata: call.metadata)
            } catch {
                throw RPCError(.invalidArgument, error.description)
            }
            let request = BranchRequest(info: info, body: call.message, metadata: call.metadata)
            do {
                return GRPCResponse(message: try await handler(request))
            } catch {
                throw BranchOutcome.rpcError(for: error)
            }
        })
    }

    /// Serves `path` as a DTM branch taking and answering protobuf messages.
    public mutating func registerBranch<Request: ProtoMessage, Response: ProtoMessage>(
        _ path: String, _ type: Request.Type,
        _ handler: @escaping @Sendable (Request, BranchRequest) async throws -> Response
    ) {
        registerBranch(path) { request in
            try await handler(try request.decode(Request.self), request).encode()
        }
    }
}
