/// One fuzz target: a function that takes arbitrary bytes, drives one input surface of the
/// coordinator with them and checks invariants. It throws `FuzzFailure` when an invariant does
/// not hold; a crash, a sanitizer report or a hang inside it is a finding too.
public struct FuzzTarget: Sendable {
    public let name: String
    /// What the target feeds and what it checks, for `dtm-fuzz --list`.
    public let summary: String
    public let run: @Sendable ([UInt8]) throws(FuzzFailure) -> Void

    public init(name: String, summary: String, run: @escaping @Sendable ([UInt8]) throws(FuzzFailure) -> Void) {
        self.name = name
        self.summary = summary
        self.run = run
    }

    /// Every target, in the order tools/fuzz runs them.
    public static let all: [FuzzTarget] = [
        http2Server, grpcCalls, grpcWire, proto, httpBody, json,
    ]

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// An invariant that did not hold for an input.
public struct FuzzFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Throws `FuzzFailure(message)` unless `condition` holds.
@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws(FuzzFailure) {
    if !condition { throw FuzzFailure(message()) }
}

/// Reads structured values off the front of a fuzz input; past the end it yields zeros, so
/// every input is a valid program.
struct FuzzInput {
    private let bytes: [UInt8]
    private(set) var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { index >= bytes.count }
    var remainingCount: Int { max(0, bytes.count - index) }

    mutating func byte() -> UInt8 {
        guard index < bytes.count else { return 0 }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    /// A length-prefixed byte string of at most `limit` bytes (one length byte, scaled).
    mutating func bytes(upTo limit: Int) -> [UInt8] {
        let count = min(Int(byte()), limit, remainingCount)
        defer { index += count }
        return Array(bytes[index..<index + count])
    }

    mutating func string(upTo limit: Int) -> String {
        String(decoding: bytes(upTo: limit), as: UTF8.self)
    }

    mutating func rest() -> [UInt8] {
        defer { index = bytes.count }
        return index < bytes.count ? Array(bytes[index...]) : []
    }
}
