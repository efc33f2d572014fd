/// A parsed JSON value that keeps booleans and numbers apart (Foundation's
/// JSONSerialization on Linux reports 0 and 1 as booleans too).
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// nil when `text` is not JSON (RFC 8259; nesting deeper than 512 levels, a lone surrogate,
    /// invalid UTF-8 and numbers beyond a Double's range are refused). A repeated key keeps its
    /// last value, as Go's encoding/json does.
    public static func parse(_ text: String) -> JSONValue? {
        var text = text
        return text.withUTF8 { parse(bytes: $0) }
    }

    /// nil when `bytes` are not JSON; see `parse(_:)` for a String.
    public static func parse(_ bytes: [UInt8]) -> JSONValue? {
        bytes.withUnsafeBufferPointer { parse(bytes: $0) }
    }

    public static func parse(bytes: UnsafeBufferPointer<UInt8>) -> JSONValue? {
        var reader = JSONReader(bytes)
        guard let value = try? reader.value(), (try? reader.end()) != nil else { return nil }
        return value
    }

    /// A whole number (JSON has only doubles).
    public var integer: Int64? {
        guard case .number(let value) = self, value == value.rounded(), abs(value) < 9e15 else { return nil }
        return Int64(value)
    }

    /// Written back as JSON text: whole numbers as integers, object members sorted by key.
    public var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    public func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .number(let value): out += integer.map(String.init) ?? "\(value)"
        case .string(let value): out += jsonQuoted(value)
        case .array(let elements):
            out += "["
            for (index, element) in elements.enumerated() {
                if index > 0 { out += "," }
                element.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (index, member) in members.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { out += "," }
                out += jsonQuoted(member.key)
                out += ":"
                member.value.write(to: &out)
            }
            out += "}"
        }
    }
}

/// Why JSON could not be read: bad syntax (with the byte offset), or a value of the wrong
/// kind where a typed reader expected another (with the path of the value, e.g. `steps[0].action`).
package enum JSONError: Error, Equatable, Sendable {
    /// `field`: the request field whose value holds the error, when a typed reader knows it.
    case syntax(offset: Int, reason: String, field: String = "")
    case mismatch(path: String, expected: JSONKind)
}

/// The kinds a typed reader expects, named as error messages say them.
package enum JSONKind: Equatable, Sendable, CustomStringConvertible {
    case string, wholeNumber, bool, array, object

    package var description: String {
        switch self {
        case .string: "a string"
        case .wholeNumber: "a whole number"
        case .bool: "true or false"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// The one JSON reader of the coordinator: a cursor over UTF-8 bytes (RFC 8259), read
/// directly, never copied into a String first. `value()` builds a `JSONValue` tree; the typed
/// readers (`RequestJSON.swift`) pull request fields straight out of the bytes, so a Submit
/// allocates only the strings it keeps.
package struct JSONReader {
    /// Deeper nesting is refused, so hostile input cannot exhaust the stack.
    package static let maxDepth = 512

    package enum Token { case object, array, string, number, bool, null }

    private let bytes: UnsafeBufferPointer<UInt8>
    package private(set) var index = 0

    package init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// Skips a UTF-8 byte order mark at the start (Foundation's JSONDecoder accepted one).
    package mutating func skipByteOrderMark() {
        if index == 0, bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { index = 3 }
    }

    /// True when only whitespace is left.
    package mutating func atEnd() -> Bool {
        skipWhitespace()
        return index == bytes.count
    }

    /// Only whitespace may follow.
    package mutating func end() throws(JSONError) {
        guard atEnd() else { throw failure("unexpected \(shown) after the value") }
    }

    /// The kind of the next value, without consuming it.
    package mutating func peek() throws(JSONError) -> Token {
        skipWhitespace()
        guard index < bytes.count else { throw failure("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return .object
        case UInt8(ascii: "["): return .array
        case UInt8(ascii: "\""): return .string
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return .bool
        case UInt8(ascii: "n"): return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number
        default: throw failure("unexpected \(shown)")
        }
    }

    // MARK: Structure

    /// Consumes `{`; false when the object is empty (its `}` is consumed too).
    package mutating func enterObject() throws(JSONError) -> Bool {
        try enter(UInt8(ascii: "{"), closing: UInt8(ascii: "}"), "expected '{'")
    }

    /// Consumes `opening`; false when `closing` follows at once (consumed too).
    private mutating func enter(_ opening: UInt8, closing: UInt8, _ expected: String) throws(JSONError) -> Bool {
        try consume(opening, expected)
        skipWhitespace()
        if index < bytes.count, bytes[index] == closing {
            index += 1
            return false
        }
        return true
    }

    /// A member's key and its `:`.
    package mutating func key() throws(JSONError) -> String {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw failure("expected a string key") }
        let key = try string()
        try consume(UInt8(ascii: ":"), "expected ':'")
        return key
    }

    /// After a member: true at `,` (another member follows), false at the closing `}`.
    package mutating func objectContinues() throws(JSONError) -> Bool {
        try continues(closing: UInt8(ascii: "}"), "expected ',' or '}'")
    }

    /// Consumes `[`; false when the array is empty (its `]` is consumed too).
    package mutating func enterArray() throws(JSONError) -> Bool {
        try enter(UInt8(ascii: "["), closing: UInt8(ascii: "]"), "expected '['")
    }

    /// After an element: true at `,`, false at the closing `]`.
    package mutating func arrayContinues() throws(JSONError) -> Bool {
        try continues(closing: UInt8(ascii: "]"), "expected ',' or ']'")
    }

    // MARK: Scalars

    /// `null`.
    package mutating func null() throws(JSONError) {
        try literal("null")
    }

    package mutating func bool() throws(JSONError) -> Bool {
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "t") {
            try literal("true")
            return true
        }
        try literal("false")
        return false
    }

    /// A number that is a whole Int64; nil (the number consumed) when it has a fraction or is
    /// out of range. `1.0` and `1e3` are whole, as Foundation's JSONDecoder read them.
    package mutating func int64() throws(JSONError) -> Int64? {
        let (start, isInteger) = try numberToken()
        guard isInteger else {
            guard let value = double(from: start), value == value.rounded(),
                  value >= -9.223372036854775808e18, value < 9.223372036854775808e18 else { return nil }
            return Int64(value)
        }
        var position = start
        let negative = bytes[position] == UInt8(ascii: "-")
        if negative { position += 1 }
        var value: Int64 = 0
        while position < index {
            let digit = Int64(bytes[position] &- 0x30)
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            if overflow || overflow2 { return nil }
            value = next
            position += 1
        }
        return value
    }

    /// A number as a Double; refused when beyond a Double's range (as Go refuses it).
    package mutating func double() throws(JSONError) -> Double {
        let (start, _) = try numberToken()
        guard let value = double(from: start), value.isFinite else {
            index = start
            throw failure("number out of range")
        }
        return value
    }

    /// A string, unescaped. Invalid UTF-8 and lone surrogates are refused.
    package mutating func string() throws(JSONError) -> String {
        skipWhitespace()
        let opening = index
        try consume(UInt8(ascii: "\""), "expected a string")
        let start = index
        var ascii = true
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let run = UnsafeBufferPointer(rebasing: bytes[start..<index])
                index += 1
                if ascii { return String(decoding: run, as: UTF8.self) }
                guard let text = String(validating: run, as: UTF8.self) else {
                    index = opening
                    throw failure("invalid UTF-8 in a string")
                }
                return text
            }
            if byte == UInt8(ascii: "\\") {
                index = start
                return try escapedString(opening: opening)
            }
            if byte < 0x20 { throw failure("control character in a string") }
            if byte >= 0x80 { ascii = false }
            index += 1
        }
        throw failure("unterminated string")
    }

    /// A string's UTF-8 bytes, unescaped (request payloads are kept as bytes, never as a String).
    package mutating func stringBytes() throws(JSONError) -> [UInt8] {
        skipWhitespace()
        let opening = index
        try consume(UInt8(ascii: "\""), "expected a string")
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let run = UnsafeBufferPointer(rebasing: bytes[start..<index])
                guard Self.isValidUTF8(run) else {
                    index = opening
                    throw failure("invalid UTF-8 in a string")
                }
                index += 1
                return Array(run)
            }
            if byte == UInt8(ascii: "\\") {
                index = start
                return Array(try escapedString(opening: opening).utf8)
            }
            if byte < 0x20 { throw failure("control character in a string") }
            index += 1
        }
        throw failure("unterminated string")
    }

    // MARK: Whole values

    /// The next value as a tree.
    package mutating func value(depth: Int = 0) throws(JSONError) -> JSONValue {
        guard depth < Self.maxDepth else { throw failure("nesting deeper than \(Self.maxDepth) levels") }
        switch try peek() {
        case .object:
            var members: [String: JSONValue] = [:]
            var more = try enterObject()
            while more {
                let key = try key()
                members[key] = try value(depth: depth + 1)
                more = try objectContinues()
            }
            return .object(members)
        case .array:
            var elements: [JSONValue] = []
            var more = try enterArray()
            while more {
                elements.append(try value(depth: depth + 1))
                more = try arrayContinues()
            }
            return .array(elements)
        case .string: return .string(try string())
        case .number: return .number(try double())
        case .bool: return .bool(try bool())
        case .null:
            try null()
            return .null
        }
    }

    /// Checks and steps over the next value without building it (unknown keys of a request).
    package mutating func skipValue(depth: Int = 0) throws(JSONError) {
        guard depth < Self.maxDepth else { throw failure("nesting deeper than \(Self.maxDepth) levels") }
        switch try peek() {
        case .object:
            var more = try enterObject()
            while more {
                try skipString()
                try consume(UInt8(ascii: ":"), "expected ':'")
                try skipValue(depth: depth + 1)
                more = try objectContinues()
            }
        case .array:
            var more = try enterArray()
            while more {
                try skipValue(depth: depth + 1)
                more = try arrayContinues()
            }
        case .string: try skipString()
        case .number: _ = try numberToken()  // syntax only: Go skips an unknown key's 1e999 too
        case .bool: _ = try bool()
        case .null: try null()
        }
    }

    /// The bytes of the next value (checked), e.g. JSON-RPC `params` handed on to a typed reader.
    package mutating func rawValue() throws(JSONError) -> Range<Int> {
        skipWhitespace()
        let start = index
        try skipValue()
        return start..<index
    }

    // MARK: Internals

    /// A syntax error at the cursor; at the end of the text, whatever was expected, it ended too early.
    package func failure(_ reason: String) -> JSONError {
        .syntax(offset: index, reason: index < bytes.count ? reason : "unexpected end")
    }

    /// The byte at the cursor, as an error message shows it.
    private var shown: String {
        guard index < bytes.count else { return "end" }
        let byte = bytes[index]
        return byte >= 0x21 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private mutating func consume(_ byte: UInt8, _ reason: @autoclosure () -> String) throws(JSONError) {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == byte else { throw failure(reason()) }
        index += 1
    }

    private mutating func continues(closing: UInt8, _ reason: @autoclosure () -> String) throws(JSONError) -> Bool {
        skipWhitespace()
        guard index < bytes.count else { throw failure("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: ","):
            index += 1
            return true
        case closing:
            index += 1
            return false
        default:
            throw failure(reason())
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONError) {
        skipWhitespace()
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw failure("unexpected \(shown)") }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { throw failure("unexpected \(shown)") }
        index += count
    }

    /// Steps over a number (RFC 8259 grammar); its start, and whether it has neither fraction nor exponent.
    private mutating func numberToken() throws(JSONError) -> (start: Int, isInteger: Bool) {
        skipWhitespace()
        let start = index
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        let digits = index
        while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        guard index > digits else { throw failure("expected a digit") }
        if bytes[digits] == UInt8(ascii: "0"), index > digits + 1 {
            index = digits
            throw failure("leading zero in a number")
        }
        var isInteger = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            let fraction = index
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            guard index > fraction else { throw failure("expected a digit") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            let exponent = index
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            guard index > exponent else { throw failure("expected a digit") }
        }
        return (start, isInteger)
    }

    /// The number token from `start` to the cursor, as a Double.
    private func double(from start: Int) -> Double? {
        Double(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    /// Steps over a string, checking its escapes and UTF-8 without building it.
    private mutating func skipString() throws(JSONError) {
        skipWhitespace()
        let opening = index
        try consume(UInt8(ascii: "\""), "expected a string")
        var runStart = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                guard Self.isValidUTF8(UnsafeBufferPointer(rebasing: bytes[runStart..<index])) else {
                    index = opening
                    throw failure("invalid UTF-8 in a string")
                }
                index += 1
                if byte == UInt8(ascii: "\"") { return }
                _ = try escape()
                runStart = index
                continue
            }
            if byte < 0x20 { throw failure("control character in a string") }
            index += 1
        }
        throw failure("unterminated string")
    }

    private static func isValidUTF8(_ run: UnsafeBufferPointer<UInt8>) -> Bool {
        guard run.contains(where: { $0 >= 0x80 }) else { return true }
        var iterator = run.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    /// The slow path of `string()`: the string has escapes. The cursor is after the opening quote.
    private mutating func escapedString(opening: Int) throws(JSONError) -> String {
        var out: [UInt8] = []
        var runStart = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                index += 1
                if byte == UInt8(ascii: "\"") {
                    guard let text = String(validating: out, as: UTF8.self) else {
                        index = opening
                        throw failure("invalid UTF-8 in a string")
                    }
                    return text
                }
                let scalar = try escape()
                out.append(contentsOf: String(Character(scalar)).utf8)
                runStart = index
                continue
            }
            if byte < 0x20 { throw failure("control character in a string") }
            index += 1
        }
        throw failure("unterminated string")
    }

    /// After a backslash: the escaped character (a `\u` surrogate pair makes one scalar).
    private mutating func escape() throws(JSONError) -> Unicode.Scalar {
        guard index < bytes.count else { throw failure("unterminated string") }
        let escaped = bytes[index]
        index += 1
        switch escaped {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): return Unicode.Scalar(escaped)
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "u"):
            var scalar = try hex4()
            if (0xD800..<0xDC00).contains(scalar) {
                // A high surrogate must be followed by an escaped low one.
                guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
                else { throw failure("lone surrogate in a string") }
                index += 2
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw failure("lone surrogate in a string") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw failure("lone surrogate in a string") }
            return unicode
        default:
            index -= 1
            throw failure("invalid escape \\\(shown)")
        }
    }

    private mutating func hex4() throws(JSONError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw failure("unterminated string") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case 0x30...0x39: digit = UInt32(byte - 0x30)
            case 0x41...0x46: digit = UInt32(byte - 0x37)
            case 0x61...0x66: digit = UInt32(byte - 0x57)
            default: throw failure("invalid \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }
}

extension Dictionary where Key == String, Value == JSONValue {
    /// Go's encoding/json matches keys case-insensitively; so do we.
    func field(_ key: String) -> JSONValue? {
        if let exact = self[key] { return exact }
        return first { $0.key.lowercased() == key }?.value
    }
}
