import DtmEngine
@testable import DtmServer
import Foundation
import NIOHTTP1
import Testing

/// One request to the API.
struct Call: Sendable {
    var method: HTTPMethod
    var path: String
    var body: String?

    static func get(_ path: String) -> Call { Call(method: .GET, path: path) }
    static func post(_ path: String, _ body: String) -> Call { Call(method: .POST, path: "/api/dtmsvr/" + path, body: body) }
}

/// A route case: setup calls (each must answer 200), then the call under test and what it must answer.
struct RouteCase: Sendable, CustomTestStringConvertible {
    var name: String
    var setup: [Call] = []
    var call: Call
    var status: Int
    /// The exact body, when it is deterministic.
    var body: String?
    /// Otherwise a check of the parsed body.
    var check: (@Sendable ([String: Any]) -> Bool)?

    var testDescription: String { name }
}

private let ok = #"{"dtm_result":"SUCCESS"}"#
private let tccPrepare = Call.post("prepare", #"{"gid":"g1","trans_type":"tcc"}"#)
private let sagaWait = Call.post("submit", #"{"gid":"g1","trans_type":"saga","steps":[{"action":"http://b/a","compensate":"http://b/c"}],"payloads":["{}"],"wait_result":true}"#)
private let tccBranch = #"{"gid":"g1","branch_id":"01","trans_type":"tcc","status":"prepared","data":"{}","confirm":"http://b/c","cancel":"http://b/k"}"#
private let workflowBody = #"{"gid":"w1","trans_type":"workflow","query_prepared":"http://b/wf","custom_data":"{\"name\":\"wf\",\"data\":\"aW4=\"}"}"#
private let subscribe = Call.get("/api/dtmsvr/subscribe?topic=t1&url=http://b/u1&remark=r")

/// A valid and at least one invalid call for every route, answered as DTM answers them.
let routeCases: [RouteCase] = [
    RouteCase(name: "version", call: .get("/api/dtmsvr/version"), status: 200, body: #"{"version":"swift-dtm-0.1.0"}"#),
    RouteCase(name: "version: wrong method", call: Call(method: .POST, path: "/api/dtmsvr/version"), status: 405,
              body: #"{"message":"POST is not allowed on /api/dtmsvr/version (use GET)"}"#),
    RouteCase(name: "newGid", call: .get("/api/dtmsvr/newGid"), status: 200,
              check: { ($0["gid"] as? String)?.count == 22 && $0["dtm_result"] as? String == "SUCCESS" }),
    RouteCase(name: "newGid: wrong method", call: Call(method: .DELETE, path: "/api/dtmsvr/newGid"), status: 405,
              body: #"{"message":"DELETE is not allowed on /api/dtmsvr/newGid (use GET)"}"#),

    RouteCase(name: "prepare", call: tccPrepare, status: 200, body: ok),
    RouteCase(name: "prepare: repeated", setup: [tccPrepare], call: tccPrepare, status: 200, body: ok),
    RouteCase(name: "prepare: unknown trans_type", call: .post("prepare", #"{"gid":"g1","trans_type":"bogus"}"#),
              status: 400, body: #"{"message":"trans_type: unknown 'bogus' (one of saga, tcc, msg, xa, workflow)"}"#),
    RouteCase(name: "prepare: missing gid", call: .post("prepare", #"{"trans_type":"tcc"}"#), status: 400,
              body: #"{"message":"gid: must not be empty"}"#),
    RouteCase(name: "prepare: gid of only escaped characters", call: .post("prepare", #"{"gid":";\n","trans_type":"tcc"}"#),
              status: 400, body: #"{"message":"gid: must not be empty"}"#),
    RouteCase(name: "prepare: finished", setup: [sagaWait], call: .post("prepare", #"{"gid":"g1","trans_type":"saga"}"#),
              status: 409, body: #"{"dtm_result":"FAILURE","message":"current status 'succeed', cannot prepare. FAILURE"}"#),

    RouteCase(name: "submit", call: sagaWait, status: 200, body: ok),
    RouteCase(name: "submit: as the Python SDK sends it (nulls, extra keys)",
              call: .post("submit", #"{"gid":"g2","trans_type":"saga","custom_data":null,"steps":[{"action":"http://b/a","compensate":"http://b/c"}],"payloads":["{\"amount\":30}"],"query_prepared":null,"protocol":null,"wait_result":false,"timeout_to_fail":0,"request_timeout":8,"retry_interval":0,"passthrough_headers":[],"branch_headers":{},"concurrent":false}"#),
              status: 200, body: ok),
    RouteCase(name: "submit: payloads missing", call: .post("submit", #"{"gid":"g1","trans_type":"saga","steps":[{"action":"http://b/a"}]}"#),
              status: 400, body: #"{"message":"payloads: 0 payloads for 1 steps (need one per step)"}"#),
    RouteCase(name: "submit: step value not a string", call: .post("submit", #"{"gid":"g1","trans_type":"saga","steps":[{"action":1}],"payloads":["x"]}"#),
              status: 400, body: #"{"message":"steps[0].action: expected a string"}"#),
    RouteCase(name: "submit: gid not a string", call: .post("submit", #"{"gid":5,"trans_type":"saga"}"#),
              status: 400, body: #"{"message":"gid: expected a string"}"#),
    RouteCase(name: "submit: wait_result not a boolean", call: .post("submit", #"{"gid":"g1","trans_type":"saga","wait_result":"yes"}"#),
              status: 400, body: #"{"message":"wait_result: expected true or false"}"#),
    RouteCase(name: "submit: fractional timeout", call: .post("submit", #"{"gid":"g1","trans_type":"saga","timeout_to_fail":1.5}"#),
              status: 400, body: #"{"message":"timeout_to_fail: expected a whole number"}"#),
    RouteCase(name: "submit: deeply nested unknown key", call: .post("submit", #"{"x":"# + String(repeating: "[", count: 100_000)),
              status: 400, check: { ($0["message"] as? String)?.hasPrefix("request body: not valid JSON") ?? false }),
    // Issue 8, finding 1: accepted and stored, this row then failed every claim of every transaction.
    RouteCase(name: "submit: retry_limit too large",
              call: .post("submit", #"{"gid":"g1","trans_type":"saga","steps":[{"action":"http://b/a","compensate":""}],"payloads":[""],"retry_limit":10000000000000000}"#),
              status: 400, body: #"{"message":"retry_limit: must be at most 1000000 (got 10000000000000000)"}"#),
    // Finding 5: a file:// step was stored and retried forever.
    RouteCase(name: "submit: file URL step",
              call: .post("submit", #"{"gid":"g1","trans_type":"saga","steps":[{"action":"file:///etc/passwd","compensate":""}],"payloads":[""]}"#),
              status: 400, body: #"{"message":"steps[0].action: 'file:///etc/passwd' is not a branch URL: expected http://host/path or https://host/path"}"#),
    RouteCase(name: "submit: retry_interval too large", call: .post("submit", #"{"gid":"g1","trans_type":"tcc","retry_interval":9223372036854775807}"#),
              status: 400, body: #"{"message":"retry_interval: must be at most 315360000 seconds (got 9223372036854775807)"}"#),
    RouteCase(name: "submit: msg delay too large", call: .post("submit", #"{"gid":"g1","trans_type":"msg","custom_data":"{\"delay\":1e15}"}"#),
              status: 400, body: #"{"message":"custom_data: delay must be a whole number of seconds from 0 to 315360000"}"#),
    RouteCase(name: "submit: not JSON", call: .post("submit", "{"), status: 400,
              check: { ($0["message"] as? String)?.hasPrefix("request body: not valid JSON") ?? false }),
    // One JSON reader (issue 13), with Go's rules.
    RouteCase(name: "submit: a syntax error names the byte and the field",
              call: .post("submit", #"{"gid":"g1","trans_type":"saga","steps":[{"action":"a"]}"#), status: 400,
              body: #"{"message":"request body: not valid JSON (expected ',' or '}' at byte 54, in steps)"}"#),
    RouteCase(name: "submit: a syntax error wins over an earlier type error",
              call: .post("submit", #"{"gid":5,"trans_type":"saga"]"#), status: 400,
              body: #"{"message":"request body: not valid JSON (expected ',' or '}' at byte 28)"}"#),
    RouteCase(name: "prepare: a repeated key keeps its last value, as Go",
              setup: [.post("prepare", #"{"gid":"g0","gid":"g1","trans_type":"tcc"}"#)],
              call: .post("abort", #"{"gid":"g1","trans_type":"tcc"}"#), status: 200, body: ok),
    RouteCase(name: "prepare: keys match case-insensitively, as Go",
              setup: [.post("prepare", #"{"GID":"g1","Trans_Type":"tcc"}"#)],
              call: .post("abort", #"{"gid":"g1","trans_type":"tcc"}"#), status: 200, body: ok),
    RouteCase(name: "prepare: a UTF-8 byte order mark is skipped",
              call: .post("prepare", "\u{FEFF}" + #"{"gid":"g1","trans_type":"tcc"}"#), status: 200, body: ok),
    RouteCase(name: "submit: not an object", call: .post("submit", "[1]"), status: 400,
              body: #"{"message":"request body: expected a JSON object"}"#),
    RouteCase(name: "submit: empty body", call: .post("submit", ""), status: 400,
              body: #"{"message":"request body: empty; expected a JSON object"}"#),
    RouteCase(name: "submit: finished", setup: [sagaWait], call: sagaWait, status: 409,
              body: #"{"dtm_result":"FAILURE","message":"current status 'succeed', cannot sumbmit. FAILURE"}"#),

    RouteCase(name: "abort", setup: [tccPrepare], call: .post("abort", #"{"gid":"g1","trans_type":"tcc"}"#), status: 200, body: ok),
    RouteCase(name: "abort: unknown gid", call: .post("abort", #"{"gid":"nope","trans_type":"tcc"}"#), status: 404,
              body: #"{"message":"no TransGlobal with gid: nope found"}"#),
    RouteCase(name: "abort: finished saga", setup: [sagaWait], call: .post("abort", #"{"gid":"g1","trans_type":"saga"}"#),
              status: 409, body: #"{"dtm_result":"FAILURE","message":"trans type: 'saga' current status 'succeed', cannot abort. FAILURE"}"#),

    RouteCase(name: "forceStop", setup: [tccPrepare], call: .post("forceStop", #"{"gid":"g1"}"#), status: 200, body: ok),
    RouteCase(name: "forceStop: finished", setup: [tccPrepare, .post("forceStop", #"{"gid":"g1"}"#)],
              call: .post("forceStop", #"{"gid":"g1"}"#), status: 409,
              body: #"{"dtm_result":"FAILURE","message":"global transaction force stop error. status: failed. error: FAILURE"}"#),
    RouteCase(name: "forceStop: empty gid", call: .post("forceStop", #"{"gid":""}"#), status: 400,
              body: #"{"message":"gid: must not be empty"}"#),

    RouteCase(name: "resetNextCronTime", setup: [tccPrepare], call: .post("resetNextCronTime", #"{"gid":"g1"}"#), status: 200, body: ok),
    RouteCase(name: "resetNextCronTime: unknown gid", call: .post("resetNextCronTime", #"{"gid":"zz"}"#), status: 404,
              body: #"{"message":"no TransGlobal with gid: zz found"}"#),

    RouteCase(name: "registerBranch", setup: [tccPrepare], call: .post("registerBranch", tccBranch), status: 200, body: ok),
    RouteCase(name: "registerXaBranch", setup: [.post("prepare", #"{"gid":"g1","trans_type":"xa"}"#)],
              call: .post("registerXaBranch", #"{"gid":"g1","branch_id":"01","trans_type":"xa","url":"http://b/xa"}"#), status: 200, body: ok),
    RouteCase(name: "registerXaBranch: not prepared", call: .post("registerXaBranch", #"{"gid":"g1","branch_id":"01","trans_type":"xa","url":"http://b/xa"}"#),
              status: 409, body: #"{"dtm_result":"FAILURE","message":"no trans with gid: g1 status: prepared found FAILURE"}"#),
    RouteCase(name: "registerTccBranch", setup: [tccPrepare], call: .post("registerTccBranch", tccBranch), status: 200, body: ok),
    RouteCase(name: "registerTccBranch: not an object", call: .post("registerTccBranch", #""x""#), status: 400,
              body: #"{"message":"request body: expected a JSON object whose values are strings"}"#),
    // As DTM: a storage conflict is a 500 (SDKs retry it), not a final FAILURE.
    RouteCase(name: "registerBranch: duplicate", setup: [tccPrepare, .post("registerBranch", tccBranch)],
              call: .post("registerBranch", tccBranch), status: 500,
              check: { $0["dtm_result"] == nil && ($0["message"] as? String)?.contains("duplicate") == true }),
    RouteCase(name: "registerBranch: not prepared", call: .post("registerBranch", tccBranch), status: 409,
              body: #"{"dtm_result":"FAILURE","message":"no trans with gid: g1 status: prepared found FAILURE"}"#),
    RouteCase(name: "registerBranch: value not a string", setup: [tccPrepare],
              call: .post("registerBranch", #"{"gid":"g1","branch_id":1,"trans_type":"tcc"}"#), status: 400,
              body: #"{"message":"branch_id: expected a string"}"#),
    RouteCase(name: "registerBranch: unknown trans_type", setup: [tccPrepare],
              call: .post("registerBranch", #"{"gid":"g1","branch_id":"01","trans_type":"saga"}"#), status: 400,
              body: #"{"message":"unknow trans type: saga"}"#),
    RouteCase(name: "registerBranch: missing branch_id", call: .post("registerBranch", #"{"gid":"g1","trans_type":"tcc"}"#),
              status: 400, body: #"{"message":"branch_id: must not be empty"}"#),

    RouteCase(name: "prepareWorkflow", call: .post("prepareWorkflow", workflowBody), status: 200, check: {
        let transaction = $0["transaction"] as? [String: Any]
        return transaction?["status"] as? String == "prepared" && transaction?["gid"] as? String == "w1"
            && ($0["progresses"] as? [Any])?.isEmpty == true
    }),
    RouteCase(name: "prepareWorkflow: not a workflow", call: .post("prepareWorkflow", #"{"gid":"w1","trans_type":"saga"}"#),
              status: 400, body: #"{"message":"trans_type: prepareWorkflow needs 'workflow', got 'saga'"}"#),
    RouteCase(name: "prepareWorkflow: no workflow name", call: .post("prepareWorkflow", #"{"gid":"w1","trans_type":"workflow"}"#),
              status: 400, body: #"{"message":"custom_data: name (the workflow name) is required"}"#),

    RouteCase(name: "query: unknown gid", call: .get("/api/dtmsvr/query?gid=nope"), status: 200,
              body: #"{"branches":[],"transaction":null}"#),
    RouteCase(name: "query", setup: [tccPrepare], call: .get("/api/dtmsvr/query?gid=g1"), status: 200,
              check: { ($0["transaction"] as? [String: Any])?["status"] as? String == "prepared" }),
    RouteCase(name: "query: no gid", call: .get("/api/dtmsvr/query"), status: 400, body: #"{"message":"no gid specified"}"#),

    RouteCase(name: "all: empty", call: .get("/api/dtmsvr/all"), status: 200, body: #"{"next_position":"","transactions":[]}"#),
    RouteCase(name: "all: unknown gid", call: .get("/api/dtmsvr/all?gid=nope"), status: 200,
              body: #"{"next_position":"","transactions":null}"#),
    RouteCase(name: "all: limit not a number", call: .get("/api/dtmsvr/all?limit=abc"), status: 400,
              body: #"{"message":"limit: expected a whole number, got 'abc'"}"#),
    RouteCase(name: "all: limit zero", call: .get("/api/dtmsvr/all?limit=0"), status: 400,
              body: #"{"message":"limit: must be between 1 and 1000 (got 0)"}"#),
    RouteCase(name: "all: time out of range", call: .get("/api/dtmsvr/all?createTimeStart=9223372036854775807"), status: 400,
              body: #"{"message":"createTimeStart: epoch milliseconds out of range (got 9223372036854775807)"}"#),

    RouteCase(name: "resetCronTime", call: .get("/api/dtmsvr/resetCronTime"), status: 200,
              body: #"{"has_remaining":false,"succeed_count":0}"#),
    RouteCase(name: "resetCronTime: timeout not a number", call: .get("/api/dtmsvr/resetCronTime?timeout=x"), status: 400,
              body: #"{"message":"timeout: expected a whole number, got 'x'"}"#),
    RouteCase(name: "resetCronTime: limit zero", call: .get("/api/dtmsvr/resetCronTime?limit=0"), status: 400,
              body: #"{"message":"limit: must be at least 1 (got 0)"}"#),

    RouteCase(name: "subscribe", call: subscribe, status: 200, body: ok),
    // DTM answers 500; a duplicate subscription is the client's mistake, refused for good.
    RouteCase(name: "subscribe: url exists", setup: [subscribe], call: subscribe, status: 409,
              body: #"{"dtm_result":"FAILURE","message":"this url exists"}"#),
    RouteCase(name: "subscribe: empty topic", call: .get("/api/dtmsvr/subscribe?url=http://b/u1"), status: 400,
              body: #"{"message":"empty topic"}"#),
    RouteCase(name: "subscribe: empty url", call: .get("/api/dtmsvr/subscribe?topic=t1"), status: 400,
              body: #"{"message":"empty url"}"#),

    RouteCase(name: "unsubscribe", setup: [subscribe], call: .get("/api/dtmsvr/unsubscribe?topic=t1&url=http://b/u1"),
              status: 200, body: ok),
    RouteCase(name: "unsubscribe: topic now empty",
              setup: [subscribe, .get("/api/dtmsvr/unsubscribe?topic=t1&url=http://b/u1")],
              call: .get("/api/dtmsvr/unsubscribe?topic=t1&url=http://b/u1"), status: 404,
              body: #"{"message":"this topic is empty"}"#),
    RouteCase(name: "unsubscribe: unknown url", setup: [subscribe], call: .get("/api/dtmsvr/unsubscribe?topic=t1&url=http://b/u2"),
              status: 404, body: #"{"message":"no such an url "}"#),
    RouteCase(name: "unsubscribe: unknown topic", call: .get("/api/dtmsvr/unsubscribe?topic=t9&url=http://b/u1"),
              status: 404, body: #"{"message":"no such a topic"}"#),
    RouteCase(name: "unsubscribe: empty url", call: .get("/api/dtmsvr/unsubscribe?topic=t1"), status: 400,
              body: #"{"message":"empty url"}"#),

    RouteCase(name: "delete topic", setup: [subscribe], call: Call(method: .DELETE, path: "/api/dtmsvr/topic/t1"),
              status: 200, body: ok),
    RouteCase(name: "delete topic: unknown", call: Call(method: .DELETE, path: "/api/dtmsvr/topic/t9"), status: 404,
              body: #"{"message":"storage: NotFound"}"#),
    RouteCase(name: "delete topic: wrong method", call: .get("/api/dtmsvr/topic/t1"), status: 405,
              body: #"{"message":"GET is not allowed on /api/dtmsvr/topic/t1 (use DELETE)"}"#),

    RouteCase(name: "scanKV", setup: [subscribe], call: .get("/api/dtmsvr/scanKV?cat=topics"), status: 200, check: {
        ($0["kv"] as? [[String: Any]])?.first?["k"] as? String == "t1" && $0["next_position"] as? String == ""
    }),
    RouteCase(name: "scanKV: position not a number", call: .get("/api/dtmsvr/scanKV?cat=topics&position=x"), status: 400,
              body: #"{"message":"position: expected a whole number, got 'x'"}"#),

    RouteCase(name: "queryKV", call: .get("/api/dtmsvr/queryKV?cat=topics"), status: 200, body: #"{"kv":[]}"#),
    RouteCase(name: "queryKV: wrong method", call: Call(method: .POST, path: "/api/dtmsvr/queryKV"), status: 405,
              body: #"{"message":"POST is not allowed on /api/dtmsvr/queryKV (use GET)"}"#),

    RouteCase(name: "ping GET", call: .get("/api/ping"), status: 200, body: #"{"msg":"pong"}"#),
    RouteCase(name: "ping POST", call: Call(method: .POST, path: "/api/ping", body: "x"), status: 200, body: #"{"msg":"pong"}"#),
    RouteCase(name: "ping PUT", call: Call(method: .PUT, path: "/api/ping"), status: 200, body: #"{"msg":"pong"}"#),
    RouteCase(name: "ping DELETE", call: Call(method: .DELETE, path: "/api/ping"), status: 200, body: #"{"msg":"pong"}"#),
    RouteCase(name: "unknown path", call: .get("/api/pong"), status: 404, body: #"{"message":"no route for /api/pong"}"#),

    // JSONRPCTests covers the JSON-RPC endpoint's methods and errors.
    RouteCase(name: "json-rpc", call: Call(method: .POST, path: "/api/json-rpc", body: #"{"jsonrpc":"2.0","id":"1","method":"newGid"}"#),
              status: 200, check: { ($0["result"] as? [String: Any])?["gid"] is String && $0["id"] as? String == "1" }),
    RouteCase(name: "json-rpc: wrong method", call: .get("/api/json-rpc"), status: 405,
              body: #"{"message":"GET is not allowed on /api/json-rpc (use POST)"}"#),

    // AdminAPITests covers the admin API in depth.
    RouteCase(name: "admin list", setup: [tccPrepare], call: .get("/api/admin/transactions?status=prepared"), status: 200,
              check: { ($0["transactions"] as? [[String: Any]])?.first?["gid"] as? String == "g1" }),
    RouteCase(name: "admin list: bad status", call: .get("/api/admin/transactions?status=x"), status: 400,
              body: #"{"error":"status: must be one of prepared, submitted, aborting, succeed, failed (got 'x')"}"#),
    RouteCase(name: "admin detail", setup: [tccPrepare], call: .get("/api/admin/transactions/g1"), status: 200,
              check: { ($0["transaction"] as? [String: Any])?["status"] as? String == "prepared" && $0["pending"] is [String: Any] }),
    RouteCase(name: "admin detail: unknown gid", call: .get("/api/admin/transactions/zz"), status: 404,
              body: #"{"error":"no transaction with gid 'zz'"}"#),
    RouteCase(name: "admin force-stop", setup: [tccPrepare], call: Call(method: .POST, path: "/api/admin/transactions/g1/force-stop"),
              status: 200, body: ok),
    RouteCase(name: "admin force-stop: unknown gid", call: Call(method: .POST, path: "/api/admin/transactions/zz/force-stop"),
              status: 404, body: #"{"error":"no TransGlobal with gid: zz found"}"#),
    RouteCase(name: "admin retry-now", setup: [tccPrepare], call: Call(method: .POST, path: "/api/admin/transactions/g1/retry-now"),
              status: 200, body: ok),
    RouteCase(name: "admin retry-now: finished", setup: [tccPrepare, .post("forceStop", #"{"gid":"g1"}"#)],
              call: Call(method: .POST, path: "/api/admin/transactions/g1/retry-now"), status: 409,
              body: #"{"error":"transaction 'g1' is failed: a finished transaction is not retried"}"#),
    RouteCase(name: "admin retry-now: wrong method", call: .get("/api/admin/transactions/g1/retry-now"), status: 405,
              body: #"{"message":"GET is not allowed on /api/admin/transactions/g1/retry-now (use POST)"}"#),

    RouteCase(name: "openapi.json", call: .get("/api/openapi.json"), status: 200,
              check: { $0["openapi"] as? String == "3.0.3" && ($0["paths"] as? [String: Any])?.count == 26 }),
    RouteCase(name: "openapi.json: wrong method", call: Call(method: .POST, path: "/api/openapi.json"), status: 405,
              body: #"{"message":"POST is not allowed on /api/openapi.json (use GET)"}"#),
]

@Suite struct RouteTests {
    @Test(arguments: routeCases) func route(_ test: RouteCase) async throws {
        try await withCoordinator { _, api in
            for call in test.setup {
                let answer = try await api.send(call.method, call.path, body: call.body.map { Array($0.utf8) })
                try #require(answer.status == 200, "setup \(call.path): \(answer)")
            }
            let answer = try await api.send(test.call.method, test.call.path, body: test.call.body.map { Array($0.utf8) })
            #expect(answer.status == test.status, "\(answer)")
            #expect(answer.contentType == "application/json; charset=utf-8")
            if let body = test.body { #expect(answer.text == body) }
            if let check = test.check { #expect(check(answer.json), "\(answer)") }
            // Old SDKs read FAILURE anywhere in a 200 body as a failure (the OpenAPI document,
            // which no SDK reads, names the word as a schema value).
            if test.call.path != "/api/openapi.json" {
                #expect(!(answer.status == 200 && answer.text.contains("FAILURE")), "a 200 body must never say FAILURE")
            }
        }
    }

    /// Every route the API serves is in the table above, with a valid and an invalid call.
    @Test func tableCoversEveryRoute() {
        let api = DtmHTTPAPI(engine: Coordinator(driver: TransactionDriver(store: InMemoryStore(), caller: RecordingCaller()),
                                                 schedule: { _ in }),
                             admin: CoordinatorAdmin(store: InMemoryStore(), config: quickEngine),
                             topics: TopicRegistry(store: InMemoryStore()))
        // AdminUITests covers the admin UI's static files.
        for route in api.routes where route.path != "/api/ping" && !AdminUI.assets.contains(where: { $0.path == route.path }) {
            let cases = routeCases.filter { route.matches(String($0.call.path.prefix { $0 != "?" })) }
            #expect(cases.contains { $0.status == 200 && $0.call.method.rawValue == route.method.rawValue },
                    "\(route.method) \(route.path) has no valid call")
            #expect(cases.contains { $0.status >= 400 }, "\(route.method) \(route.path) has no invalid call")
        }
    }
}
