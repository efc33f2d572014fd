import DtmHTTP2
import Foundation

/// gRPC custom metadata: ordered key/value pairs carried as HTTP/2 headers.
/// Keys are lowercase; keys ending in `-bin` carry binary values, base64-encoded on the wire.
public struct Metadata: Sendable, Equatable, Sequence {
    public enum Value: Sendable, Equatable {
        case string(String)
        case binary([UInt8])
    }

    public private(set) var entries: [(key: String, value: Value)] = []

    public init() {}

    /// String values from a dictionary (e.g. DTM's branch headers).
    public init(_ pairs: [String: String]) {
        for (key, value) in pairs.sorted(by: { $0.key < $1.key }) { add(key, value) }
    }

    /// Room for `count` entries in all, so adding them grows the storage once.
    public mutating func reserveCapacity(_ count: Int) {
        entries.reserveCapacity(count)
    }

    public mutating func add(_ key: String, _ value: String) {
        entries.append((key.lowercased(), .string(value)))
    }

    public mutating func add(_ key: String, binary value: [UInt8]) {
        entries.append((key.lowercased(), .binary(value)))
    }

    /// The first string value for `key`.
    public subscript(key: String) -> String? {
        let key = key.lowercased()
        for entry in entries where entry.key == key {
            if case .string(let value) = entry.value { return value }
        }
        return nil
    }

    /// The first binary value for a `-bin` key.
    public func binary(_ key: String) -> [UInt8]? {
        let key = key.lowercased()
        for entry in entries where entry.key == key {
            if case .binary(let value) = entry.value { return value }
        }
        return nil
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    public func makeIterator() -> IndexingIterator<[(key: String, value: Value)]> {
        entries.makeIterator()
    }

    public static func == (lhs: Metadata, rhs: Metadata) -> Bool {
        lhs.entries.count == rhs.entries.count
            && zip(lhs.entries, rhs.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    /// Header names that belong to HTTP/2 or gRPC itself and are never custom metadata.
    package static func isReserved(_ name: String) -> Bool {
        name.hasPrefix(":") || name.hasPrefix("grpc-") || name == "content-type" || name == "te"
            || name == "user-agent" || name == "content-length" || name == "connection"
            || name == "host" || name == "accept-encoding"
    }
}

extension Metadata {
    /// Custom metadata from received headers; a `-bin` value that is not base64 is an error.
    package init(headers: [HeaderField]) throws(RPCError) {
        for field in headers where !Metadata.isReserved(field.name) {
            if field.name.hasSuffix("-bin") {
                guard let bytes = Base64.decode(field.value) else {
                    throw RPCError(.internal, "metadata '\(field.name)' is not valid base64")
                }
                add(field.name, binary: bytes)
            } else {
                add(field.name, field.value)
            }
        }
    }

    /// Headers to send; binary values are base64 without padding, as gRPC implementations send them.
    package var headerFields: [HeaderField] {
        entries.map { entry in
            switch entry.value {
            case .string(let value): HeaderField(entry.key, value)
            case .binary(let bytes): HeaderField(entry.key, Base64.encode(bytes))
            }
        }
    }
}

package enum Base64 {
    package static func encode(_ bytes: [UInt8]) -> String {
        var text = Data(bytes).base64EncodedString()
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    /// Accepts padded and unpadded base64 (gRPC allows both).
    package static func decode(_ text: String) -> [UInt8]? {
        var padded = text
        let remainder = padded.utf8.count % 4
        if remainder == 1 { return nil }
        if remainder > 0 { padded += String(repeating: "=", count: 4 - remainder) }
        return Data(base64Encoded: padded).map { [UInt8]($0) }
    }
}
