@testable import DtmServer
import Foundation
import Logging
import Testing

/// `Redaction.url` and `Redaction.logValue` read ASCII by bytes; they must agree with the
/// character-based reading they replaced (kept here as the reference) on every input.
@Suite struct RedactionTests {
    static let samples: [String] = [
        "", "gid-1", "http://user:pw@h:1/a?b=c@d", "http://h/a@b", "http://a@b@c/d", "http://@h/", "x://u@h",
        "no scheme@here", "http://u@h?x@y", "http://u@h#x@y", "a://b://c@d/e", "://@", "http://h\r\n@x/y",
        "http://ü@h/a", "http://h/é@x", "line\nbreak", "tab\tand\rcr", "nul\u{0}byte", "del\u{7f}", "c1\u{85}x",
        "ls\u{2028}ps\u{2029}", "zero\u{200b}width", String(repeating: "a", count: 1024),
        String(repeating: "a", count: 1025), String(repeating: "é", count: 600), "http://u:p@" + String(repeating: "h", count: 2000),
    ]

    @Test(arguments: samples)
    func agreesWithTheCharacterReading(_ text: String) {
        #expect(Redaction.url(text) == Legacy.url(text))
        #expect(Redaction.logValue(text) == Legacy.logValue(text))
    }

    @Test func agreesOnGeneratedText() {
        var random = UInt64(0x5EED_0013)
        func next() -> UInt64 {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return random >> 33
        }
        let alphabet: [String] = "ab:/?#@ \r\n\t\u{0}\u{7f}é\u{301}\u{2028}".map(String.init) + ["://", "http://", "u:p@"]
        for _ in 0..<5000 {
            var text = ""
            for _ in 0..<Int(next() % 16) { text += alphabet[Int(next() % UInt64(alphabet.count))] }
            #expect(Redaction.url(text) == Legacy.url(text), "\(text.debugDescription)")
            #expect(Redaction.logValue(text) == Legacy.logValue(text), "\(text.debugDescription)")
        }
    }

    @Test func logValuesHoldNoSecretOrRawControlCharacter() {
        guard case .string(let value) = Redaction.logValue("http://user:secret@h/a\nforged=1\u{7f}") else {
            Issue.record("not a string"); return
        }
        #expect(!value.contains("secret") && !value.contains("\n") && !value.contains("\u{7f}"))
        #expect(value == "http://[redacted]@h/a\\nforged=1\\u{7f}")
    }

    /// The reading before the byte-level fast paths, verbatim.
    enum Legacy {
        static func url(_ url: String) -> String {
            guard let scheme = url.range(of: "://") else { return url }
            let rest = url[scheme.upperBound...]
            let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
            guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
            return String(url[..<scheme.upperBound]) + Redaction.marker + String(rest[at...])
        }

        static func logValue(_ text: String) -> Logger.MetadataValue {
            var out = ""
            for scalar in Redaction.clip(url(text), max: 1024).unicodeScalars {
                switch scalar {
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                default:
                    if scalar.properties.generalCategory == .control || scalar == "\u{2028}" || scalar == "\u{2029}" {
                        out += "\\u{\(String(scalar.value, radix: 16))}"
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
            return .string(out)
        }
    }
}
