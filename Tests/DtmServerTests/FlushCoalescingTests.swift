import DtmGRPC
import Logging
import NIOCore
import NIOEmbedded
import Testing
@testable import DtmNet

/// The transport writes once per read burst and once per batch of calls, not once per call:
/// requests and answers that arrive together leave together, in one socket write.
@Suite struct FlushCoalescingTests {
    static let path = "/flush.Test/Echo"

    static func router() -> GRPCRouter {
        var router = GRPCRouter()
        router.register(path, .sync { request throws(RPCError) in GRPCResponse(message: request.message) })
        return router
    }

    /// Everything the channel wrote, one entry per write.
    static func writes(_ channel: EmbeddedChannel) throws -> [[UInt8]] {
        var writes: [[UInt8]] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { writes.append(Array(buffer: buffer)) }
        return writes
    }

    @Test func serverAnswersAReadBurstWithOneWrite() throws {
        let handler = try GRPCServerHandler(router: Self.router(), config: GRPCServerConfig(),
                                            calls: CallAdmission(limit: 100), logger: Logger(label: "test"))
        let channel = EmbeddedChannel(handler: handler)
        defer { _ = try? channel.finish() }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let client = try GRPCClientConnection(authority: "test:1")
        // The server's SETTINGS, written when the connection became active.
        for write in try Self.writes(channel) { _ = try client.receive(write) }

        // Three requests read one by one within one read burst (as NIO reads up to 16 times
        // before it reports the read complete).
        var pieces = [try client.pendingOutput()]
        var ids: [Int32] = []
        for index in 0..<3 {
            ids.append(try client.startCall(path: Self.path, message: [UInt8(index)]))
            pieces.append(try client.pendingOutput())
        }
        for piece in pieces {
            channel.pipeline.fireChannelRead(NIOAny(channel.allocator.buffer(bytes: piece)))
        }
        #expect(try Self.writes(channel).isEmpty, "nothing is written before the read burst ends")
        channel.pipeline.fireChannelReadComplete()

        let writes = try Self.writes(channel)
        #expect(writes.count == 1)
        var answers: [Int32: Result<GRPCResponse, RPCError>] = [:]
        for write in writes {
            for completion in try client.receive(write) { answers[completion.streamID] = completion.result }
        }
        for (index, id) in ids.enumerated() {
            #expect((try? answers[id]?.get()) == GRPCResponse(message: [UInt8(index)]))
        }
    }

    @Test func clientWritesABatchOfCallsAtOnce() throws {
        let handler = try GRPCClientHandler(authority: "test:1", config: GRPCClientConfig(),
                                            logger: Logger(label: "test"), onUnusable: {})
        let channel = EmbeddedChannel(handler: handler)
        defer { _ = try? channel.finish() }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let server = try GRPCServerConnection(router: Self.router())
        // The client's preface and SETTINGS.
        for write in try Self.writes(channel) { _ = try server.receive(write) }

        let promises = (0..<3).map { _ in channel.eventLoop.makePromise(of: GRPCResponse.self) }
        handler.start(promises.enumerated().map { index, promise in
            CallOutbox.Start(path: Self.path, message: [UInt8(index)], metadata: Metadata(), deadline: nil,
                             promise: promise, handle: CallOutbox.Handle(nil))
        })

        let writes = try Self.writes(channel)
        #expect(writes.count == 1)
        var started = 0
        for write in writes {
            for action in try server.receive(write) {
                guard case .start(let id, let request, .sync(let body)) = action else { continue }
                started += 1
                server.complete(streamID: id, result: Result { () throws(RPCError) in try body(request) })
            }
        }
        #expect(started == 3)

        // The answers, read in one burst, complete every call.
        channel.pipeline.fireChannelRead(NIOAny(channel.allocator.buffer(bytes: try server.pendingOutput())))
        channel.pipeline.fireChannelReadComplete()
        for (index, promise) in promises.enumerated() {
            #expect(try promise.futureResult.wait() == GRPCResponse(message: [UInt8(index)]))
        }
    }
}
