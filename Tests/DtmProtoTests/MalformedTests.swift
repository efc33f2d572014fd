import DtmProto
import Testing

/// Bytes that are not a valid encoding of a message type.
struct MalformedCase: Sendable, CustomTestStringConvertible {
    let name: String
    let type: any ProtoMessage.Type
    let bytes: [UInt8]
    var testDescription: String { name }

    init(_ name: String, _ type: any ProtoMessage.Type, _ bytes: [UInt8]) {
        self.name = name
        self.type = type
        self.bytes = bytes
    }
}

extension ProtoMessage {
    /// Expects `bytes` to decode as this type or fail with `.malformed` (or `.invalidString`) naming this type, and
    /// returns whether it decoded.
    @discardableResult
    static func expectDecodesOrMalformed(
        _ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation
    ) -> Bool {
        switch decodeResult(Self.self, bytes) {
        case .success:
            return true
        case .failure(.invalidString(let message, _, _)):
            #expect(message == protoName, sourceLocation: sourceLocation)
            return false
        case .failure(let error):
            #expect(
                error == .malformed(message: protoName, byteCount: bytes.count),
                sourceLocation: sourceLocation)
            return false
        }
    }
}

@Suite("Malformed input")
struct MalformedTests {
    static let cases: [MalformedCase] = [
        MalformedCase("varint where a string belongs", DtmGidReply.self, [0x08, 0x01]),
        MalformedCase("fixed32 where a string belongs", DtmGidReply.self, [0x0d, 0, 0, 0, 0]),
        MalformedCase("fixed64 where an int64 belongs", BusiReqGrpc.self, [0x09, 0, 0, 0, 0, 0, 0, 0, 0]),
        MalformedCase("length-delimited where an int64 belongs", BusiReqGrpc.self, [0x0a, 0x01, 0x01]),
        MalformedCase("varint where a nested message belongs", DtmRequest.self, [0x1a, 0x01]),
        MalformedCase("length prefix beyond the end", DtmGidReply.self, [0x0a, 0x05, 0x61]),
        MalformedCase("length prefix beyond the end of repeated bytes", DtmRequest.self, [0x2a, 0x02, 0x00]),
        MalformedCase("huge length prefix", WorkflowData.self, [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]),
        MalformedCase("length prefix missing", DtmGidReply.self, [0x0a]),
        MalformedCase("truncated varint", BusiReqGrpc.self, [0x08, 0xff]),
        MalformedCase("varint longer than 10 bytes", BusiReqGrpc.self, [0x08] + Array(repeating: 0xff, count: 11)),
        MalformedCase("truncated nested message", DtmRequest.self, [0x1a, 0x02, 0x08]),
        MalformedCase("garbage inside a nested message", DtmRequest.self, [0x1a, 0x02, 0x0a, 0x07]),
        MalformedCase("garbage inside a repeated nested message", DtmProgressesReply.self, [0x12, 0x01, 0xff]),
        MalformedCase("garbage inside a map entry", DtmBranchRequest.self, [0x2a, 0x02, 0x0a, 0x09]),
        MalformedCase("invalid wire type 7", Empty.self, [0x0f]),
        MalformedCase("invalid wire type 6", DtmRequest.self, [0x0e, 0x00]),
        MalformedCase("group wire type", Empty.self, [0x0b, 0x0c]),
        MalformedCase("unknown field without its value", Empty.self, [0x98, 0x06]),
        MalformedCase("unknown fixed32 field cut short", DtmGidReply.self, [0x0a, 0x00, 0xa5, 0x06, 0x01]),
        MalformedCase("truncated tag", DtmRequest.self, [0x80]),
        MalformedCase("field number 0", DtmGidReply.self, [0x00, 0x00]),
    ]

    @Test("is rejected with a typed error", arguments: cases)
    func rejected(_ malformed: MalformedCase) {
        let decoded = malformed.type.expectDecodesOrMalformed(malformed.bytes)
        #expect(!decoded)
    }

    @Test func errorNamesTheMessageAndTheSize() {
        let error = ProtoError.malformed(message: "dtmgimp.DtmRequest", byteCount: 3)
        #expect(decodeResult(DtmRequest.self, [0x0a, 0x05, 0x61]) == .failure(error))
        #expect(error.description.contains("dtmgimp.DtmRequest"))
        #expect(error.description.contains("3 bytes"))
    }

    /// Every prefix of a valid encoding either ends on a field boundary, and then decodes to the
    /// fields before it, or is rejected with a typed error.
    @Test func everyPrefixOfARequestIsHandled() throws {
        // Add one field or element at a time: each partial encoding ends on a field boundary and
        // is a prefix of the next (protobuf-c writes fields in number order, maps in key order).
        var partial = DtmRequest()
        var valid: [Int: DtmRequest] = [0: partial]
        let steps: [(inout DtmRequest) -> Void] = [
            { $0.gid = fullRequest.gid },
            { $0.transType = fullRequest.transType },
            { $0.transOptions = fullRequest.transOptions },
            { $0.customedData = fullRequest.customedData },
        ] + fullRequest.binPayloads.map { payload in { $0.binPayloads.append(payload) } } + [
            { $0.queryPrepared = fullRequest.queryPrepared },
            { $0.steps = fullRequest.steps },
        ] + fullRequest.reqExtra.sorted { $0.key < $1.key }.map { pair in { $0.reqExtra[pair.key] = pair.value } } + [
            { $0.rollbackReason = fullRequest.rollbackReason },
        ]
        for step in steps {
            step(&partial)
            valid[partial.encode().count] = partial
        }
        #expect(partial == fullRequest)

        let bytes = fullRequest.encode()
        for length in 0...bytes.count {
            let prefix = Array(bytes.prefix(length))
            switch decodeResult(DtmRequest.self, prefix) {
            case .success(let decoded):
                #expect(decoded == valid[length], "prefix of \(length) bytes decoded")
            case .failure(let error):
                #expect(valid[length] == nil, "prefix of \(length) bytes rejected")
                #expect(error == .malformed(message: DtmRequest.protoName, byteCount: length))
            }
        }
    }

    @Test("every prefix of every sample decodes or throws", arguments: samples.indices)
    func everyPrefixOfEverySample(index: Int) {
        let sample = samples[index]
        let bytes = sample.encode()
        // The 1 MiB samples: cut near both ends rather than at a million lengths.
        let lengths = bytes.count < 4096 ? Array(0..<bytes.count) : Array(0..<64) + Array((bytes.count - 64)..<bytes.count)
        for length in lengths {
            type(of: sample).expectDecodesOrMalformed(Array(bytes.prefix(length)))
        }
    }

    @Test("random bytes decode or throw, never crash", arguments: allTypes.indices)
    func randomGarbage(index: Int) {
        var random = SplitMix64(state: 0x5EED_0000 + UInt64(index))
        var decoded = 0
        for _ in 0..<3000 {
            let count = Int.random(in: 0...48, using: &random)
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
            if allTypes[index].expectDecodesOrMalformed(bytes) { decoded += 1 }
        }
        #expect(decoded < 3000, "random bytes should mostly be rejected")
    }

    @Test("one message's bytes decoded as every other type never crash", arguments: samples.indices)
    func crossTypeDecoding(index: Int) {
        let bytes = samples[index].encode()
        for type in allTypes {
            type.expectDecodesOrMalformed(bytes)
        }
    }
}
