import Testing
@testable import DtmGRPC

/// Requests no well-behaved gRPC client would send, made with a raw HTTP/2 client session.
@Suite struct RawWireTests {
    /// Sends one request and returns the header blocks the server answered with.
    private func exchange(headers: [HeaderField], body: [UInt8],
                          router: GRPCRouter = testRouter()) throws -> [[HeaderField]] {
        let server = try GRPCServerConnection(router: router)
        let client = try HTTP2Session(role: .client)
        let id = try client.submitRequest(headers: headers, body: body)
        var blocks: [[HeaderField]] = []
        for _ in 0..<6 {
            for action in try server.receive(try client.pendingOutput()) {
                if case .start(let sid, let request, .sync(let handler)) = action {
                    server.complete(streamID: sid, result: Result { () throws(RPCError) in try handler(request) })
                }
            }
            for event in try client.receive(try server.pendingOutput()) {
                if case .headers(id, let fields, _) = event { blocks.append(fields) }
            }
        }
        return blocks
    }

    private func grpcMessage(_ blocks: [[HeaderField]]) -> String {
        Wire.percentDecode(blocks.last?["grpc-message"] ?? "")
    }

    private func requestHeaders(path: String = "/test.Echo/Echo", contentType: String = "application/grpc",
                                extra: [HeaderField] = []) -> [HeaderField] {
        [HeaderField(":method", "POST"), HeaderField(":scheme", "http"), HeaderField(":path", path),
         HeaderField(":authority", "x"), HeaderField("content-type", contentType),
         HeaderField("te", "trailers")] + extra
    }

    @Test func badContentTypeIs415WithAStatus() throws {
        let blocks = try exchange(headers: requestHeaders(contentType: "application/json"), body: Array("{}".utf8))
        let only = try #require(blocks.first)
        #expect(blocks.count == 1)
        #expect(only[":status"] == "415")
        #expect(only["grpc-status"] == "13")
        #expect(only["grpc-message"]?.contains("application/json") == true)
    }

    @Test(arguments: ["application/grpc", "application/grpc+proto", "application/grpc;charset=utf-8"])
    func grpcContentTypesAreAccepted(contentType: String) throws {
        let blocks = try exchange(headers: requestHeaders(contentType: contentType), body: Wire.frame([1]))
        #expect(blocks.last?["grpc-status"] == "0")
    }

    @Test func compressedFlagWithoutEncodingIsRejected() throws {
        var body = Wire.frame([1, 2, 3])
        body[0] = 1
        let blocks = try exchange(headers: requestHeaders(), body: body)
        #expect(blocks.last?["grpc-status"] == "13")
        #expect(grpcMessage(blocks).contains("compressed flag"))
    }

    @Test func unsupportedEncodingIsUnimplemented() throws {
        let blocks = try exchange(headers: requestHeaders(extra: [HeaderField("grpc-encoding", "gzip")]),
                                  body: Wire.frame([1]))
        #expect(blocks.last?["grpc-status"] == "12")
    }

    @Test func malformedTimeoutIsRejected() throws {
        let blocks = try exchange(headers: requestHeaders(extra: [HeaderField("grpc-timeout", "soon")]),
                                  body: Wire.frame([1]))
        #expect(blocks.last?["grpc-status"] == "13")
    }

    @Test func truncatedMessageIsRejected() throws {
        let blocks = try exchange(headers: requestHeaders(), body: Array(Wire.frame([1, 2, 3, 4]).prefix(7)))
        #expect(blocks.last?["grpc-status"] == "13")
        #expect(grpcMessage(blocks).contains("declared 4 bytes"))
    }

    @Test func twoMessagesOnAUnaryCallAreRejected() throws {
        let blocks = try exchange(headers: requestHeaders(), body: Wire.frame([1]) + Wire.frame([2]))
        #expect(blocks.last?["grpc-status"] == "12")
    }

    @Test func getIsRejected() throws {
        var headers = requestHeaders()
        headers[0] = HeaderField(":method", "GET")
        let blocks = try exchange(headers: headers, body: [])
        #expect(blocks.first?[":status"] == "405")
    }

    @Test func invalidBinaryMetadataIsRejected() throws {
        let blocks = try exchange(headers: requestHeaders(extra: [HeaderField("x-data-bin", "!!!")]),
                                  body: Wire.frame([1]))
        #expect(blocks.last?["grpc-status"] == "13")
    }

    @Test func successHasHeadersThenTrailers() throws {
        let blocks = try exchange(headers: requestHeaders(), body: Wire.frame([1]))
        #expect(blocks.count == 2)
        #expect(blocks.first?[":status"] == "200")
        #expect(blocks.first?["content-type"] == "application/grpc")
        #expect(blocks.last?["grpc-status"] == "0")
    }
}

@Suite struct WireFormatTests {
    @Test(arguments: [
        ("1H", Duration.seconds(3600)), ("2M", .seconds(120)), ("3S", .seconds(3)),
        ("250m", .milliseconds(250)), ("7u", .microseconds(7)), ("99999999n", .nanoseconds(99_999_999)),
    ])
    func parsesEveryTimeoutUnit(text: String, duration: Duration) {
        #expect(Wire.parseTimeout(text) == duration)
    }

    @Test(arguments: ["", "S", "1", "123456789S", "1x", "-1S", "1.5S"])
    func rejectsMalformedTimeouts(text: String) {
        #expect(Wire.parseTimeout(text) == nil)
    }

    @Test(arguments: [Duration.milliseconds(1), .seconds(3), .seconds(86_400 * 400), .nanoseconds(5)])
    func formattedTimeoutsParseBackNoShorter(duration: Duration) throws {
        let text = Wire.formatTimeout(duration)
        let parsed = try #require(Wire.parseTimeout(text))
        #expect(parsed >= duration)
        #expect(text.count <= 9)
    }

    @Test func percentEncodingRoundTrips() {
        let text = "a%b ünï\r\n\u{7f}~"
        let encoded = Wire.percentEncode(text)
        #expect(encoded.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7e })
        #expect(encoded.hasPrefix("a%25b "))
        #expect(Wire.percentDecode(encoded) == text)
        #expect(Wire.percentDecode("bad %zz and %4") == "bad %zz and %4")
        #expect(Wire.percentEncode(" no such an url ") == "%20no such an url%20")
        #expect(Wire.percentEncode("   ") == "%20%20%20")
        #expect(Wire.percentDecode(Wire.percentEncode(" a b ")) == " a b ")
    }

    @Test func base64AcceptsPaddedAndUnpadded() {
        #expect(Base64.decode("AAEC") == [0, 1, 2])
        #expect(Base64.decode("AAE") == [0, 1])
        #expect(Base64.decode("AAE=") == [0, 1])
        #expect(Base64.decode("A") == nil)
        #expect(Base64.encode([0, 1]) == "AAE")
    }
}

@Suite struct SessionEndTests {
    /// A server preface that does not start with SETTINGS ends the client session; the
    /// connection must then be reported finished (the transport closes it and reconnects)
    /// rather than silently queueing calls forever.
    @Test func clientSessionEndsOnABadServerPreface() throws {
        let client = try GRPCClientConnection(authority: "x:1")
        _ = try client.pendingOutput()
        #expect(!client.isFinished)
        let settingsAck: [UInt8] = [0, 0, 0, 4, 1, 0, 0, 0, 0]
        _ = try? client.receive(settingsAck)
        let goaway = try client.pendingOutput()
        #expect(goaway.count >= 17)
        #expect(goaway[3] == 7, "a GOAWAY frame")
        #expect(client.isFinished)
    }
}

@Suite struct OversizedFrameTests {
    /// A frame longer than our SETTINGS_MAX_FRAME_SIZE (16 KiB) is a connection error: the
    /// server answers GOAWAY(FRAME_SIZE_ERROR) and wants nothing more from this connection,
    /// while a new connection is served as usual.
    @Test func frameLargerThanMaxFrameSizeEndsTheConnection() throws {
        let server = try GRPCServerConnection(router: testRouter())
        let client = try HTTP2Session(role: .client)
        _ = try server.receive(try client.pendingOutput())  // preface + SETTINGS
        _ = try client.receive(try server.pendingOutput())
        _ = try server.receive(try client.pendingOutput())  // SETTINGS ACK
        _ = try server.pendingOutput()
        // A DATA frame header announcing 20,000 bytes on stream 1, and the bytes.
        let length = 20_000
        var frame: [UInt8] = [UInt8(length >> 16), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), 0, 0, 0, 0, 0, 1]
        frame += [UInt8](repeating: 0, count: length)
        _ = try? server.receive(frame)
        let answer = try server.pendingOutput()
        // GOAWAY frame: type 7; error code FRAME_SIZE_ERROR (6) in bytes 13...16 of the frame.
        try #require(answer.count >= 17)
        #expect(answer[3] == 7, "GOAWAY, got frame type \(answer[3])")
        #expect(Array(answer[13..<17]) == [0, 0, 0, 6], "FRAME_SIZE_ERROR")
        #expect(server.canClose)

        let fresh = try InMemoryPair(router: testRouter())
        #expect(try fresh.roundTrip("/test.Echo/Echo", [1])?.message == [1])
    }
}
