import Testing
@testable import DtmGRPC

@Suite struct InMemoryGRPCTests {
    @Test func unaryRoundTripWithMetadata() throws {
        let pair = try InMemoryPair(router: testRouter())
        var metadata = Metadata()
        metadata.add("x-user", "alice")
        metadata.add("x-trace-bin", binary: [0, 1, 2, 255, 254])
        let result = try #require(try pair.roundTrip("/test.Echo/Echo", Array("hello".utf8), metadata: metadata))
        let response = try result.get()
        #expect(response.message == Array("hello".utf8))
        #expect(response.metadata["x-user"] == "alice")
        #expect(response.metadata.binary("x-trace-bin") == [0, 1, 2, 255, 254])
        #expect(response.trailers["x-echo-count"] == "5")
    }

    @Test func emptyMessageRoundTrips() throws {
        let pair = try InMemoryPair(router: testRouter())
        #expect(try pair.roundTrip("/test.Echo/Echo", [])?.message == [])
    }

    @Test(arguments: [1, 3, 7, 1000])
    func requestSplitAcrossManyReads(chunkSize: Int) throws {
        let pair = try InMemoryPair(router: testRouter())
        pair.chunkSize = chunkSize
        // 100 KiB spans several 16 KiB DATA frames; tiny reads split frames and the prefix.
        let message = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(try pair.roundTrip("/test.Echo/Echo", message)?.message == message)
    }

    @Test func interleavedStreamsAnsweredOutOfOrder() throws {
        let pair = try InMemoryPair(router: testRouter())
        let ids = try (0..<50).map { try pair.call("/test.Echo/Slow", [UInt8($0)]) }
        try pair.pump()
        #expect(pair.pending.count == 50)
        #expect(pair.server.inFlight == 50)
        for id in ids.reversed() {
            let request = try #require(pair.pending[id])
            pair.pending[id] = nil
            pair.server.complete(streamID: id, result: .success(GRPCResponse(message: request.message + [9])))
        }
        try pair.pump()
        for (index, id) in ids.enumerated() {
            #expect(pair.completions[id]?.message == [UInt8(index), 9])
        }
        #expect(pair.client.activeCalls == 0)
        #expect(pair.server.inFlight == 0)
    }

    @Test func deadlineExpires() throws {
        let pair = try InMemoryPair(router: testRouter())
        let id = try pair.call("/test.Echo/Slow", [1], timeout: .milliseconds(250))
        try pair.pump()
        let request = try #require(pair.pending[id])
        #expect(request.timeout == .milliseconds(250))
        #expect(pair.server.expire(streamID: id))
        try pair.pump()
        #expect(pair.completions[id]?.error?.code == .deadlineExceeded)
        // A late answer from the handler is dropped, not sent on a finished stream.
        pair.server.complete(streamID: id, result: .success(GRPCResponse(message: [2])))
        try pair.pump()
        #expect(pair.completions[id]?.error?.code == .deadlineExceeded)
        #expect(!pair.server.expire(streamID: id))
    }

    @Test func oversizedMessageIsResourceExhausted() throws {
        let pair = try InMemoryPair(router: testRouter(), config: GRPCServerConfig(maxReceiveMessageSize: 1024))
        let error = try pair.roundTrip("/test.Echo/Echo", [UInt8](repeating: 7, count: 5000))?.error
        #expect(error?.code == .resourceExhausted)
        #expect(error?.message.contains("5000") ?? false)
        // The connection still serves other calls.
        #expect(try pair.roundTrip("/test.Echo/Echo", [1, 2])?.message == [1, 2])
    }

    @Test func defaultMaxIsFourMiB() throws {
        let pair = try InMemoryPair(router: testRouter())
        let ok = [UInt8](repeating: 1, count: 4 << 20)
        #expect(try pair.roundTrip("/test.Echo/Echo", ok)?.message?.count == 4 << 20)
        #expect(try pair.roundTrip("/test.Echo/Echo", ok + [1])?.error?.code == .resourceExhausted)
    }

    @Test func unknownMethodIsUnimplemented() throws {
        let pair = try InMemoryPair(router: testRouter())
        let error = try pair.roundTrip("/test.Echo/Nope", [1])?.error
        #expect(error?.code == .unimplemented)
        #expect(error?.message == "unknown method /test.Echo/Nope")
        #expect(try pair.roundTrip("/other.Service/Echo", [1])?.error?.code == .unimplemented)
    }

    @Test(arguments: [GRPCStatusCode.aborted, .failedPrecondition, .unavailable, .invalidArgument, .internal])
    func errorStatusesReachTheClient(code: GRPCStatusCode) throws {
        let pair = try InMemoryPair(router: testRouter())
        var metadata = Metadata()
        metadata.add("x-code", String(code.rawValue))
        let text = "100% wrong: ünïcode\nnewline"
        let error = try #require(try pair.roundTrip("/test.Echo/Fail", Array(text.utf8), metadata: metadata)?.error)
        #expect(error.code == code)
        #expect(error.message == "100% wrong: ünïcode\nnewline")
        #expect(error.metadata["x-reason"] == "asked")
    }

    @Test func clientResetCancelsTheHandler() throws {
        let pair = try InMemoryPair(router: testRouter())
        let id = try pair.call("/test.Echo/Slow", [1])
        try pair.pump()
        #expect(pair.pending[id] != nil)
        let completion = pair.client.cancel(streamID: id, with: RPCError(.cancelled, "caller gave up"))
        #expect(completion?.result.error?.code == .cancelled)
        try pair.pump()
        #expect(pair.cancelled == [id])
        #expect(pair.server.inFlight == 0)
        // Completing a cancelled call is harmless.
        pair.server.complete(streamID: id, result: .success(GRPCResponse(message: [])))
        try pair.pump()
    }

    @Test func gracefulShutdownFinishesCallsInFlight() throws {
        let pair = try InMemoryPair(router: testRouter())
        let id = try pair.call("/test.Echo/Slow", [5])
        try pair.pump()
        pair.server.beginShutdown()
        pair.server.finishShutdown()
        try pair.pump()
        #expect(pair.client.isGoingAway)
        #expect(!pair.client.hasCapacity)
        #expect(!pair.server.canClose)
        pair.server.complete(streamID: id, result: .success(GRPCResponse(message: [6])))
        try pair.pump()
        #expect(pair.completions[id]?.message == [6])
        #expect(pair.server.canClose)
    }

    @Test func streamsAfterGoAwayAreUnavailableForTheClient() throws {
        let pair = try InMemoryPair(router: testRouter())
        let first = try pair.call("/test.Echo/Slow", [1])
        try pair.pump()
        pair.server.finishShutdown()
        // A call the server never saw before its GOAWAY.
        let late = try pair.call("/test.Echo/Echo", [2])
        try pair.pump()
        #expect(pair.completions[late]?.error?.code == .unavailable)
        pair.server.complete(streamID: first, result: .success(GRPCResponse(message: [1])))
        try pair.pump()
        #expect(pair.completions[first]?.message == [1])
    }

    @Test func garbageFromThePeerIsAFatalError() throws {
        let server = try GRPCServerConnection(router: testRouter())
        _ = try server.pendingOutput()
        #expect(throws: HTTP2Error.self) {
            _ = try server.receive(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        }
    }
}
