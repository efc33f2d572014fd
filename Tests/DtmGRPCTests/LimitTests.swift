import Testing
@testable import DtmGRPC

/// Limits a hostile or broken peer runs into: header list size, concurrent streams, deadlines.
@Suite struct LimitTests {
    /// A server connection past the handshake, driven with raw frames; `decoder` reads its
    /// answers in order.
    private final class RawPeer {
        let server: GRPCServerConnection
        let decoder: HPACKDecoder
        var actions: [GRPCServerAction] = []
        /// Decoded header blocks the server sent, per stream, and RST_STREAM / GOAWAY frames seen.
        var blocks: [Int32: [[HeaderField]]] = [:]
        var endedStreams: Set<Int32> = []
        var resets: [Int32: UInt32] = [:]
        var goAwayCode: UInt32?

        init(router: GRPCRouter = testRouter(), config: GRPCServerConfig = GRPCServerConfig(),
             now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) throws {
            server = try GRPCServerConnection(router: router, config: config, now: now)
            decoder = try HPACKDecoder()
            try send(RawFrames.preface + RawFrames.emptySettings)
            try send(RawFrames.settingsAck)
        }

        func send(_ bytes: [UInt8]) throws {
            if !bytes.isEmpty { actions += try server.receive(bytes) }
            for frame in RawFrames.parse(try server.pendingOutput()) {
                switch frame.type {
                case 1:
                    blocks[frame.stream, default: []].append(try decoder.decode(frame.payload))
                    if frame.endStream { endedStreams.insert(frame.stream) }
                case 3:
                    resets[frame.stream] = frame.payload.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
                case 7:
                    goAwayCode = frame.payload.dropFirst(4).prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
                default:
                    break
                }
            }
        }
    }

    /// Finding 4: HEADERS frames of about 1 KB that each name one 4 KB HPACK table entry 1000
    /// times decode to 4 MB apiece. Every such stream is refused with RESOURCE_EXHAUSTED as its
    /// list passes 16 KiB, no handler starts, and the connection keeps serving within its limits.
    @Test func hpackAmplificationIsRefusedPerStream() throws {
        let peer = try RawPeer()
        let entry = RawFrames.indexing("x-amp", String(repeating: "a", count: 4000))
        let references = [UInt8](repeating: RawFrames.indexed(62)[0], count: 1000)
        var wireBytes = 0
        for n in 0..<100 {
            let stream = Int32(2 * n + 1)
            let block = RawFrames.grpcRequest(path: "/test.Echo/Echo") + (n == 0 ? entry : []) + references
            let frame = RawFrames.headers(stream: stream, block: block)
            wireBytes += frame.count
            try peer.send(frame)
        }
        #expect(wireBytes < 120_000, "the attack is small on the wire")
        #expect(peer.actions.isEmpty, "no handler started")
        #expect(peer.goAwayCode == nil, "the connection survives")
        #expect(peer.server.bufferedRequestBytes == 0)
        for n in 0..<100 {
            let stream = Int32(2 * n + 1)
            let answer = try #require(peer.blocks[stream]?.last, "stream \(stream) answered")
            #expect(peer.endedStreams.contains(stream))
            #expect(answer["grpc-status"] == String(GRPCStatusCode.resourceExhausted.rawValue))
            #expect(Wire.percentDecode(answer["grpc-message"] ?? "").contains("exceeds the limit of 16384 bytes"))
        }
    }

    /// A streaming call whose request trailers pass the header list limit ends with
    /// RESOURCE_EXHAUSTED and its handler is cancelled, instead of waiting for more requests.
    @Test func oversizedTrailersEndAStreamingCall() throws {
        let peer = try RawPeer(router: streamingRouter(HandlerLog()))
        try peer.send(RawFrames.headers(stream: 1, block: RawFrames.grpcRequest(path: "/test.Stream/Echo")))
        guard case .startStreaming(1, _, _)? = peer.actions.first else {
            Issue.record("no streaming call started: \(peer.actions)")
            return
        }
        // 4 KB on the wire (one frame), 20 KB once decoded.
        let trailers = RawFrames.indexing("x-big", String(repeating: "b", count: 4000))
            + [UInt8](repeating: RawFrames.indexed(62)[0], count: 4)
        try peer.send(RawFrames.headers(stream: 1, block: trailers, endStream: true))
        guard case .cancel(1)? = peer.actions.last else {
            Issue.record("the handler was not cancelled: \(peer.actions)")
            return
        }
        let answer = try #require(peer.blocks[1]?.last)
        #expect(answer["grpc-status"] == String(GRPCStatusCode.resourceExhausted.rawValue))
        #expect(Wire.percentDecode(answer["grpc-message"] ?? "").contains("exceeds the limit of 16384 bytes"))
        #expect(peer.server.inFlight == 0)
    }

    /// A request whose header list fits is served; one just over the limit is refused with a
    /// status that names the limit, and the next call on the same connection still works.
    @Test func headerListLimitIsCountedAsRFC9113Does() throws {
        let pair = try InMemoryPair(router: testRouter(), config: GRPCServerConfig(
            http2: HTTP2Settings(maxHeaderListSize: 4096)))
        var small = Metadata()
        small.add("x-pad", String(repeating: "p", count: 3000))
        #expect(try pair.roundTrip("/test.Echo/Echo", [1], metadata: small)?.message == [1])
        var large = Metadata()
        large.add("x-pad", String(repeating: "p", count: 4096))
        let refused = try #require(try pair.roundTrip("/test.Echo/Echo", [2], metadata: large)?.error)
        #expect(refused.code == .resourceExhausted)
        #expect(refused.message.contains("limit of 4096 bytes"))
        #expect(try pair.roundTrip("/test.Echo/Echo", [3])?.message == [3])
    }

    /// The client applies the same limit to what a server answers.
    @Test func oversizedResponseHeadersFailTheCall() throws {
        var router = GRPCRouter()
        router.register(service: "test.Echo", method: "Big", .sync { request in
            var metadata = Metadata()
            metadata.add("x-big", String(repeating: "b", count: 20_000))
            return GRPCResponse(message: request.message, metadata: metadata)
        })
        let pair = try InMemoryPair(router: router)
        let error = try #require(try pair.roundTrip("/test.Echo/Big", [1])?.error)
        #expect(error.code == .resourceExhausted)
    }

    /// SETTINGS_MAX_CONCURRENT_STREAMS is enforced, not only advertised: a stream past it is
    /// never served.
    @Test func streamsPastTheConcurrencyLimitAreNotServed() throws {
        let peer = try RawPeer(config: GRPCServerConfig(http2: HTTP2Settings(maxConcurrentStreams: 2)))
        for stream in [Int32(1), 3, 5] {
            try peer.send(RawFrames.headers(stream: stream, block: RawFrames.grpcRequest(path: "/test.Echo/Slow")))
        }
        #expect(peer.resets[5] != nil || peer.goAwayCode != nil, "stream 5 refused")
        #expect(peer.blocks[5] == nil)
        #expect(peer.server.openStreams <= 2)
    }

    /// A clock the test moves by hand.
    private final class ManualClock: @unchecked Sendable {
        var now = ContinuousClock.now
    }

    /// A peer that sends headers and part of a message, then stalls, loses the stream after the
    /// receive timeout: answered RESOURCE_EXHAUSTED, buffer freed. A complete request is untouched.
    @Test func stalledRequestIsCutOffAndItsBufferFreed() throws {
        let clock = ManualClock()
        let peer = try RawPeer(now: { clock.now })
        try peer.send(RawFrames.headers(stream: 1, block: RawFrames.grpcRequest(path: "/test.Echo/Slow")))
        let partial = [0, 0, 0, 0, 100] + [UInt8](repeating: 7, count: 10)  // declares 100 bytes, sends 10
        try peer.send(RawFrames.frame(type: 0, flags: 0, stream: 1, payload: partial))
        #expect(peer.server.bufferedRequestBytes == 15)
        #expect(peer.server.hasIncompleteRequests)
        clock.now += .seconds(10)
        #expect(peer.server.cutOffSlowRequests(limit: .seconds(30)) == 0)
        clock.now += .seconds(21)
        #expect(peer.server.cutOffSlowRequests(limit: .seconds(30)) == 1)
        try peer.send([])
        #expect(peer.server.bufferedRequestBytes == 0)
        #expect(!peer.server.hasIncompleteRequests)
        #expect(peer.endedStreams.contains(1))
        #expect(peer.blocks[1]?.last?["grpc-status"] == String(GRPCStatusCode.resourceExhausted.rawValue))
    }

    /// A call the server never processed (GOAWAY names an earlier last stream) is marked so the
    /// transport may send it again on another connection.
    @Test func callCutOffByGoAwayIsMarkedUnprocessed() throws {
        let pair = try InMemoryPair(router: testRouter())
        try pair.pump()
        pair.server.finishShutdown()
        let id = try pair.call("/test.Echo/Echo", [1])
        let completions = try pair.client.receive(try pair.server.pendingOutput())
        let completion = try #require(completions.first { $0.streamID == id })
        #expect(completion.unprocessed)
        #expect(completion.result.error?.code == .unavailable)
    }

    /// Finding: a call whose grpc-timeout has already expired when its request is complete is
    /// answered DEADLINE_EXCEEDED and its handler never starts.
    @Test func expiredCallIsNotDispatched() throws {
        let pair = try InMemoryPair(router: testRouter())
        let id = try pair.call("/test.Echo/Slow", [1], timeout: .zero)
        try pair.pump()
        #expect(pair.pending.isEmpty, "handler must not start")
        #expect(pair.completions[id]?.error?.code == .deadlineExceeded)
    }

    /// A live deadline reaches the handler, which can check it before doing durable work.
    @Test func dispatchedCallCarriesItsDeadline() throws {
        let pair = try InMemoryPair(router: testRouter())
        let id = try pair.call("/test.Echo/Slow", [1], timeout: .seconds(60))
        try pair.pump()
        let request = try #require(pair.pending[id])
        let deadline = try #require(request.deadline)
        #expect(deadline > .now)
        #expect(throws: Never.self) { try request.checkDeadline() }
        #expect(throws: RPCError.self) { try request.checkDeadline(now: deadline) }
    }
}
