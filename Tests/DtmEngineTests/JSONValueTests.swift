import Foundation
import Testing
@testable import DtmEngine

@Suite struct JSONValueTests {
    @Test func parsesEveryKindOfValue() {
        let text = #" {"a": [1, -2.5e3, true, false, null], "b": {"c": "d\"\\\/\n\u00e9\ud83d\ude00"}, "e": 0} "#
        let expected = JSONValue.object([
            "a": .array([.number(1), .number(-2500), .bool(true), .bool(false), .null]),
            "b": .object(["c": .string("d\"\\/\né😀")]),
            "e": .number(0),
        ])
        #expect(JSONValue.parse(text) == expected)
    }

    @Test(arguments: ["", " ", "{", "[1,]", "{\"a\":}", "{\"a\" 1}", "01", "1.", "-", "1e", "tru", "nul",
                      "\"abc", "\"\\x\"", "\"\\ud800\"", "\"\\u12\"", "[1] x", "{\"a\":1,}", "\"\u{01}\""])
    func refusesMalformedJSON(text: String) {
        #expect(JSONValue.parse(text) == nil)
    }

    @Test func refusesNestingBeyondTheLimit() {
        #expect(JSONValue.parse(String(repeating: "[", count: 600) + String(repeating: "]", count: 600)) == nil)
        #expect(JSONValue.parse(String(repeating: "[", count: 100) + String(repeating: "]", count: 100)) != nil)
    }

    @Test func agreesWithFoundationOnSteps() throws {
        let steps = #"[{"action":"localhost:1/busi.Busi/TransOut","compensate":"localhost:1/busi.Busi/TransOutRevert"}]"#
        let parsed = try TransRequest.parseSteps(steps)
        let foundation = try #require(try JSONSerialization.jsonObject(with: Data(steps.utf8)) as? [[String: String]])
        #expect(parsed == foundation)
    }

    @Test(arguments: [("", [[String: String]]()), (" null ", []), ("[]", []), ("[{}]", [[:]]),
                      (#" [ {"action" : "a\u0041", "compensate":""} , {"action":"b"} ] "#,
                       [["action": "aA", "compensate": ""], ["action": "b"]])])
    func parsesStepsFastAndSlowShapes(text: String, expected: [[String: String]]) throws {
        #expect(try TransRequest.parseSteps(text) == expected)
    }

    @Test(arguments: [(#"[{"action":1}]"#, "steps[0].action: not a string"), ("{}", "steps: not a JSON array of objects"),
                      ("[1]", "steps[0]: not a JSON object"), (#"[{"a":"b"}"#, "steps: not a JSON array of objects")])
    func stepErrorsNameThePlace(text: String, message: String) {
        #expect(throws: DtmError.invalidArgument(message)) { try TransRequest.parseSteps(text) }
    }
}
