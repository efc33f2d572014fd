import DtmGRPC

/// Paths the fuzzed server serves: an inline echo, an inline failure and a handler the target
/// answers later (completed, failed or expired, chosen by the input).
enum FuzzRoutes {
    static let echo = "/fuzz.Svc/Echo"
    static let fail = "/fuzz.Svc/Fail"
    static let later = "/fuzz.Svc/Later"

    static let router: GRPCRouter = {
        var router = GRPCRouter()
        router.register(echo, .sync { request in
            GRPCResponse(message: request.message, metadata: request.metadata, trailers: request.metadata)
        })
        router.register(fail, .sync { request throws(RPCError) in
            throw RPCError(.failedPrecondition, String(decoding: request.message, as: UTF8.self),
                           metadata: request.metadata)
        })
        router.register(later, .async { request in GRPCResponse(message: request.message) })
        return router
    }()

    /// Small limits, so that short inputs reach them.
    static let config = GRPCServerConfig(
        maxReceiveMessageSize: 1024, maxBufferedBytesPerConnection: 8192,
        http2: HTTP2Settings(maxConcurrentStreams: 16, initialWindowSize: 4096,
                             connectionWindowSize: 16384, maxHeaderListSize: 4096))
}

/// Runs a server connection's actions the way the transport does, and checks the action
/// stream is consistent: a stream starts once, only started streams are cancelled.
struct ServerDriver {
    let server: GRPCServerConnection
    /// Async calls started and not answered yet.
    var waiting: [Int32] = []
    var started: Set<Int32> = []

    init() throws(FuzzFailure) {
        do {
            server = try GRPCServerConnection(router: FuzzRoutes.router, config: FuzzRoutes.config)
        } catch {
            throw FuzzFailure("server connection could not be created: \(error)")
        }
    }

    mutating func run(_ actions: [GRPCServerAction]) throws(FuzzFailure) {
        for action in actions {
            switch action {
            case .start(let id, let request, let handler):
                try require(started.insert(id).inserted, "stream \(id) started twice")
                try require(request.message.count <= FuzzRoutes.config.maxReceiveMessageSize,
                            "a \(request.message.count)-byte message passed the size limit")
                switch handler {
                case .sync(let body):
                    server.complete(streamID: id, result: Result { () throws(RPCError) in try body(request) })
                case .async, .streaming:
                    waiting.append(id)
                }
            case .startStreaming(let id, _, _), .requestMessage(let id, _), .endOfRequests(let id):
                // The fuzz router has no streaming method.
                try require(false, "streaming action for stream \(id) from a unary-only router")
            case .cancel(let id):
                try require(started.contains(id), "cancel for stream \(id) that never started")
                waiting.removeAll { $0 == id }
            }
        }
        try require(server.inFlight == waiting.count,
                    "server counts \(server.inFlight) calls in flight, the driver \(waiting.count)")
    }

    /// Answers the oldest waiting call: `how` picks success, failure or deadline.
    mutating func answer(_ how: UInt8) {
        guard !waiting.isEmpty else { return }
        let id = waiting.removeFirst()
        switch how % 3 {
        case 0: server.complete(streamID: id, result: .success(GRPCResponse(message: [how])))
        case 1: server.complete(streamID: id, result: .failure(RPCError(.aborted, "fuzz \(how)")))
        default: server.expire(streamID: id)
        }
    }

    func drain() throws(HTTP2Error) -> Int {
        var count = 0
        try server.drainOutput { count += $0.count }
        return count
    }
}

extension FuzzTarget {
    /// The client connection preface (RFC 9113 §3.4); the input starts right after it.
    static let clientMagic = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// Raw bytes into a gRPC server connection after a valid preface: the input's first byte
    /// picks how the rest is cut into reads (as TCP would), every read's actions are run and
    /// output drained, and waiting calls are answered between reads.
    static let http2Server = FuzzTarget(
        name: "http2-server",
        summary: "raw HTTP/2 frames into the gRPC server connection (nghttp2 session + gRPC layer)"
    ) { data throws(FuzzFailure) in
        var input = FuzzInput(data)
        let cut = Int(input.byte())
        let body = input.rest()
        var driver = try ServerDriver()
        var reads: [ArraySlice<UInt8>] = []
        let stride = cut == 0 ? max(body.count, 1) : cut
        var offset = 0
        while offset < body.count {
            reads.append(body[offset..<min(offset + stride, body.count)])
            offset += stride
        }
        do {
            _ = try driver.drain()
            try driver.run(try driver.server.receive(clientMagic))
            for (index, read) in reads.enumerated() {
                let actions = try Array(read).withUnsafeBytes { raw in
                    Result { () throws(HTTP2Error) in try driver.server.receive(raw) }
                }.get()
                try driver.run(actions)
                driver.answer(read.first ?? UInt8(truncatingIfNeeded: index))
                _ = try driver.drain()
            }
            while !driver.waiting.isEmpty { driver.answer(0) }
            try require(driver.server.inFlight == 0, "calls still in flight after all were answered")
            driver.server.beginShutdown()
            driver.server.finishShutdown()
            _ = try driver.drain()
        } catch let failure as FuzzFailure {
            throw failure
        } catch {
            // The peer broke the protocol: the transport flushes what is queued (GOAWAY) and
            // closes. That flush must work, and answering calls afterwards must be harmless.
            _ = try? driver.drain()
            while !driver.waiting.isEmpty { driver.answer(1) }
            _ = try? driver.drain()
        }
    }

    /// A real client against the server, both in memory: the input is a program of calls
    /// (path, metadata, message, timeout) and answers. Checks every call completes, echoes come
    /// back byte for byte with their metadata, and errors keep their code and message.
    static let grpcCalls = FuzzTarget(
        name: "grpc-calls",
        summary: "gRPC calls from a client connection to a server connection: metadata, messages, deadlines"
    ) { data throws(FuzzFailure) in
        var input = FuzzInput(data)
        var driver = try ServerDriver()
        let client: GRPCClientConnection
        do {
            client = try GRPCClientConnection(authority: "fuzz:1", maxReceiveMessageSize: 2048)
        } catch {
            throw FuzzFailure("client connection could not be created: \(error)")
        }
        struct Sent { var path: String; var message: [UInt8]; var metadata: Metadata; var timeout: Duration? }
        var sent: [Int32: Sent] = [:]
        var completions: [Int32: Result<GRPCResponse, RPCError>] = [:]

        func pump() throws(FuzzFailure) {
            do {
                while true {
                    let toServer = try client.pendingOutput()
                    let toClient = try driver.server.pendingOutput()
                    if toServer.isEmpty && toClient.isEmpty { return }
                    try driver.run(try driver.server.receive(toServer))
                    for completion in try client.receive(toClient) {
                        try require(sent[completion.streamID] != nil, "completion for unknown stream \(completion.streamID)")
                        try require(completions.updateValue(completion.result, forKey: completion.streamID) == nil,
                                    "stream \(completion.streamID) completed twice")
                    }
                }
            } catch let failure as FuzzFailure {
                throw failure
            } catch {
                throw FuzzFailure("a well-formed client and server broke the connection: \(error)")
            }
        }

        var steps = 0
        while !input.isAtEnd && steps < 64 {
            steps += 1
            let op = input.byte()
            switch op % 4 {
            case 0, 1:
                let path = [FuzzRoutes.echo, FuzzRoutes.fail, FuzzRoutes.later, "/fuzz.Svc/Missing"][Int(op >> 2) % 4]
                var metadata = Metadata()
                for _ in 0..<Int(input.byte() % 4) {
                    let key = input.string(upTo: 24)
                    if input.bool() {
                        metadata.add(key + "-bin", binary: input.bytes(upTo: 64))
                    } else {
                        metadata.add(key, input.string(upTo: 64))
                    }
                }
                let message = input.bytes(upTo: 255) + (op & 0x80 != 0 ? [UInt8](repeating: 0x61, count: 1100) : [])
                let timeout: Duration? = input.bool() ? .milliseconds(Int64(input.byte()) * 1000) : nil
                if !client.hasCapacity { break }
                do {
                    let id = try client.startCall(path: path, message: message, metadata: metadata, timeout: timeout)
                    sent[id] = Sent(path: path, message: message, metadata: metadata, timeout: timeout)
                } catch {
                    // nghttp2 refuses a header it cannot send (e.g. an empty or uppercase name): no call.
                }
            case 2:
                driver.answer(input.byte())
            default:
                try pump()
            }
        }
        try pump()
        while !driver.waiting.isEmpty {
            driver.answer(input.byte())
            try pump()
        }
        for (id, call) in sent {
            // A call whose headers the server refused as malformed is reset rather than answered;
            // the client reports that as a completion too.
            guard let result = completions[id] else {
                throw FuzzFailure("call \(id) to \(call.path) never completed")
            }
            try checkOutcome(call.path, call.message, call.metadata, call.timeout, result)
        }
        try require(client.activeCalls == 0, "client still has \(client.activeCalls) active calls")
    }

    private static func checkOutcome(_ path: String, _ message: [UInt8], _ metadata: Metadata, _ timeout: Duration?,
                                     _ result: Result<GRPCResponse, RPCError>) throws(FuzzFailure) {
        // A call with a deadline may find it passed (a zero timeout always does): the server
        // answers DEADLINE_EXCEEDED without running it.
        if timeout != nil, case .failure(let error) = result, error.code == .deadlineExceeded { return }
        let valid = metadata.allSatisfy { entry in
            guard Self.isSendableKey(entry.key), Self.isSendableValue(entry.value) else { return false }
            if case .string = entry.value { return !entry.key.hasSuffix("-bin") }
            return entry.key.hasSuffix("-bin")
        }
        if message.count > FuzzRoutes.config.maxReceiveMessageSize {
            if case .success = result { throw FuzzFailure("a message over the limit was served on \(path)") }
            return
        }
        guard valid else { return }
        // The server refuses streams over its limit that the client opened before it saw the
        // server's SETTINGS (RFC 9113 §5.1.2): a retryable outcome for any call.
        if case .failure(let error) = result, error.code == .unavailable { return }
        switch (path, result) {
        case (FuzzRoutes.echo, .success(let response)):
            try require(response.message == message, "echo returned other bytes")
            try require(response.metadata == metadata, "echo metadata changed: \(metadata) -> \(response.metadata)")
        case (FuzzRoutes.echo, .failure(let error)):
            // Echoing the request's metadata can exceed the client's header list limit.
            try require(error.code == .internal || error.code == .resourceExhausted,
                        "echo failed: \(error)")
        case (FuzzRoutes.fail, .failure(let error)):
            if error.code == .failedPrecondition {
                let text = String(decoding: message, as: UTF8.self)
                try require(error.message == text, "error message changed on the wire: \(text.debugDescription) -> \(error.message.debugDescription)")
            }
        case ("/fuzz.Svc/Missing", .failure(let error)):
            try require(error.code == .unimplemented, "unknown method answered \(error)")
        case ("/fuzz.Svc/Missing", .success), (FuzzRoutes.fail, .success):
            throw FuzzFailure("\(path) succeeded")
        default:
            break
        }
    }

    /// A metadata key gRPC can carry: lowercase token characters, not reserved.
    static func isSendableKey(_ key: String) -> Bool {
        !key.isEmpty && !Metadata.isReserved(key)
            && key.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x5f || $0 == 0x2e }
    }

    /// A value HTTP/2 carries unchanged: printable ASCII without leading or trailing space.
    static func isSendableValue(_ value: Metadata.Value) -> Bool {
        switch value {
        case .binary: return true
        case .string(let text):
            if text.isEmpty { return true }
            let bytes = Array(text.utf8)
            return bytes.allSatisfy { $0 >= 0x20 && $0 <= 0x7e } && bytes.first != 0x20 && bytes.last != 0x20
        }
    }
}
