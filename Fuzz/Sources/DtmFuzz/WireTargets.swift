import DtmGRPC
import DtmEngine
import DtmProto
import DtmServer

extension FuzzTarget {
    /// gRPC's small wire formats, each checked against its inverse: the 5-byte message prefix,
    /// `grpc-timeout`, `grpc-message` percent-encoding, base64 `-bin` metadata and metadata
    /// read from header fields.
    static let grpcWire = FuzzTarget(
        name: "grpc-wire",
        summary: "gRPC message framing, grpc-timeout, grpc-message percent-encoding, -bin base64, metadata"
    ) { data throws(FuzzFailure) in
        var input = FuzzInput(data)
        let selector = input.byte()
        let rest = input.rest()
        let text = String(decoding: rest, as: UTF8.self)
        switch selector % 5 {
        case 0:
            // Deframing: whatever is accepted re-frames to the same bytes.
            if case .success(let message) = Wire.unaryMessage(from: rest, maxSize: 4096) {
                try require(Wire.frame(message) == rest, "unaryMessage/frame do not round-trip")
                try require(Wire.declaredLength(rest) == message.count, "declared length differs from the message")
            }
            try require(Wire.unaryMessage(from: Wire.frame(rest), maxSize: 1 << 20) == .success(rest),
                        "a framed message does not deframe to itself")
        case 1:
            // grpc-timeout: a parsed value formats back to a value at least as long, which parses.
            guard let timeout = Wire.parseTimeout(text) else { return }
            try require(timeout >= .zero, "negative timeout from '\(text)'")
            let formatted = Wire.formatTimeout(timeout)
            guard let again = Wire.parseTimeout(formatted) else {
                throw FuzzFailure("formatTimeout(\(timeout)) = '\(formatted)' does not parse")
            }
            try require(again >= timeout, "'\(text)' -> \(timeout) -> '\(formatted)' -> \(again) got shorter")
            try require(Wire.formatTimeout(again) == formatted, "formatTimeout is not stable for \(again)")
        case 2:
            // grpc-message: encoding makes a legal header value and decodes back exactly.
            let encoded = Wire.percentEncode(text)
            let bytes = Array(encoded.utf8)
            try require(bytes.allSatisfy { $0 >= 0x20 && $0 <= 0x7e }, "encoded message is not printable ASCII")
            try require(bytes.first != 0x20 && bytes.last != 0x20, "encoded message starts or ends with a space")
            try require(Wire.percentDecode(encoded) == text, "percent-encoding does not round-trip \(text.debugDescription)")
            _ = Wire.percentDecode(text)
        case 3:
            // -bin values: every byte string survives base64; any text decodes without trapping.
            try require(Base64.decode(Base64.encode(rest)) == rest, "base64 does not round-trip")
            if let bytes = Base64.decode(text) {
                try require(Base64.decode(Base64.encode(bytes)) == bytes, "decoded base64 does not round-trip")
            }
        default:
            // Metadata from received header fields, and back to fields. Names are lowercase, as
            // nghttp2 delivers them (it refuses a request with an uppercase header name).
            var fields: [HeaderField] = []
            var reader = FuzzInput(rest)
            while !reader.isAtEnd && fields.count < 32 {
                fields.append(HeaderField(reader.string(upTo: 32).lowercased(), reader.string(upTo: 96)))
            }
            guard let metadata = try? Metadata(headers: fields) else { return }
            let again = try? Metadata(headers: metadata.headerFields)
            try require(again == metadata, "metadata does not survive a trip through header fields")
            for field in fields { _ = Wire.parseTimeout(field.value); _ = Wire.isGRPCContentType(field.value) }
        }
    }

    /// Protobuf decode of every message type the coordinator receives or sends. Accepted input
    /// re-encodes to bytes that decode to the same value, and encoding is canonical.
    static let proto = FuzzTarget(
        name: "proto",
        summary: "protobuf-c decode of each dtmgimp/busi/workflow message, decode-encode-decode round trip"
    ) { data throws(FuzzFailure) in
        guard let selector = data.first else { return }
        let bytes = data.dropFirst()
        switch selector % 12 {
        case 0:
            try roundTrip(DtmRequest.self, bytes)
            // What the gRPC service makes of a DtmRequest must hold what an HTTP body must.
            if let request = try? DtmRequest(decoding: bytes), let converted = try? TransRequest(request) {
                try checkAccepted(converted)
            }
        case 1: try roundTrip(DtmBranchRequest.self, bytes)
        case 2: try roundTrip(DtmTransOptions.self, bytes)
        case 3: try roundTrip(DtmGidReply.self, bytes)
        case 4: try roundTrip(DtmProgressesReply.self, bytes)
        case 5: try roundTrip(DtmTransaction.self, bytes)
        case 6: try roundTrip(DtmProgress.self, bytes)
        case 7: try roundTrip(DtmTopicRequest.self, bytes)
        case 8: try roundTrip(BusiReqGrpc.self, bytes)
        case 9: try roundTrip(BusiReply.self, bytes)
        case 10: try roundTrip(WorkflowData.self, bytes)
        default: try roundTrip(Empty.self, bytes)
        }
    }

    private static func roundTrip<M: ProtoMessage>(_ type: M.Type, _ bytes: ArraySlice<UInt8>) throws(FuzzFailure) {
        guard let message = try? M(decoding: bytes) else { return }
        let encoded = message.encode()
        guard let again = try? M(decoding: encoded) else {
            throw FuzzFailure("\(M.protoName): re-encoded bytes do not decode")
        }
        try require(again == message, "\(M.protoName): decode(encode(m)) != m")
        try require(again.encode() == encoded, "\(M.protoName): encoding is not canonical")
    }
}
