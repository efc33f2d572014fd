import CNghttp2
import DtmHTTP2

/// Hand-made HTTP/2 frames and HPACK blocks, for inputs no well-behaved client would send.
enum RawFrames {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let emptySettings = frame(type: 4, flags: 0, stream: 0, payload: [])
    static let settingsAck = frame(type: 4, flags: 1, stream: 0, payload: [])

    struct Frame {
        var type: UInt8
        var flags: UInt8
        var stream: Int32
        var payload: [UInt8]
        var endStream: Bool { flags & 1 != 0 }
    }

    static func frame(type: UInt8, flags: UInt8, stream: Int32, payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        return [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags,
                UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)]
            + payload
    }

    /// HEADERS with END_HEADERS (and END_STREAM when asked).
    static func headers(stream: Int32, block: [UInt8], endStream: Bool = false) -> [UInt8] {
        frame(type: 1, flags: 4 | (endStream ? 1 : 0), stream: stream, payload: block)
    }

    /// Splits bytes written by a peer into frames (after the 24-byte preface, if any).
    static func parse(_ bytes: [UInt8]) -> [Frame] {
        var frames: [Frame] = []
        var offset = bytes.starts(with: preface) ? preface.count : 0
        while offset + 9 <= bytes.count {
            let length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
            guard offset + 9 + length <= bytes.count else { break }
            let stream = Int32(bytes[offset + 5] & 0x7f) << 24 | Int32(bytes[offset + 6]) << 16
                | Int32(bytes[offset + 7]) << 8 | Int32(bytes[offset + 8])
            frames.append(Frame(type: bytes[offset + 3], flags: bytes[offset + 4], stream: stream,
                                payload: Array(bytes[offset + 9 ..< offset + 9 + length])))
            offset += 9 + length
        }
        return frames
    }

    // MARK: HPACK (RFC 7541)

    /// An integer with an N-bit prefix; `high` holds the bits above the prefix.
    static func integer(_ value: Int, prefixBits: Int, high: UInt8) -> [UInt8] {
        let max = (1 << prefixBits) - 1
        if value < max { return [high | UInt8(value)] }
        var out: [UInt8] = [high | UInt8(max)]
        var rest = value - max
        while rest >= 128 {
            out.append(UInt8(rest & 0x7f) | 0x80)
            rest >>= 7
        }
        out.append(UInt8(rest))
        return out
    }

    static func string(_ text: String) -> [UInt8] {
        integer(text.utf8.count, prefixBits: 7, high: 0) + Array(text.utf8)
    }

    /// Indexed field (static table 1...61, dynamic from 62).
    static func indexed(_ index: Int) -> [UInt8] { integer(index, prefixBits: 7, high: 0x80) }

    /// Literal without indexing, name from the table.
    static func literal(nameIndex: Int, value: String) -> [UInt8] {
        integer(nameIndex, prefixBits: 4, high: 0) + string(value)
    }

    /// Literal without indexing, new name.
    static func literal(_ name: String, _ value: String) -> [UInt8] { [0] + string(name) + string(value) }

    /// Literal with incremental indexing, new name: the field enters the dynamic table.
    static func indexing(_ name: String, _ value: String) -> [UInt8] { [0x40] + string(name) + string(value) }

    /// A gRPC request's header fields, all without indexing.
    static func grpcRequest(path: String) -> [UInt8] {
        indexed(3) + indexed(6)  // :method POST, :scheme http
            + literal(nameIndex: 4, value: path) + literal(nameIndex: 1, value: "x")
            + literal(nameIndex: 31, value: "application/grpc") + literal("te", "trailers")
    }
}

/// Decodes the header blocks a server sends, in order (one HPACK context). Owns its nghttp2
/// inflater and frees it in `deinit`.
final class HPACKDecoder {
    private let inflater: OpaquePointer

    init() throws {
        var created: OpaquePointer?
        guard nghttp2_hd_inflate_new(&created) == 0, let created else { throw HPACKDecodeError() }
        inflater = created
    }

    deinit { nghttp2_hd_inflate_del(inflater) }

    func decode(_ block: [UInt8]) throws -> [HeaderField] {
        var fields: [HeaderField] = []
        try block.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while true {
                var nv = nghttp2_nv()
                var flags: Int32 = 0
                let used = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, base + offset, buffer.count - offset, 1)
                if used < 0 { throw HPACKDecodeError() }
                offset += used
                if flags & Int32(NGHTTP2_HD_INFLATE_EMIT.rawValue) != 0 {
                    fields.append(HeaderField(
                        String(decoding: UnsafeBufferPointer(start: nv.name, count: nv.namelen), as: UTF8.self),
                        String(decoding: UnsafeBufferPointer(start: nv.value, count: nv.valuelen), as: UTF8.self)))
                }
                if flags & Int32(NGHTTP2_HD_INFLATE_FINAL.rawValue) != 0 {
                    nghttp2_hd_inflate_end_headers(inflater)
                    return
                }
                if used == 0 && flags & Int32(NGHTTP2_HD_INFLATE_EMIT.rawValue) == 0 { throw HPACKDecodeError() }
            }
        }
        return fields
    }
}

struct HPACKDecodeError: Error {}
