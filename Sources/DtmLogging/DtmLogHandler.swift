import DtmSync
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How `DtmLogHandler` writes a line.
public enum LogFormat: String, Sendable, CaseIterable {
    /// `ts level label: message key=value ...`, values quoted and escaped when needed.
    case text
    /// One JSON object per line: `ts`, `level`, `label`, `message`, then the metadata as fields.
    case json
}

/// A swift-log handler writing one line per event to standard error, as text or JSON.
///
/// Every value is escaped, so a gid, URL or error body holding a newline, a quote or any other
/// control character cannot end the line early or forge a field: text escapes control
/// characters, quotes and backslashes (and quotes values with spaces or `=`); JSON uses proper
/// string escaping.
public struct DtmLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public let label: String
    public let format: LogFormat
    private let write: @Sendable (String) -> Void

    /// Writes to standard error.
    public init(label: String, format: LogFormat, level: Logger.Level = .info) {
        self.init(label: label, format: format, level: level, write: DtmLogHandler.standardError)
    }

    /// Writes each finished line (with its newline) through `write` (tests).
    public init(label: String, format: LogFormat, level: Logger.Level = .info,
                write: @escaping @Sendable (String) -> Void) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        var merged = metadata
        if let explicit { merged.merge(explicit) { $1 } }
        write(Self.line(format: format, timestamp: Date(), level: level, label: label,
                        message: message.description, metadata: merged))
    }

    // MARK: Formatting (pure, tested)

    /// One complete line, newline included.
    public static func line(format: LogFormat, timestamp: Date, level: Logger.Level, label: String,
                            message: String, metadata: Logger.Metadata) -> String {
        let ts = timestampText(timestamp)
        let keys = metadata.keys.sorted()
        switch format {
        case .text:
            var out = "\(ts) \(level.rawValue) \(escapeText(label)): \(escapeText(message))"
            for key in keys {
                guard let value = metadata[key] else { continue }
                out += " \(quoteIfNeeded(key))=\(quoteIfNeeded(flatText(value)))"
            }
            return out + "\n"
        case .json:
            var out = "{\"ts\":\(jsonString(ts)),\"level\":\(jsonString(level.rawValue)),"
                + "\"label\":\(jsonString(label)),\"message\":\(jsonString(message))"
            for key in keys {
                guard let value = metadata[key] else { continue }
                // A metadata key cannot replace one of the four fixed fields.
                let name = reserved.contains(key) ? "metadata_" + key : key
                out += ",\(jsonString(name)):\(jsonValue(value))"
            }
            return out + "}\n"
        }
    }

    private static let reserved: Set<String> = ["ts", "level", "label", "message"]

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
    public static func timestampText(_ date: Date) -> String {
        let millis = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(millis / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let ms = Int(millis % 1000 + 1000) % 1000
        let msText = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(msText)Z"
    }

    /// Control characters (C0, DEL, C1, and the Unicode line and paragraph separators) and the
    /// backslash escaped: the result never holds a line break.
    public static func escapeText(_ text: String) -> String {
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where needsHexEscape(scalar):
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// A text value as is when it is a plain word, otherwise in double quotes with `"` escaped
    /// too, so that `key=value` pairs always split unambiguously.
    static func quoteIfNeeded(_ text: String) -> String {
        let plain = !text.isEmpty && text.unicodeScalars.allSatisfy {
            $0 != " " && $0 != "\"" && $0 != "=" && $0 != "\\" && !needsHexEscape($0) && $0 != "\n"
                && $0 != "\r" && $0 != "\t"
        }
        if plain { return text }
        return "\"" + escapeText(text).replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    private static func needsHexEscape(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        return (value < 0x20 && value != 0x0A && value != 0x0D && value != 0x09) || (0x7F...0x9F).contains(value)
            || value == 0x2028 || value == 0x2029
    }

    private static func flatText(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array, .dictionary: jsonValue(value)
        }
    }

    /// A JSON string literal (RFC 8259): quote, backslash and every control character escaped;
    /// DEL, C1 (NEL is a line end to some readers), U+2028 and U+2029 too.
    public static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028
                || scalar.value == 0x2029:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static func jsonValue(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): jsonString(text)
        case .stringConvertible(let convertible): jsonString(convertible.description)
        case .array(let values): "[" + values.map(jsonValue).joined(separator: ",") + "]"
        case .dictionary(let fields):
            "{" + fields.keys.sorted().compactMap { key in fields[key].map { "\(jsonString(key)):\(jsonValue($0))" } }
                .joined(separator: ",") + "}"
        }
    }

    // MARK: Output

    private static let outputLock = Locked(())

    /// Whole lines under a lock, so lines of concurrent tasks never interleave.
    static let standardError: @Sendable (String) -> Void = { line in
        outputLock.withLock { _ in
            try? FileHandle.standardError.write(contentsOf: Data(line.utf8))
        }
    }
}
