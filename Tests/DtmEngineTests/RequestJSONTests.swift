import Testing
@testable import DtmEngine

/// The typed request readers on JSONReader: DTM's Go acceptance rules, and messages that name the field.
@Suite struct RequestJSONTests {
    private func trans(_ text: String) throws(DtmError) -> TransRequest { try TransRequest(jsonBody: Array(text.utf8)) }

    private func refusal(_ text: String) -> String? {
        do {
            _ = try trans(text)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func readsEveryField() throws {
        let request = try trans(#"""
            {"gid":"g1","trans_type":"saga","steps":[{"action":"http://b/a","compensate":"http://b/c"},null,{"action":null}],
             "payloads":["{\"amount\":30}",null],"query_prepared":"http://b/q","protocol":"http","custom_data":"{}",
             "rollback_reason":"r","req_extra":{"status":"failed","x":null},"wait_result":true,"concurrent":true,
             "timeout_to_fail":5,"request_timeout":6,"retry_interval":7,"retry_limit":8,"retry_count":1,
             "branch_headers":{"h":"v"},"passthrough_headers":[],"unknown":{"deep":[1,2.5e300,"x",null,true]}}
            """#)
        #expect(request == TransRequest(
            gid: "g1", transType: "saga", steps: [["action": "http://b/a", "compensate": "http://b/c"], [:], ["action": ""]],
            payloads: [Array(#"{"amount":30}"#.utf8), []], queryPrepared: "http://b/q", transProtocol: "http",
            customData: "{}",
            options: TransOptions(waitResult: true, timeoutToFail: 5, retryInterval: 7, branchHeaders: ["h": "v"],
                                  requestTimeout: 6, retryLimit: 8, concurrent: true),
            reqExtra: ["status": "failed", "x": ""], rollbackReason: "r"))
    }

    @Test func nullLeavesAFieldEmptyAndTheLastRepeatWins() throws {
        #expect(try trans(#"{"gid":"a","gid":"b"}"#).gid == "b")
        #expect(try trans(#"{"gid":"a","gid":null}"#).gid == "a")
        #expect(try trans(#"{"gid":null,"steps":null,"payloads":null,"timeout_to_fail":null,"wait_result":null}"#)
            == TransRequest(gid: "", transType: ""))
    }

    @Test func structKeysMatchCaseInsensitivelyAsInGo() throws {
        #expect(try trans(#"{"GID":"a","Trans_Type":"msg"}"#) == TransRequest(gid: "a", transType: "msg"))
        #expect(try trans(#"{"gid":"a","GID":"b"}"#).gid == "b")
    }

    @Test(arguments: [
        (#"{"gid":"\u00e9\u0000"}"#, "é\u{0}"),
        (#"{"gid":"\ud83d\ude00x"}"#, "😀x"),
        (#"{"gid":"\"\\\/\b\f\n\r\t"}"#, "\"\\/\u{08}\u{0C}\n\r\t"),
        ("{\"gid\":\"é😀\"}", "é😀"),
    ])
    func unescapesStrings(text: String, gid: String) throws {
        #expect(try trans(text).gid == gid)
    }

    @Test(arguments: [
        (#"{"timeout_to_fail":9223372036854775807}"#, Int64.max),
        (#"{"timeout_to_fail":-9223372036854775808}"#, Int64.min),
        (#"{"timeout_to_fail":1e3}"#, 1000),
        (#"{"timeout_to_fail":1.0}"#, 1),
        (#"{"timeout_to_fail":-0}"#, 0),
    ] as [(String, Int64)])
    func readsWholeNumbers(text: String, value: Int64) throws {
        #expect(try trans(text).options.timeoutToFail == value)
    }

    @Test(arguments: [
        (#"{"timeout_to_fail":9223372036854775808}"#, "timeout_to_fail: expected a whole number"),
        (#"{"timeout_to_fail":1e19}"#, "timeout_to_fail: expected a whole number"),
        (#"{"timeout_to_fail":1.5}"#, "timeout_to_fail: expected a whole number"),
        (#"{"retry_limit":"5"}"#, "retry_limit: expected a whole number"),
        (#"{"gid":5}"#, "gid: expected a string"),
        (#"{"wait_result":"yes"}"#, "wait_result: expected true or false"),
        (#"{"steps":"[]"}"#, "steps: expected an array"),
        (#"{"steps":[1]}"#, "steps[0]: expected an object"),
        (#"{"steps":[{},{"action":1}]}"#, "steps[1].action: expected a string"),
        (#"{"payloads":["a",{}]}"#, "payloads[1]: expected a string"),
        (#"{"branch_headers":{"h":1}}"#, "branch_headers.h: expected a string"),
        (#"{"req_extra":[]}"#, "req_extra: expected an object"),
        ("[1]", "request body: expected a JSON object"),
        ("null", "request body: expected a JSON object"),
        (" \n", "request body: empty; expected a JSON object"),
        (#"{"gid":"g"} x"#, "request body: not valid JSON (unexpected 'x' after the value at byte 12)"),
        // A syntax error wins over an earlier type error, as in Go (which checks the text first).
        (#"{"gid":5,"#, "request body: not valid JSON (unexpected end at byte 9)"),
        (#"{"steps":[{"action":"a"]}"#, "request body: not valid JSON (expected ',' or '}' at byte 23, in steps)"),
        (#"{"gid":"\ud800"}"#, "request body: not valid JSON (lone surrogate in a string at byte 14, in gid)"),
        (#"{"gid":"\udc00"}"#, "request body: not valid JSON (lone surrogate in a string at byte 14, in gid)"),
        (#"{"gid":"\ud800\u0041"}"#, "request body: not valid JSON (lone surrogate in a string at byte 20, in gid)"),
        (#"{"gid":"\x"}"#, "request body: not valid JSON (invalid escape \\'x' at byte 9, in gid)"),
        (#"{"x":01}"#, "request body: not valid JSON (leading zero in a number at byte 5, in x)"),
        (#"{"x":"#, "request body: not valid JSON (unexpected end at byte 5, in x)"),
    ])
    func refusalsNameTheField(text: String, message: String) {
        #expect(refusal(text) == message)
    }

    @Test func refusesInvalidUTF8() {
        for body in [Array(#"{"gid":""#.utf8) + [0xFF] + Array(#""}"#.utf8), Array(#"{"x":""#.utf8) + [0xC3] + Array(#""}"#.utf8)] {
            #expect(throws: DtmError.self) { try TransRequest(jsonBody: body) }
        }
    }

    @Test func skipsAByteOrderMark() throws {
        #expect(try TransRequest(jsonBody: [0xEF, 0xBB, 0xBF] + Array(#"{"gid":"g"}"#.utf8)).gid == "g")
    }

    @Test func nestingIsLimited() {
        let deep = { (levels: Int) in #"{"x":"# + String(repeating: "[", count: levels) + String(repeating: "]", count: levels) + "}" }
        #expect(refusal(deep(JSONReader.maxDepth - 1)) == nil)
        #expect(refusal(deep(JSONReader.maxDepth))?.hasPrefix("request body: not valid JSON (nesting deeper than 512 levels") == true)
        #expect(refusal(#"{"x":"# + String(repeating: "[", count: 100_000))?.hasPrefix("request body: not valid JSON") == true)
    }

    @Test func unknownKeysAreCheckedForSyntaxOnly() throws {
        // Go skips an unknown key's number without converting it.
        #expect(try trans(#"{"x":1e999,"gid":"g"}"#).gid == "g")
        #expect(JSONValue.parse("1e999") == nil)
    }

    @Test func readsARegistration() throws {
        let registration = try BranchRegistration(jsonBody: Array(
            #"{"gid":"g","trans_type":"tcc","branch_id":"01","confirm":"http://b/c","cancel":null,"data":"{\"a\":1}","branch_id":"02"}"#.utf8))
        #expect(registration == BranchRegistration(gid: "g", transType: "tcc", branchID: "02", data: [
            "gid": "g", "trans_type": "tcc", "branch_id": "02", "confirm": "http://b/c", "cancel": "", "data": #"{"a":1}"#]))
        #expect(throws: DtmError.invalidArgument("branch_id: expected a string")) {
            try BranchRegistration(jsonBody: Array(#"{"branch_id":{"x":1}}"#.utf8))
        }
        #expect(throws: DtmError.invalidArgument("request body: expected a JSON object whose values are strings")) {
            try BranchRegistration(jsonBody: Array(#""x""#.utf8))
        }
        // Map keys are exact (Go's map[string]string).
        #expect(try BranchRegistration(jsonBody: Array(#"{"GID":"g"}"#.utf8)).gid == "")
    }

    @Test func readsFromASlice() throws {
        let body = Array(#"xx{"gid":"g"}yy"#.utf8)
        #expect(try TransRequest(jsonBody: body[2..<13]).gid == "g")
    }

    @Test func stepsAcceptNullAsGoDoes() throws {
        #expect(try TransRequest.parseSteps(#"[null,{"action":null}]"#) == [[:], ["action": ""]])
    }
}
