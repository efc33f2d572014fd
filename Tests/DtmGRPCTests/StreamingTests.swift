import DtmSync
import Synchronization
import Testing
@testable import DtmGRPC

/// What a streaming test handler did, seen from the test.
final class HandlerLog: Sendable {
    let sent = Atomic<Int>(0)
    let ended = Locked<RPCError?>(nil)
    let finished = Atomic<Bool>(false)
}

/// Streaming methods: `Count` (server streaming: n messages for a request [n]), `Echo` (bidi),
/// `Flood` (16 KiB messages until the call ends), `Stall` (never reads; waits for cancel).
func streamingRouter(_ log: HandlerLog) -> GRPCRouter {
    var router = testRouter()
    router.register(service: "test.Stream", method: "Count", .streaming { call throws(RPCError) in
        guard let request = try await call.requests.next(), let count = request.first else {
            throw RPCError(.invalidArgument, "expected one message [n]")
        }
        for index in 0..<count { try await call.responses.send([index]) }
        var trailers = Metadata()
        trailers.add("x-sent", String(count))
        return trailers
    })
    router.register(service: "test.Stream", method: "Echo", .streaming { call throws(RPCError) in
        for try await message in call.requests {
            try await call.responses.send(message + [0xEE])
        }
        return Metadata()
    })
    router.register(service: "test.Stream", method: "Flood", .streaming { call throws(RPCError) in
        let chunk = [UInt8](repeating: 0x42, count: 16 << 10)
        do throws(RPCError) {
            while true {
                try await call.responses.send(chunk)
                log.sent.add(1, ordering: .relaxed)
            }
        } catch {
            log.ended.withLock { $0 = error }
            log.finished.store(true, ordering: .releasing)
            throw error
        }
    })
    router.register(service: "test.Stream", method: "Stall", .streaming { call throws(RPCError) in
        try? await Task.sleep(for: .seconds(3600))
        log.finished.store(true, ordering: .releasing)
        throw RPCError(.cancelled, "stalled until cancelled")
    })
    return router
}

@Suite struct StreamingTests {
    @Test(arguments: [0, 1, 5, 200])
    func serverStreamingSendsEveryMessageThenTrailers(count: Int) async throws {
        let pair = try InMemoryPair(router: streamingRouter(HandlerLog()))
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Count")
        try pair.client.send(streamID: id, [UInt8(count)])
        try pair.client.closeSend(streamID: id)
        try await pair.pump(until: { pair.completions[id] != nil }, "the call's completion")
        let response = try #require(pair.completions[id]).get()
        #expect(response.trailers["x-sent"] == String(count))
        #expect(pair.client.takeMessages(streamID: id) == (0..<count).map { [UInt8($0)] })
        #expect(pair.server.inFlight == 0)
    }

    @Test func handlerErrorBeforeAnyMessageIsTrailersOnly() async throws {
        let pair = try InMemoryPair(router: streamingRouter(HandlerLog()))
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Count")
        try pair.client.closeSend(streamID: id)
        try await pair.pump(until: { pair.completions[id] != nil })
        #expect(pair.completions[id]?.error?.code == .invalidArgument)
    }

    @Test func bidirectionalAnswersEachMessageAsItComes() async throws {
        let pair = try InMemoryPair(router: streamingRouter(HandlerLog()))
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Echo")
        var received: [[UInt8]] = []
        for round in 0..<20 {
            // The answer to each message arrives before the next is sent: truly interleaved.
            try pair.client.send(streamID: id, [UInt8(round)])
            try await pair.pump(until: {
                received += pair.client.takeMessages(streamID: id)
                return received.count == round + 1
            }, "echo of message \(round)")
        }
        try pair.client.closeSend(streamID: id)
        try await pair.pump(until: { pair.completions[id] != nil })
        #expect(try pair.completions[id]?.get() != nil)
        #expect(received == (0..<20).map { [UInt8($0), 0xEE] })
    }

    @Test func messagesSplitAcrossDataFramesAndReads() async throws {
        let pair = try InMemoryPair(router: streamingRouter(HandlerLog()))
        pair.chunkSize = 7
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Echo")
        let big = (0..<40_000).map { UInt8(truncatingIfNeeded: $0) }
        try pair.client.send(streamID: id, big)
        try pair.client.send(streamID: id, [])
        try pair.client.send(streamID: id, [1, 2, 3])
        try pair.client.closeSend(streamID: id)
        try await pair.pump(until: { pair.completions[id] != nil })
        #expect(pair.client.takeMessages(streamID: id) == [big + [0xEE], [0xEE], [1, 2, 3, 0xEE]])
    }

    @Test func clientResetCancelsTheHandler() async throws {
        let log = HandlerLog()
        let pair = try InMemoryPair(router: streamingRouter(log))
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Flood")
        try await pair.pump(until: { log.sent.load(ordering: .relaxed) > 3 }, "some messages")
        _ = pair.client.cancel(streamID: id, with: RPCError(.cancelled, "client gave up"))
        try await pair.pump(until: { log.finished.load(ordering: .acquiring) }, "the handler to end")
        #expect(log.ended.withLock { $0?.code } == .cancelled)
        #expect(pair.cancelled == [id])
        #expect(pair.server.inFlight == 0)
    }

    @Test func deadlineEndsTheCallAfterMessagesWereSent() async throws {
        let log = HandlerLog()
        let pair = try InMemoryPair(router: streamingRouter(log))
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Flood", timeout: .seconds(5))
        try await pair.pump(until: { log.sent.load(ordering: .relaxed) > 2 })
        // What the transport's timer does when grpc-timeout passes.
        pair.expire(id)
        try await pair.pump(until: { pair.completions[id] != nil && log.finished.load(ordering: .acquiring) })
        let error = try #require(pair.completions[id]?.error)
        #expect(error.code == .deadlineExceeded)
        #expect(!pair.client.takeMessages(streamID: id).isEmpty, "messages before the deadline arrived")
        #expect(log.ended.withLock { $0?.code } == .deadlineExceeded)
    }

    @Test func slowClientHoldsBackTheWriter() async throws {
        let log = HandlerLog()
        let window = 64 << 10
        let highWater = 32 << 10
        let chunk = 16 << 10
        let pair = try InMemoryPair(router: streamingRouter(log),
                                    config: GRPCServerConfig(streamWriteHighWater: highWater),
                                    clientSettings: HTTP2Settings(initialWindowSize: UInt32(window)))
        try pair.pump()  // settings exchanged before the client stops reading
        pair.holdClientBound = true
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Flood")
        // The peer's window fills, then our queue to the high-water mark, then `send` waits.
        try await pair.pump(until: { pair.server.unsentBytes(streamID: id) > highWater }, "the queue to fill")
        for _ in 0..<200 {
            try pair.pump()
            await Task.yield()
        }
        let bound = (window + highWater) / chunk + 2
        #expect(log.sent.load(ordering: .relaxed) <= bound, "the writer went on while the client read nothing")
        #expect(pair.server.unsentBytes(streamID: id) <= highWater + chunk + 5)
        // Reading again lets it go on.
        pair.holdClientBound = false
        try await pair.pump(until: { log.sent.load(ordering: .relaxed) > bound * 3 }, "the writer to resume")
        _ = pair.client.cancel(streamID: id, with: RPCError(.cancelled, "done"))
        try await pair.pump(until: { log.finished.load(ordering: .acquiring) })
    }

    @Test func handlerThatDoesNotReadHitsTheBufferLimit() async throws {
        let log = HandlerLog()
        let pair = try InMemoryPair(router: streamingRouter(log),
                                    config: GRPCServerConfig(maxBufferedRequestBytesPerStream: 10_000))
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Stall")
        for _ in 0..<20 { try pair.client.send(streamID: id, [UInt8](repeating: 1, count: 1000)) }
        try await pair.pump(until: { pair.completions[id] != nil && log.finished.load(ordering: .acquiring) })
        #expect(pair.completions[id]?.error?.code == .resourceExhausted)
        // The connection goes on serving.
        #expect(try pair.roundTrip("/test.Echo/Echo", [7])?.message == [7])
    }

    @Test func oversizedStreamingMessageIsResourceExhausted() async throws {
        let log = HandlerLog()
        let pair = try InMemoryPair(router: streamingRouter(log), config: GRPCServerConfig(maxReceiveMessageSize: 1024))
        let id = try pair.client.startStreamingCall(path: "/test.Stream/Echo")
        try pair.client.send(streamID: id, [1])
        var received: [[UInt8]] = []
        try await pair.pump(until: {
            received += pair.client.takeMessages(streamID: id)
            return !received.isEmpty
        })
        try pair.client.send(streamID: id, [UInt8](repeating: 2, count: 5000))
        try await pair.pump(until: { pair.completions[id] != nil })
        let error = try #require(pair.completions[id]?.error)
        #expect(error.code == .resourceExhausted)
        #expect(error.message.contains("5000"))
        #expect(received == [[1, 0xEE]], "the answer sent before the refusal arrived")
        #expect(pair.server.inFlight == 0)
    }

    @Test func unaryCallsStillWorkBesideStreams() async throws {
        let pair = try InMemoryPair(router: streamingRouter(HandlerLog()))
        let stream = try pair.client.startStreamingCall(path: "/test.Stream/Echo")
        try pair.client.send(streamID: stream, [5])
        #expect(try pair.roundTrip("/test.Echo/Echo", [1, 2, 3])?.message == [1, 2, 3])
        try pair.client.closeSend(streamID: stream)
        try await pair.pump(until: { pair.completions[stream] != nil })
        #expect(pair.client.takeMessages(streamID: stream) == [[5, 0xEE]])
    }
}
