import DtmEngine
import Foundation

/// A JSON value written in a fixed member order, so the HTTP API answers in DTM's exact
/// shapes: Go writes struct fields in declaration order and map keys sorted.
enum JSONText: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case string(String)
    case array([JSONText])
    case object([(String, JSONText)])

    static func == (lhs: JSONText, rhs: JSONText) -> Bool { lhs.text == rhs.text }

    /// An object from a map, keys sorted as Go's encoding/json writes maps.
    static func sorted(_ members: [String: JSONText]) -> JSONText {
        .object(members.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }

    static func strings(_ map: [String: String]) -> JSONText { sorted(map.mapValues(JSONText.string)) }

    var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .int(let value): out += String(value)
        case .string(let value): Self.quote(value, into: &out)
        case .array(let elements):
            out += "["
            for (index, element) in elements.enumerated() {
                if index > 0 { out += "," }
                element.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { out += "," }
                Self.quote(key, into: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    private static func quote(_ string: String, into out: inout String) {
        out += jsonQuoted(string)
    }
}

/// Builds an object member by member, leaving out what Go's `omitempty` leaves out.
struct JSONObject {
    private(set) var members: [(String, JSONText)] = []

    init() {}

    /// Starts with the fields of DTM's `ModelBase` (never omitted): id and the row's times.
    init(modelBase id: Int64?, _ createTime: Date, _ updateTime: Date) {
        members = [("id", .int(id ?? 0)), ("create_time", .time(createTime)), ("update_time", .time(updateTime))]
    }

    mutating func add(_ key: String, _ value: JSONText) { members.append((key, value)) }

    mutating func omitEmpty(_ key: String, _ value: String) {
        if !value.isEmpty { add(key, .string(value)) }
    }

    mutating func omitEmpty(_ key: String, _ value: Int64) {
        if value != 0 { add(key, .int(value)) }
    }

    mutating func omitEmpty(_ key: String, _ value: Bool) {
        if value { add(key, .bool(true)) }
    }

    mutating func omitEmpty(_ key: String, _ value: Date?) {
        if let value { add(key, .time(value)) }
    }

    mutating func omitEmpty(_ key: String, _ map: [String: String]) {
        if !map.isEmpty { add(key, .strings(map)) }
    }

    var json: JSONText { .object(members) }
}

extension JSONText {
    /// Go's RFC 3339 form of a time (as `time.Time` marshals): UTC, fraction only when non-zero.
    static func time(_ date: Date?) -> JSONText {
        guard let date else { return .null }
        return .string(rfc3339(date))
    }

    static func rfc3339(_ date: Date) -> String {
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        var seconds = micros / 1_000_000
        var fraction = micros % 1_000_000
        if fraction < 0 {
            fraction += 1_000_000
            seconds -= 1
        }
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = civilDate(daysSince1970: days)
        func pad(_ value: Int64, _ width: Int) -> String { String(value).leftPadded(to: width) }
        var text = "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):"
            + "\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2))"
        if fraction != 0 {
            var digits = String(fraction).leftPadded(to: 6)
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return text + "Z"
    }

    /// Proleptic Gregorian date of a day count (H. Hinnant's days_from_civil, inverted).
    private static func civilDate(daysSince1970 days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
