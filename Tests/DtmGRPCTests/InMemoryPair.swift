@testable import DtmGRPC
import DtmSync

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
    /// Streaming handlers run in tasks, as the transport runs them; their output waits here
    /// until `pump` hands it to the server connection (the transport's event loop hop).
    private let outputs = Mailbox()
    var bridges: [Int32: GRPCStreamBridge] = [:]
    var tasks: [Int32: Task<Void, Never>] = [:]
    /// While true, bytes for the client are held back (a client that does not read).
    var holdClientBound = false
    private var heldForClient: [UInt8] = []

    init(router: GRPCRouter, config: GRPCServerConfig = GRPCServerConfig(),
         clientMaxReceive: Int = 4 << 20, clientSettings: HTTP2Settings = HTTP2Settings()) throws {
        server = try GRPCServerConnection(router: router, config: config)
        client = try GRPCClientConnection(authority: "test:1", maxReceiveMessageSize: clientMaxReceive,
                                          settings: clientSettings)
    }

    func call(_ path: String, _ message: [UInt8], metadata: Metadata = Metadata(),
              timeout: Duration? = nil) throws -> Int32 {
        try client.startCall(path: path, message: message, metadata: metadata, timeout: timeout)
    }

    /// Moves bytes both ways until neither side has anything to send.
    func pump() throws {
        while true {
            let handlerOutput = outputs.items.withLock { pending in defer { pending = [] }; return pending }
            for (id, output) in handlerOutput { apply(id, output) }
            let toServer = try client.pendingOutput()
            var toClient = try server.pendingOutput()
            for (id, bridge) in bridges { bridge.didSend(server.takeSentBytes(streamID: id)) }
            if holdClientBound {
                heldForClient += toClient
                toClient = []
            } else if !heldForClient.isEmpty {
                toClient = heldForClient + toClient
                heldForClient = []
            }
            if toServer.isEmpty && toClient.isEmpty && handlerOutput.isEmpty { return }
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

    /// Pumps until `condition` holds, letting handler tasks run in between; fails after
    /// a generous deadline.
    func pump(until condition: () -> Bool, _ what: String = "condition") async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            try pump()
            if condition() { return }
            guard ContinuousClock.now < deadline else { throw PairTimeout(what: what) }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// What the transport's deadline timer does.
    func expire(_ id: Int32) {
        bridges.removeValue(forKey: id)?.close(RPCError(.deadlineExceeded, "deadline"))
        server.expire(streamID: id)
        tasks.removeValue(forKey: id)?.cancel()
    }

    private func run(_ action: GRPCServerAction) {
        switch action {
        case .start(let id, let request, .sync(let handler)):
            server.complete(streamID: id, result: Result { () throws(RPCError) in try handler(request) })
        case .start(let id, let request, .async), .start(let id, let request, .streaming):
            pending[id] = request
        case .cancel(let id):
            pending[id] = nil
            bridges.removeValue(forKey: id)?.close(RPCError(.cancelled, "cancelled"))
            tasks.removeValue(forKey: id)?.cancel()
            cancelled.append(id)
        case .startStreaming(let id, let head, let handler):
            let outputs = self.outputs
            let bridge = GRPCStreamBridge(bufferLimit: server.config.maxBufferedRequestBytesPerStream,
                                          highWater: server.config.streamWriteHighWater) { output in
                outputs.items.withLock { $0.append((id, output)) }
            }
            bridges[id] = bridge
            tasks[id] = bridge.run(handler, head: head)
        case .requestMessage(let id, let message):
            guard let bridge = bridges[id] else { return }
            if !bridge.deliver(message) {
                server.finishStreaming(streamID: id, result: .failure(RPCError(.resourceExhausted, "handler behind")))
                bridges[id] = nil
                bridge.close(RPCError(.resourceExhausted, "handler behind"))
                tasks.removeValue(forKey: id)?.cancel()
            }
        case .endOfRequests(let id):
            bridges[id]?.finishRequests()
        }
    }

    private func apply(_ id: Int32, _ output: GRPCStreamOutput) {
        guard let bridge = bridges[id] else { return }
        switch output {
        case .message(let message):
            if !server.sendMessage(streamID: id, message) {
                bridges[id] = nil
                bridge.close(RPCError(.cancelled, "over"))
            }
        case .finish(let result):
            bridges[id] = nil
            bridge.close(RPCError(.cancelled, "finished"))
            server.finishStreaming(streamID: id, result: result)
        }
    }

    private func split(_ bytes: [UInt8]) -> [[UInt8]] {
        guard let chunkSize, !bytes.isEmpty else { return bytes.isEmpty ? [] : [bytes] }
        return stride(from: 0, to: bytes.count, by: chunkSize).map {
            Array(bytes[$0..<min($0 + chunkSize, bytes.count)])
        }
    }
}

final class Mailbox: Sendable {
    let items = Locked<[(Int32, GRPCStreamOutput)]>([])
}

struct PairTimeout: Error {
    var what: String
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
