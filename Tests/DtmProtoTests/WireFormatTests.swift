import DtmProto
import Testing

/// A message and its protobuf encoding, computed by hand from the .proto field numbers.
struct WireCase: Sendable, CustomTestStringConvertible {
    let name: String
    let message: any ProtoMessage
    let bytes: [UInt8]
    var testDescription: String { name }

    init(_ name: String, _ message: any ProtoMessage, _ bytes: [UInt8]) {
        self.name = name
        self.message = message
        self.bytes = bytes
    }
}

private func s(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite("Wire format")
struct WireFormatTests {
    /// What protobuf-c (and Go, for these values) writes: field key = number << 3 | wire type.
    static let canonical: [WireCase] = [
        WireCase("gid string", DtmGidReply(gid: "ab"), [0x0a, 0x02, 0x61, 0x62]),
        WireCase("empty message", Empty(), []),
        WireCase("all-default message", DtmRequest(), []),
        WireCase("non-ASCII string", BusiReply(message: "é"), [0x0a, 0x02, 0xc3, 0xa9]),
        WireCase(
            "int64 and string", BusiReqGrpc(amount: 30, transOutResult: "SUCCESS"),
            [0x08, 0x1e, 0x12, 0x07] + s("SUCCESS")),
        WireCase(
            "negative int64 is a 10-byte varint", BusiReqGrpc(amount: -1),
            [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        WireCase(
            "bool, multi-byte varint, map entry",
            DtmTransOptions(waitResult: true, timeoutToFail: 300, branchHeaders: ["a": "b"]),
            [0x08, 0x01, 0x10, 0xac, 0x02, 0x2a, 0x06, 0x0a, 0x01, 0x61, 0x12, 0x01, 0x62]),
        WireCase(
            "map entries in key order", DtmBranchRequest(data: ["b": "2", "a": "1"]),
            [0x2a, 0x06, 0x0a, 0x01, 0x61, 0x12, 0x01, 0x31, 0x2a, 0x06, 0x0a, 0x01, 0x62, 0x12, 0x01, 0x32]),
        WireCase(
            "present but empty nested message", DtmRequest(gid: "g", transOptions: DtmTransOptions()),
            [0x0a, 0x01, 0x67, 0x1a, 0x00]),
        WireCase(
            "nested message with a field", DtmRequest(transOptions: DtmTransOptions(retryLimit: 2)),
            [0x1a, 0x02, 0x38, 0x02]),
        WireCase(
            "repeated bytes with an empty element", DtmRequest(binPayloads: [[], [0xff]]),
            [0x2a, 0x00, 0x2a, 0x01, 0xff]),
        WireCase(
            "string fields 4 and bytes field 6", DtmBranchRequest(op: "try", busiPayload: [0x00]),
            [0x22, 0x03] + s("try") + [0x32, 0x01, 0x00]),
        WireCase(
            "repeated nested message", DtmProgressesReply(progresses: [DtmProgress(status: "s")]),
            [0x12, 0x03, 0x0a, 0x01, 0x73]),
        WireCase(
            "nested transaction and progress",
            DtmProgressesReply(transaction: DtmTransaction(result: "r"), progresses: [DtmProgress(op: "o")]),
            [0x0a, 0x03, 0x22, 0x01, 0x72, 0x12, 0x03, 0x22, 0x01, 0x6f]),
        WireCase("topic and url", DtmTopicRequest(topic: "t", url: "u"), [0x0a, 0x01, 0x74, 0x12, 0x01, 0x75]),
        WireCase("bytes", WorkflowData(data: [1, 2]), [0x0a, 0x02, 0x01, 0x02]),
        WireCase(
            "reqExtra and rollbackReason", DtmRequest(reqExtra: ["k": "v"], rollbackReason: "x"),
            [0x42, 0x06, 0x0a, 0x01, 0x6b, 0x12, 0x01, 0x76, 0x4a, 0x01, 0x78]),
    ]

    @Test("encodes to the known bytes", arguments: canonical)
    func encodes(_ wire: WireCase) {
        #expect(wire.message.encode() == wire.bytes)
    }

    @Test("decodes the known bytes", arguments: canonical)
    func decodes(_ wire: WireCase) throws {
        try expectDecodes(wire.bytes, as: wire.message)
    }

    /// Valid encodings other implementations may write but protobuf-c does not.
    static let alternative: [WireCase] = [
        WireCase(
            "map entry with explicit empty value (Go writes it)", DtmRequest(reqExtra: ["k": ""]),
            [0x42, 0x05, 0x0a, 0x01, 0x6b, 0x12, 0x00]),
        WireCase(
            "map entry without key", DtmBranchRequest(data: ["": "v"]), [0x2a, 0x03, 0x12, 0x01, 0x76]),
        WireCase("fields out of order", DtmTopicRequest(topic: "t", url: "u"), [0x12, 0x01, 0x75, 0x0a, 0x01, 0x74]),
        WireCase("last of a repeated scalar wins", DtmGidReply(gid: "b"), [0x0a, 0x01, 0x61, 0x0a, 0x01, 0x62]),
        WireCase(
            "last of a repeated map key wins", DtmRequest(reqExtra: ["k": "2"]),
            [0x42, 0x06, 0x0a, 0x01, 0x6b, 0x12, 0x01, 0x31, 0x42, 0x06, 0x0a, 0x01, 0x6b, 0x12, 0x01, 0x32]),
        WireCase("explicit default value", BusiReqGrpc(amount: 0), [0x08, 0x00]),
        WireCase("non-minimal varint", BusiReqGrpc(amount: 1), [0x08, 0x81, 0x00]),
        WireCase(
            "unknown varint field 99", DtmGidReply(gid: "a"), [0x0a, 0x01, 0x61, 0x98, 0x06, 0x01]),
        WireCase(
            "unknown fixed64, fixed32 and bytes fields", BusiReply(message: "m"),
            [0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x1d, 1, 2, 3, 4, 0x0a, 0x01, 0x6d, 0xa2, 0x06, 0x02, 0xff, 0xfe]),
        WireCase("unknown fields in an empty message", Empty(), [0x08, 0x01, 0x12, 0x01, 0x61]),
    ]

    @Test("decodes other valid encodings", arguments: alternative)
    func decodesAlternative(_ wire: WireCase) throws {
        try expectDecodes(wire.bytes, as: wire.message)
    }

    private func expectDecodes(_ bytes: [UInt8], as message: some ProtoMessage) throws {
        let decoded = try decodeSame(bytes, as: message)
        #expect(decoded == message)
    }

    private func decodeSame<M: ProtoMessage>(_ bytes: [UInt8], as _: M) throws -> M {
        try M(decoding: bytes)
    }

    /// Protobuf says a nested message that occurs twice is merged; protobuf-c 1.4.1 keeps only the
    /// fields set in the last occurrence. Senders (Go, grpcio) never split a message, so this
    /// only pins down what we do get: the later fields, and no error.
    @Test func aNestedMessageSplitInTwoKeepsTheLaterFields() throws {
        let decoded = try DtmRequest(decoding: [0x1a, 0x02, 0x08, 0x01, 0x1a, 0x02, 0x10, 0x05])
        #expect(decoded.transOptions?.timeoutToFail == 5)
    }

    @Test func unknownFieldAfterAFullRequestIsSkipped() throws {
        // Field 99, varint 1, then field 100, length-delimited "zz": neither is in dtmgimp.proto.
        let bytes = fullRequest.encode() + [0x98, 0x06, 0x01, 0xa2, 0x06, 0x02, 0x7a, 0x7a]
        let decoded = try DtmRequest(decoding: bytes)
        #expect(decoded == fullRequest)
        #expect(decoded.encode() == fullRequest.encode(), "unknown fields are dropped, not re-emitted")
    }

    @Test func aRequestReadAsAGidReplyKeepsFieldOne() throws {
        #expect(try DtmGidReply(decoding: fullRequest.encode()) == DtmGidReply(gid: fullRequest.gid))
        #expect(try Empty(decoding: fullRequest.encode()) == Empty())
    }
}
