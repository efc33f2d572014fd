internal import CProtobufC
internal import DtmProtoC

/// proto3 requires `string` fields to hold valid UTF-8, but protobuf-c does not check, and its
/// C strings end at the first NUL: `"a\0b"` would silently arrive as `"a"` and invalid bytes
/// as U+FFFD. Decoding walks the wire bytes once more and refuses such input instead (as
/// grpc-go does), so that no two different requests can become one stored value.
enum StringFieldCheck {
    /// The first string field, as a dotted path, whose bytes are not valid UTF-8 or contain
    /// NUL, with the reason; nil when every string field is sound. `bytes` already unpacked.
    static func firstInvalid(in bytes: UnsafeRawBufferPointer, descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
                             depth: Int = 0) -> (field: String, reason: String)? {
        // protobuf-c itself refuses deeper nesting; our messages are two levels deep.
        guard depth < 32 else { return nil }
        var reader = WireReader(bytes: bytes)
        while let key = reader.varint() {
            let number = UInt32(truncatingIfNeeded: key >> 3)
            switch key & 7 {
            case 0: guard reader.varint() != nil else { return nil }
            case 1: guard reader.skip(8) else { return nil }
            case 5: guard reader.skip(4) else { return nil }
            case 2:
                guard let length = reader.varint(), let value = reader.take(length) else { return nil }
                guard let field = protobuf_c_message_descriptor_get_field(descriptor, number) else { continue }
                let name = field.pointee.name.map { String(cString: $0) } ?? "\(number)"
                switch field.pointee.type {
                case PROTOBUF_C_TYPE_STRING:
                    if value.contains(0) { return (name, "contains NUL") }
                    if String(validating: value, as: UTF8.self) == nil { return (name, "is not valid UTF-8") }
                case PROTOBUF_C_TYPE_MESSAGE:
                    guard let nested = field.pointee.descriptor?.assumingMemoryBound(to: ProtobufCMessageDescriptor.self)
                    else { continue }
                    if let inner = firstInvalid(in: value, descriptor: nested, depth: depth + 1) {
                        return (name + "." + inner.field, inner.reason)
                    }
                default:
                    continue
                }
            default:
                return nil  // groups: not used by our protos; unpack already judged the bytes
            }
        }
        return nil
    }
}

/// Reads protobuf wire primitives; every read is bounds-checked and nil at the end or on a truncation.
struct WireReader {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    mutating func varint() -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while index < bytes.count, shift < 64 {
            let byte = bytes[index]
            index += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }

    mutating func skip(_ count: Int) -> Bool {
        guard bytes.count - index >= count else { return false }
        index += count
        return true
    }

    mutating func take(_ length: UInt64) -> UnsafeRawBufferPointer? {
        guard length <= UInt64(bytes.count - index) else { return nil }
        let start = index
        index += Int(length)
        return UnsafeRawBufferPointer(rebasing: bytes[start..<index])
    }
}
