import Foundation
import DtmEngine
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
    let engine: Coordinator
    let topics: TopicRegistry
    let logger: Logger
    /// nil: every caller is served (DTM's behaviour).
    let auth: Authenticator?

    public init(engine: Coordinator, topics: TopicRegistry, gids: GidGenerator = GidGenerator(),
                logger: Logger = Logger(label: "dtm.grpc.service"), auth: Authenticator? = nil) {
        self.engine = engine
        self.topics = topics
        self.gids = gids
        self.logger = logger
        self.auth = auth
    }

    /// Registers every method of `dtmgimp.Dtm` on `router`. With an authenticator, every
    /// method first checks the `authorization` metadata (UNAUTHENTICATED, nothing done) and
    /// each gid named against the caller's prefix (PERMISSION_DENIED).
    public func register(on router: inout GRPCRouter) {
        let gids = self.gids
        let engine = self.engine
        let topics = self.topics
        if auth == nil {
            router.register(service: Self.serviceName, method: "NewGid", .sync { request throws(RPCError) in
                _ = try decode(Empty.self, request)
                return GRPCResponse(message: DtmGidReply(gid: gids.next()).encode())
            })
        } else {
            registerAnswering(on: &router, "NewGid", Empty.self) { _, principal throws(DtmError) in
                DtmGidReply(gid: principal.newGid(gids))
            }
        }
        register(on: &router, "Submit", DtmRequest.self) { request, principal throws(DtmError) in
            try principal.permit(gid: request.gid)
            try await engine.submit(TransRequest(request))
        }
        register(on: &router, "Prepare", DtmRequest.self) { request, principal throws(DtmError) in
            try principal.permit(gid: request.gid)
            try await engine.prepare(TransRequest(request))
        }
        register(on: &router, "Abort", DtmRequest.self) { request, principal throws(DtmError) in
            try principal.permit(gid: request.gid)
            try await engine.abort(TransRequest(request))
        }
        register(on: &router, "RegisterBranch", DtmBranchRequest.self) { request, principal throws(DtmError) in
            try principal.permit(gid: request.gid)
            try await engine.registerBranch(BranchRegistration(request))
        }
        registerAnswering(on: &router, "PrepareWorkflow", DtmRequest.self) { request, principal throws(DtmError) in
            try principal.permit(gid: request.gid)
            return DtmProgressesReply(try await engine.prepareWorkflow(TransRequest(request)))
        }
        register(on: &router, "Subscribe", DtmTopicRequest.self) { request, principal throws(DtmError) in
            try principal.permitUnrestricted("Subscribe")
            try await topics.subscribe(topic: request.topic, url: request.url, remark: request.remark)
        }
        register(on: &router, "Unsubscribe", DtmTopicRequest.self) { request, principal throws(DtmError) in
            try principal.permitUnrestricted("Unsubscribe")
            try await topics.unsubscribe(topic: request.topic, url: request.url)
        }
        register(on: &router, "DeleteTopic", DtmTopicRequest.self) { request, principal throws(DtmError) in
            try principal.permitUnrestricted("DeleteTopic")
            try await topics.delete(topic: request.topic)
        }
    }

    /// A method answering google.protobuf.Empty.
    private func register<Request: ProtoMessage>(
        on router: inout GRPCRouter, _ method: String, _ type: Request.Type,
        _ body: @escaping @Sendable (Request, Principal) async throws(DtmError) -> Void) {
        registerAnswering(on: &router, method, type) { request, principal throws(DtmError) in
            try await body(request, principal)
            return Empty()
        }
    }

    private func registerAnswering<Request: ProtoMessage, Response: ProtoMessage>(
        on router: inout GRPCRouter, _ method: String, _ type: Request.Type,
        _ body: @escaping @Sendable (Request, Principal) async throws(DtmError) -> Response) {
        let logger = self.logger
        let auth = self.auth
        router.register(service: Self.serviceName, method: method, .async { call throws(RPCError) in
            let principal = try await Self.authenticate(call, auth, method: method, logger: logger)
            let request = try decode(Request.self, call)
            // A call whose client has given up must not start a durable write it cannot report.
            try call.checkDeadline()
            do throws(DtmError) {
                return GRPCResponse(message: try await body(request, principal).encode())
            } catch {
                let status = RPCError(error)
                logger.debug("call refused", metadata: ["method": "\(method)", "code": "\(status.code)",
                                                        "message": Redaction.logValue(status.message)])
                throw status
            }
        })
    }

    /// The caller's principal from the `authorization` metadata; UNAUTHENTICATED without one.
    private static func authenticate(_ call: GRPCRequest, _ auth: Authenticator?, method: String,
                                     logger: Logger) async throws(RPCError) -> Principal {
        guard let auth else { return .unrestricted }
        switch await auth.authenticate(call.metadata["authorization"]) {
        case .success(let principal):
            return principal
        case .failure(let failure):
            logger.debug("unauthenticated call refused", metadata: ["method": "\(method)", "reason": "\(failure)"])
            throw RPCError(.unauthenticated, failure.description)
        }
    }
}

/// Decodes a request message, turning bad bytes into INVALID_ARGUMENT that names the type.
func decode<M: ProtoMessage>(_ type: M.Type, _ request: GRPCRequest) throws(RPCError) -> M {
    try decode(type, request.message)
}

/// Decodes one message (e.g. of a stream), as `decode(_:_:)` does a unary request.
func decode<M: ProtoMessage>(_ type: M.Type, _ message: [UInt8]) throws(RPCError) -> M {
    do {
        return try M(decoding: message)
    } catch {
        throw RPCError(.invalidArgument, "request is not a valid \(M.protoName): \(error)")
    }
}

extension RPCError {
    /// DTM's mapping of coordinator outcomes to gRPC statuses (spec 2.3), in one place.
    init(_ error: DtmError) {
        switch error {
        case .failure(let message): self.init(.aborted, message)
        case .ongoing(let message): self.init(.failedPrecondition, message)
        case .invalidArgument(let message): self.init(.invalidArgument, message)
        case .notFound(let message): self.init(.notFound, message)
        case .internal(let message): self.init(.unknown, message)
        case .storage: self.init(.internal, "storage: \(error.message)")
        case .overloaded(let message):
            var pushback = Metadata()
            pushback.add("grpc-retry-pushback-ms", "1000")
            self.init(.resourceExhausted, message, metadata: pushback)
        case .unavailable(let message): self.init(.unavailable, message)
        case .permissionDenied(let message): self.init(.permissionDenied, message)
        }
    }
}

extension TransRequest {
    /// From the gRPC request: protocol is gRPC, steps come as JSON text.
    package init(_ request: DtmRequest) throws(DtmError) {
        let options = request.transOptions ?? DtmTransOptions()
        self.init(gid: request.gid, transType: request.transType,
                  steps: try TransRequest.parseSteps(request.steps), payloads: request.binPayloads,
                  queryPrepared: request.queryPrepared, transProtocol: TransProtocol.grpc.rawValue,
                  customData: request.customedData,
                  options: TransOptions(waitResult: options.waitResult, timeoutToFail: options.timeoutToFail,
                                        retryInterval: options.retryInterval, branchHeaders: options.branchHeaders,
                                        requestTimeout: options.requestTimeout, retryLimit: options.retryLimit),
                  reqExtra: request.reqExtra, rollbackReason: request.rollbackReason)
    }
}

extension BranchRegistration {
    init(_ request: DtmBranchRequest) {
        self.init(gid: request.gid, transType: request.transType, branchID: request.branchID,
                  data: request.data, payload: request.busiPayload)
    }
}

extension DtmProgressesReply {
    init(_ progress: WorkflowProgress) {
        let global = progress.transaction
        self.init(
            transaction: DtmTransaction(gid: global.gid, status: global.status.rawValue,
                                        rollbackReason: global.rollbackReason, result: global.result),
            progresses: progress.progresses.map {
                DtmProgress(status: $0.status.rawValue, binData: $0.binData, branchID: $0.branchID, op: $0.op.rawValue)
            })
    }
}
