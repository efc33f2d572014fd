import Foundation

/// A parsed JSON value that keeps booleans and numbers apart (Foundation's
/// JSONSerialization on Linux reports 0 and 1 as booleans too).
enum JSONValue: Decodable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// nil when `text` is not JSON.
    static func parse(_ text: String) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    /// A whole number (JSON has only doubles).
    var integer: Int64? {
        guard case .number(let value) = self, value == value.rounded(), abs(value) < 9e15 else { return nil }
        return Int64(value)
    }
}

extension Dictionary where Key == String, Value == JSONValue {
    /// Go's encoding/json matches keys case-insensitively; so do we.
    func field(_ key: String) -> JSONValue? {
        if let exact = self[key] { return exact }
        return first { $0.key.lowercased() == key }?.value
    }
}
