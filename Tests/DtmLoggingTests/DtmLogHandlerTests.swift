import DtmLogging
import Foundation
import Logging
import Testing

/// Values an attacker controls: gids, URLs and error bodies of branches.
private let hostile: [(name: String, value: String)] = [
    ("newline", "g1\n2026-01-01T00:00:00.000Z error dtm: forged line"),
    ("carriage return", "g1\r\nlevel=critical"),
    ("quote", #"g1" forged="yes"#),
    ("backslash quote", #"g1\" forged=\"yes"#),
    ("json breakout", #"x","level":"critical","message":"forged"#),
    ("brace newline", "}\n{\"level\":\"critical\"}"),
    ("nul and escape", "a\u{0}b\u{1b}[31mred"),
    ("unicode line separators", "a\u{2028}b\u{2029}c\u{85}d"),
    ("tab and equals", "k=v\tx=y"),
    ("plain", "gid-123"),
    ("empty", ""),
    ("non-ascii", "余额不足 ✓ 💥"),
]

@Suite("DtmLogHandler escaping")
struct DtmLogHandlerTests {
    let time = Date(timeIntervalSince1970: 1_700_000_000.5)

    @Test(arguments: hostile.map(\.value))
    func jsonLineIsOneObjectWithTheValuesIntact(_ value: String) throws {
        let line = DtmLogHandler.line(format: .json, timestamp: time, level: .warning, label: "dtm",
                                      message: "branch failed: \(value)",
                                      metadata: ["gid": .string(value), "url": "\(value)",
                                                 "message": .string(value), "attempt": "3"])
        #expect(line.hasSuffix("}\n"))
        #expect(line.dropLast().allSatisfy { !$0.isNewline }, "a value ended the line early")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["gid"] as? String == value)
        #expect(object["url"] as? String == value)
        #expect(object["message"] as? String == "branch failed: \(value)")
        #expect(object["metadata_message"] as? String == value, "metadata cannot replace a fixed field")
        #expect(object["level"] as? String == "warning")
        #expect(object["label"] as? String == "dtm")
        #expect(object["ts"] as? String == "2023-11-14T22:13:20.500Z")
        #expect(object["attempt"] as? String == "3")
        #expect(object.count == 8)
    }

    @Test(arguments: hostile.map(\.value))
    func textLineCannotBeSplitOrGainFields(_ value: String) throws {
        let line = DtmLogHandler.line(format: .text, timestamp: time, level: .info, label: "dtm",
                                      message: "state \(value)", metadata: ["gid": .string(value), "op": "action"])
        #expect(line.hasSuffix("\n"))
        let body = line.dropLast()
        #expect(body.unicodeScalars.allSatisfy { $0.value >= 0x20 && !(0x7F...0x9F).contains($0.value)
            && $0.value != 0x2028 && $0.value != 0x2029 }, "a control character got through: \(line.debugDescription)")
        #expect(body.hasPrefix("2023-11-14T22:13:20.500Z info dtm: state "))
        // The fields after the message are exactly gid and op: parse quoted key=value pairs from the end.
        let fields = try #require(Self.trailingFields(String(body), count: 2))
        #expect(fields.map(\.key) == ["gid", "op"])
        #expect(fields[0].value == value)
        #expect(fields[1].value == "action")
    }

    @Test func levelsBelowTheHandlerLevelAreDropped() {
        let lines = LinesBox()
        var logger = Logger(label: "dtm") { label in
            DtmLogHandler(label: label, format: .json, level: .notice) { lines.append($0) }
        }
        logger[metadataKey: "owner"] = "o1"
        logger.info("hidden")
        logger.error("shown", metadata: ["gid": "g1"])
        #expect(lines.all.count == 1)
        #expect(lines.all.first?.contains(#""owner":"o1""#) == true)
        #expect(lines.all.first?.contains(#""gid":"g1""#) == true)
    }

    /// Unescapes a text-format value the way a reader would.
    static func unescape(_ text: Substring) -> String {
        var out = ""
        var scalars = text.unicodeScalars.makeIterator()
        while let scalar = scalars.next() {
            guard scalar == "\\" , let next = scalars.next() else { out.unicodeScalars.append(scalar); continue }
            switch next {
            case "n": out += "\n"
            case "r": out += "\r"
            case "t": out += "\t"
            case "u":
                _ = scalars.next()  // {
                var hex = ""
                while let digit = scalars.next(), digit != "}" { hex.unicodeScalars.append(digit) }
                if let value = UInt32(hex, radix: 16), let decoded = Unicode.Scalar(value) {
                    out.unicodeScalars.append(decoded)
                }
            default: out.unicodeScalars.append(next)
            }
        }
        return out
    }

    /// The last `count` ` key=value` fields of a text line (values plain or quoted).
    static func trailingFields(_ line: String, count: Int) -> [(key: String, value: String)]? {
        var fields: [(key: String, value: String)] = []
        var rest = Substring(line)
        for _ in 0..<count {
            let value: String
            var head: Substring
            if rest.hasSuffix("\"") {
                // Find the opening quote: the first unescaped quote before the closing one.
                var index = rest.index(before: rest.endIndex)
                var opening: String.Index?
                while index > rest.startIndex {
                    index = rest.index(before: index)
                    if rest[index] == "\"" {
                        var backslashes = 0
                        var probe = index
                        while probe > rest.startIndex, rest[rest.index(before: probe)] == "\\" {
                            backslashes += 1
                            probe = rest.index(before: probe)
                        }
                        if backslashes % 2 == 0 { opening = index; break }
                    }
                }
                guard let opening else { return nil }
                value = unescape(rest[rest.index(after: opening)..<rest.index(before: rest.endIndex)])
                head = rest[..<opening]
            } else {
                guard let space = rest.lastIndex(of: " ") else { return nil }
                guard let equals = rest[space...].firstIndex(of: "=") else { return nil }
                value = String(rest[rest.index(after: equals)...])
                head = rest[...equals]
            }
            guard head.hasSuffix("="), let space = head.lastIndex(of: " ") else { return nil }
            let key = String(head[head.index(after: space)..<head.index(before: head.endIndex)])
            fields.insert((key, value), at: 0)
            rest = head[..<space]
        }
        return fields
    }
}

private final class LinesBox: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
}
