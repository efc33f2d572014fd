@testable import DtmGRPC

/// A gRPC client connection wired to a server connection through memory: bytes written by
/// one are fed to the other until both are quiet. Sync handlers run as they are dispatched;
/// async ones wait in `pending` for the test to answer, expire or cancel them.
final class InMemoryPair {
    let server: GRPCServerConnection
    let client: GRPCClientConnection
    var completions: [Int32: Result<GRPCResponse, RPCError>] = [:]
    var pending: [Int32: GRPCRequest] = [:]
    var cancelled: [Int32] = []
    /// When set, every byte chunk is split into pieces of this size before it is fed.
    var chunkSize: Int?

    init(router: GRPCRouter, config: GRPCServerConfig = GRPCServerConfig(),
         clientMaxReceive: Int = 4 << 20) throws {
        server = try GRPCServerConnection(router: router, config: config)
        client = try GRPCClientConnection(authority: "test:1", maxReceiveMessageSize: clientMaxReceive)
    }

    func call(_ path: String, _ message: [UInt8], metadata: Metadata = Metadata(),
              timeout: Duration? = nil) throws -> Int32 {
        try client.startCall(path: path, message: message, metadata: metadata, timeout: timeout)
    }

    /// Moves bytes both ways until neither side has anything to send.
    func pump() throws {
        while true {
            let toServer = try client.pendingOutput()
            let toClient = try server.pendingOutput()
            if toServer.isEmpty && toClient.isEmpty { return }
            for piece in split(toServer) {
                for action in try server.receive(piece) { run(action) }
            }
            for piece in split(toClient) {
                for completion in try client.receive(piece) { completions[completion.streamID] = completion.result }
            }
        }
    }

    /// Calls `path` and pumps until its completion arrives.
    func roundTrip(_ path: String, _ message: [UInt8], metadata: Metadata = Metadata()) throws
        -> Result<GRPCResponse, RPCError>? {
        let id = try call(path, message, metadata: metadata)
        try pump()
        return completions[id]
    }

    private func run(_ action: GRPCServerAction) {
        switch action {
        case .start(let id, let request, .sync(let handler)):
            server.complete(streamID: id, result: Result { () throws(RPCError) in try handler(request) })
        case .start(let id, let request, .async):
            pending[id] = request
        case .cancel(let id):
            pending[id] = nil
            cancelled.append(id)
        }
    }

    private func split(_ bytes: [UInt8]) -> [[UInt8]] {
        guard let chunkSize, !bytes.isEmpty else { return bytes.isEmpty ? [] : [bytes] }
        return stride(from: 0, to: bytes.count, by: chunkSize).map {
            Array(bytes[$0..<min($0 + chunkSize, bytes.count)])
        }
    }
}

extension Result where Failure == RPCError {
    var error: RPCError? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

extension Result where Success == GRPCResponse {
    var message: [UInt8]? {
        if case .success(let response) = self { return response.message }
        return nil
    }
}

/// A router with an echo method (sync), a slow method (async, answered by the test) and one
/// that fails with whatever status the request names in metadata.
func testRouter() -> GRPCRouter {
    var router = GRPCRouter()
    router.register(service: "test.Echo", method: "Echo", .sync { request in
        var trailers = Metadata()
        trailers.add("x-echo-count", String(request.message.count))
        var metadata = Metadata()
        for entry in request.metadata { if case .string(let value) = entry.value { metadata.add(entry.key, value) } }
        if let bin = request.metadata.binary("x-trace-bin") { metadata.add("x-trace-bin", binary: bin) }
        return GRPCResponse(message: request.message, metadata: metadata, trailers: trailers)
    })
    router.register(service: "test.Echo", method: "Slow", .async { request in
        GRPCResponse(message: request.message)
    })
    router.register(service: "test.Echo", method: "Fail", .sync { request throws(RPCError) in
        let code = request.metadata["x-code"].flatMap { Int($0) }.flatMap(GRPCStatusCode.init(rawValue:)) ?? .internal
        var metadata = Metadata()
        metadata.add("x-reason", "asked")
        throw RPCError(code, String(decoding: request.message, as: UTF8.self), metadata: metadata)
    })
    return router
}
