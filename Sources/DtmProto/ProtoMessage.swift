/// A protobuf message as a Swift value: decoded from and encoded to the protobuf wire format.
///
/// Every message of `dtmgimp.proto`, `busi.proto`, `workflow.proto` and `google.protobuf.Empty`
/// conforms. Encoding and decoding run through the protobuf-c code generated from those files.
public protocol ProtoMessage: Sendable, Hashable {
    /// The fully qualified protobuf name, e.g. `"dtmgimp.DtmRequest"`.
    static var protoName: String { get }

    /// Decodes the protobuf wire format.
    ///
    /// Unknown fields are accepted and dropped. Strings that are not valid UTF-8 are repaired
    /// with U+FFFD rather than rejected; a string ends at its first NUL character (protobuf-c
    /// strings are C strings).
    /// - Throws: `ProtoError.malformed` when `bytes` are not a valid encoding of this message.
    init(decoding bytes: UnsafeRawBufferPointer) throws(ProtoError)

    /// The protobuf wire format of this message. Map entries are written in key order, so equal
    /// values encode to equal bytes. A string is cut at its first NUL character, if any.
    func encode() -> [UInt8]
}

extension ProtoMessage {
    /// Decodes the protobuf wire format from any byte collection (`[UInt8]`, `ArraySlice`, ...).
    /// - Throws: `ProtoError.malformed` when `bytes` are not a valid encoding of this message.
    public init(decoding bytes: some Collection<UInt8>) throws(ProtoError) {
        let decode = { (buffer: UnsafeRawBufferPointer) in
            Result { () throws(ProtoError) in try Self(decoding: buffer) }
        }
        let result = bytes.withContiguousStorageIfAvailable { decode(UnsafeRawBufferPointer($0)) }
            ?? Array(bytes).withUnsafeBytes(decode)
        self = try result.get()
    }
}

/// Why bytes could not be decoded as a protobuf message.
public enum ProtoError: Error, Hashable, CustomStringConvertible {
    /// `byteCount` bytes are not a valid protobuf encoding of `message` (its full protobuf name,
    /// e.g. `"dtmgimp.DtmRequest"`): truncated, a length beyond the end, a bad wire type for a
    /// known field, or an invalid tag.
    case malformed(message: String, byteCount: Int)
    /// A `string` field of `message` holds bytes that are not valid UTF-8 or contain NUL
    /// (proto3 requires UTF-8; a NUL would cut the C string). `field` is a dotted path.
    case invalidString(message: String, field: String, reason: String)

    public var description: String {
        switch self {
        case let .malformed(message, byteCount):
            "malformed protobuf: \(byteCount) bytes are not a valid \(message) "
                + "(truncated, wrong field type or not protobuf at all)"
        case let .invalidString(message, field, reason):
            "invalid \(message): string field \(field) \(reason)"
        }
    }
}
