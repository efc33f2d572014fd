/// Small pieces of the gRPC-over-HTTP/2 wire format.
package enum Wire {
    package static let contentType = "application/grpc"

    /// True for `application/grpc` and `application/grpc+<codec>` / `;params`.
    package static func isGRPCContentType(_ value: String?) -> Bool {
        guard let value else { return false }
        guard value.hasPrefix(contentType) else { return false }
        let rest = value.dropFirst(contentType.count)
        return rest.isEmpty || rest.first == "+" || rest.first == ";"
    }

    /// Prefixes a message with the 5-byte gRPC header (uncompressed).
    package static func frame(_ message: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(message.count + 5)
        let length = UInt32(message.count)
        out.append(0)
        out.append(UInt8(truncatingIfNeeded: length >> 24))
        out.append(UInt8(truncatingIfNeeded: length >> 16))
        out.append(UInt8(truncatingIfNeeded: length >> 8))
        out.append(UInt8(truncatingIfNeeded: length))
        out.append(contentsOf: message)
        return out
    }

    /// The single message of a unary call's DATA, checked against `maxSize`.
    /// `encodingNegotiated` is true when the peer sent a `grpc-encoding` other than identity
    /// (which we do not support and reject before getting here).
    /// The message is cut out of `buffer` in place (no copy when the caller hands its only reference).
    package static func unaryMessage(from buffer: consuming [UInt8], maxSize: Int) -> Result<[UInt8], RPCError> {
        guard buffer.count >= 5 else {
            return .failure(RPCError(.internal, buffer.isEmpty
                ? "unary call carried no message" : "message ended inside its 5-byte prefix"))
        }
        if buffer[0] != 0 {
            return .failure(RPCError(.internal,
                "message has the compressed flag set but no grpc-encoding was negotiated"))
        }
        let length = Int(buffer[1]) << 24 | Int(buffer[2]) << 16 | Int(buffer[3]) << 8 | Int(buffer[4])
        if length > maxSize {
            return .failure(RPCError(.resourceExhausted,
                "message of \(length) bytes exceeds the maximum of \(maxSize) bytes"))
        }
        if buffer.count < 5 + length {
            return .failure(RPCError(.internal,
                "message declared \(length) bytes but the stream ended after \(buffer.count - 5)"))
        }
        if buffer.count > 5 + length {
            return .failure(RPCError(.unimplemented, "more than one message on a unary call"))
        }
        buffer.removeFirst(5)
        return .success(buffer)
    }

    /// The declared length once the prefix is known; lets a receiver refuse early.
    package static func declaredLength(_ buffer: [UInt8]) -> Int? {
        guard buffer.count >= 5 else { return nil }
        return Int(buffer[1]) << 24 | Int(buffer[2]) << 16 | Int(buffer[3]) << 8 | Int(buffer[4])
    }

    // MARK: grpc-timeout

    /// Parses `grpc-timeout`: at most 8 digits and a unit H, M, S, m, u or n.
    package static func parseTimeout(_ value: String) -> Duration? {
        let utf8 = Array(value.utf8)
        guard utf8.count >= 2, utf8.count <= 9, let unit = utf8.last else { return nil }
        var amount: Int64 = 0
        for digit in utf8.dropLast() {
            guard digit >= 48, digit <= 57 else { return nil }
            amount = amount * 10 + Int64(digit - 48)
        }
        switch unit {
        case UInt8(ascii: "H"): return .seconds(amount * 3600)
        case UInt8(ascii: "M"): return .seconds(amount * 60)
        case UInt8(ascii: "S"): return .seconds(amount)
        case UInt8(ascii: "m"): return .milliseconds(amount)
        case UInt8(ascii: "u"): return .microseconds(amount)
        case UInt8(ascii: "n"): return .nanoseconds(amount)
        default: return nil
        }
    }

    /// Formats a timeout in the finest unit that fits in 8 digits (rounding up).
    package static func formatTimeout(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        // Past 9e9 s (285 years) nanoseconds would overflow Int64: only hours can carry it.
        guard seconds < 9_000_000_000 else {
            let hours = seconds / 3600 + (seconds % 3600 > 0 || attoseconds > 0 ? 1 : 0)
            return "\(min(hours, 99_999_999))H"
        }
        let nanos = max(0, seconds) * 1_000_000_000 + max(0, attoseconds) / 1_000_000_000
        let units: [(Int64, String)] = [(1, "n"), (1_000, "u"), (1_000_000, "m"),
                                        (1_000_000_000, "S"), (60_000_000_000, "M"), (3_600_000_000_000, "H")]
        for (scale, unit) in units {
            let amount = (nanos + scale - 1) / scale
            if amount < 100_000_000 { return "\(amount)\(unit)" }
        }
        return "99999999H"
    }

    // MARK: grpc-message percent-encoding

    /// Percent-encodes as the gRPC spec asks: printable ASCII except '%' stays, the rest is %XX of
    /// UTF-8. Spaces at either end are encoded too: HTTP/2 forbids a header value that starts or
    /// ends with whitespace, and nghttp2 peers reset such a stream.
    package static func percentEncode(_ text: String) -> String {
        // Most messages need no escape at all.
        let utf8 = text.utf8
        if utf8.first != UInt8(ascii: " "), utf8.last != UInt8(ascii: " "),
           utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7e && $0 != UInt8(ascii: "%") }) {
            return text
        }
        var out = ""
        out.reserveCapacity(text.utf8.count)
        let bytes = Array(text.utf8)
        let first = bytes.firstIndex { $0 != UInt8(ascii: " ") } ?? bytes.count
        let last = bytes.lastIndex { $0 != UInt8(ascii: " ") } ?? -1
        for (index, byte) in bytes.enumerated() {
            let edgeSpace = byte == UInt8(ascii: " ") && (index < first || index > last)
            if byte >= 0x20 && byte <= 0x7e && byte != UInt8(ascii: "%") && !edgeSpace {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// Decodes %XX sequences; malformed sequences are kept as they are (the spec says so).
    package static func percentDecode(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
               let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) {
                out.append(high << 4 | low)
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 48...57: byte - 48
        case 65...70: byte - 55
        case 97...102: byte - 87
        default: nil
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
