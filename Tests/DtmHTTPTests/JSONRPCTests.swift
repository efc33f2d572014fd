import DtmEngine
@testable import DtmServer
import DtmTestSupport
import Foundation
import DtmSync
import Testing

/// DTM's JSON-RPC endpoint (`/api/json-rpc`) and json-rpc branch calls.
@Suite struct JSONRPCTests {
    /// One JSON-RPC request to the coordinator; returns the HTTP status and the parsed response.
    static func rpc(_ api: API, _ body: String) async throws -> (status: Int, response: [String: Any]) {
        let answer = try await api.post("/api/json-rpc", body)
        #expect(answer.contentType == "application/json; charset=utf-8")
        return (answer.status, answer.json)
    }

    static func rpc(_ api: API, _ method: String, id: String = "1", params: [String: Any]) async throws -> [String: Any] {
        let request: [String: Any] = ["jsonrpc": "2.0", "id": id, "method": method, "params": params]
        let answer = try await api.post("/api/json-rpc", json: request)
        #expect(answer.status == 200, "\(answer)")
        return answer.json
    }

    static func errorCode(_ response: [String: Any]) -> Int? {
        ((response["error"] as? [String: Any])?["code"] as? NSNumber)?.intValue
    }

    struct Malformed: Sendable, CustomTestStringConvertible {
        var name: String
        var body: String
        var code: Int
        /// The id the error response must carry (nil: JSON null).
        var id: String?
        var testDescription: String { name }
    }

    static let malformed: [Malformed] = [
        Malformed(name: "not JSON", body: #"{"jsonrpc": "2.0", "id": "1", "method": "newGid""#, code: -32700),
        Malformed(name: "empty body", body: "", code: -32700),
        Malformed(name: "a batch", body: #"[{"jsonrpc":"2.0","id":"1","method":"newGid"}]"#, code: -32600),
        Malformed(name: "a number", body: "42", code: -32600),
        Malformed(name: "jsonrpc 1.0", body: #"{"jsonrpc":"1.0","id":"a","method":"newGid"}"#, code: -32600, id: "a"),
        Malformed(name: "no id", body: #"{"jsonrpc":"2.0","method":"newGid"}"#, code: -32600),
        Malformed(name: "empty id", body: #"{"jsonrpc":"2.0","id":"","method":"newGid"}"#, code: -32600),
        Malformed(name: "method not a string", body: #"{"jsonrpc":"2.0","id":"b","method":5}"#, code: -32600, id: "b"),
        Malformed(name: "unknown method", body: #"{"jsonrpc":"2.0","id":"c","method":"forceStop"}"#, code: -32601, id: "c"),
        Malformed(name: "params not an object", body: #"{"jsonrpc":"2.0","id":"d","method":"submit","params":"x"}"#,
                  code: -32602, id: "d"),
        Malformed(name: "submit without trans_type", body: #"{"jsonrpc":"2.0","id":"e","method":"submit","params":{"gid":"jr-bad"}}"#,
                  code: -32602, id: "e"),
        Malformed(name: "registerBranch with a number",
                  body: #"{"jsonrpc":"2.0","id":"f","method":"registerBranch","params":{"gid":"jr-bad","branch_id":1}}"#,
                  code: -32602, id: "f"),
    ]

    /// Each malformed request gets a JSON-RPC error object with its code (HTTP 200, as DTM), stores
    /// nothing, and the server goes on answering.
    @Test(arguments: malformed)
    func malformedRequestsGetJSONRPCErrors(_ test: Malformed) async throws {
        try await withCoordinator { _, api in
            let (status, response) = try await Self.rpc(api, test.body)
            #expect(status == 200)
            #expect(response["jsonrpc"] as? String == "2.0")
            #expect(Self.errorCode(response) == test.code, "\(response)")
            #expect(((response["error"] as? [String: Any])?["message"] as? String)?.isEmpty == false)
            #expect(response["result"] == nil, "an error response has no result")
            if let id = test.id {
                #expect(response["id"] as? String == id)
            } else {
                #expect(response["id"] is NSNull)
            }
            #expect(try await api.get("/api/dtmsvr/all?limit=10").json["transactions"] as? [Any] != nil)
            #expect((try await api.get("/api/dtmsvr/all?limit=10").json["transactions"] as? [Any])?.isEmpty == true)
            let after = try await Self.rpc(api, "newGid", id: "after", params: [:])
            #expect((after["result"] as? [String: Any])?["gid"] is String, "\(after)")
        }
    }

    /// The methods answer as DTM's: newGid a gid, prepare / registerBranch / submit / abort a
    /// null result, a refusal FAILURE (-32901); a numeric id is echoed; query is swift-dtm's.
    @Test func methodsDriveTransactions() async throws {
        try await withCoordinator { _, api in
            let gidAnswer = try await api.post("/api/json-rpc", #"{"jsonrpc":"2.0","id":17,"method":"newGid"}"#).json
            #expect(gidAnswer["id"] as? Int == 17)
            let gid = try #require((gidAnswer["result"] as? [String: Any])?["gid"] as? String)

            let prepared = try await Self.rpc(api, "prepare", params: ["gid": gid, "trans_type": "tcc", "protocol": "json-rpc"])
            #expect(prepared.keys.sorted() == ["id", "jsonrpc", "result"] && prepared["result"] is NSNull, "\(prepared)")
            let registered = try await Self.rpc(api, "registerBranch", params: [
                "gid": gid, "trans_type": "tcc", "branch_id": "01", "data": "{}",
                "confirm": "http://b/api/json-rpc?method=Confirm", "cancel": "http://b/api/json-rpc?method=Cancel"])
            #expect(registered["error"] == nil, "\(registered)")
            let submitted = try await Self.rpc(api, "submit", params: ["gid": gid, "trans_type": "tcc"])
            #expect(submitted["error"] == nil, "\(submitted)")
            try await api.waitFor(gid, status: "succeed")

            let queried = try await Self.rpc(api, "query", params: ["gid": gid])
            let transaction = (queried["result"] as? [String: Any])?["transaction"] as? [String: Any]
            #expect(transaction?["protocol"] as? String == "json-rpc" && transaction?["status"] as? String == "succeed")

            let refused = try await Self.rpc(api, "abort", params: ["gid": gid, "trans_type": "tcc"])
            #expect(Self.errorCode(refused) == -32901, "\(refused)")
        }
    }

    /// A json-rpc busi: the coordinator POSTs JSON-RPC requests to `/api/json-rpc?method=...`.
    /// TransIn refuses (-32901) when its params say `fail`, answers ONGOING (-32902) once when
    /// they say `ongoing`, and an action answers an unknown error code once when they say `flaky`.
    final class JSONRPCBusi: Sendable {
        struct Call: Sendable, Equatable {
            var method: String
            var op: String
            var branchID: String
        }

        final class Log: Sendable {
            let calls = Locked<[String: [Call]]>([:])
        }

        let busi: TestBusi
        private let log = Log()

        init() async throws {
            let calls = log
            busi = try await TestBusi { received in
                guard let request = try? JSONSerialization.jsonObject(with: Data(received.body)) as? [String: Any],
                      request["jsonrpc"] as? String == "2.0", let id = request["id"] as? String, !id.isEmpty,
                      let method = request["method"] as? String, method == received.query["method"],
                      let params = request["params"] as? [String: Any], let gid = params["gid"] as? String,
                      params["trans_type"] as? String == "saga", params["amount"] as? Int == 30,
                      let op = params["op"] as? String, let branchID = params["branch_id"] as? String
                else {
                    return (400, #"{"message":"not the JSON-RPC request DTM sends"}"#)
                }
                let earlier = calls.calls.withLock { all in
                    let earlier = all[gid, default: []].filter { $0.method == method }.count
                    all[gid, default: []].append(Call(method: method, op: op, branchID: branchID))
                    return earlier
                }
                let code: Int? = if method == "TransIn" && params["fail"] as? Bool == true {
                    -32901
                } else if method == "TransIn" && params["ongoing"] as? Bool == true && earlier == 0 {
                    -32902
                } else if params["flaky"] as? Bool == true && op == "action" && earlier == 0 {
                    -23977
                } else {
                    nil
                }
                guard let code else { return (200, #"{"jsonrpc":"2.0","id":"\#(id)","result":{}}"#) }
                return (200, #"{"jsonrpc":"2.0","id":"\#(id)","error":{"code":\#(code),"message":"busi says \#(code)"}}"#)
            }
        }

        func url(_ method: String) -> String { busi.url("/api/json-rpc?method=\(method)") }
        func calls(_ gid: String) -> [Call] { log.calls.withLock { $0[gid, default: []] } }
    }

    static func saga(_ gid: String, _ busi: JSONRPCBusi, transIn: String) -> [String: Any] {
        ["gid": gid, "trans_type": "saga", "protocol": "json-rpc",
         "steps": [["action": busi.url("TransOut"), "compensate": busi.url("TransOutRevert")],
                   ["action": busi.url("TransIn"), "compensate": busi.url("TransInRevert")]],
         "payloads": [#"{"amount":30,"flaky":true}"#, transIn]]
    }

    /// A json-rpc saga end to end, submitted over `/api/json-rpc`: success after an unknown
    /// error (retried) and an ONGOING; then a FAILURE that is compensated in reverse order.
    @Test func jsonRPCSagaEndToEnd() async throws {
        let busi = try await JSONRPCBusi()
        try await withStarted(busi.busi) { _ in
            try await withCoordinator(caller: nil) { _, api in
                let ok = "jr-ok-\(UUID().uuidString.prefix(8))"
                let submitted = try await Self.rpc(api, "submit", params: Self.saga(ok, busi, transIn: #"{"amount":30,"ongoing":true}"#))
                #expect(submitted["error"] == nil, "\(submitted)")
                try await api.waitFor(ok, status: "succeed")
                typealias Call = JSONRPCBusi.Call
                #expect(busi.calls(ok) == [Call(method: "TransOut", op: "action", branchID: "01"),
                                           Call(method: "TransOut", op: "action", branchID: "01"),
                                           Call(method: "TransIn", op: "action", branchID: "02"),
                                           Call(method: "TransIn", op: "action", branchID: "02")])

                let failed = "jr-fail-\(UUID().uuidString.prefix(8))"
                let refused = try await Self.rpc(api, "submit", params: Self.saga(failed, busi, transIn: #"{"amount":30,"fail":true}"#))
                #expect(refused["error"] == nil, "\(refused)")
                try await api.waitFor(failed, status: "failed")
                #expect(busi.calls(failed).map { "\($0.method)/\($0.op)" }
                        == ["TransOut/action", "TransOut/action", "TransIn/action", "TransInRevert/compensate",
                            "TransOutRevert/compensate"])
                let reason = try await api.query(failed).transaction["rollback_reason"] as? String ?? ""
                #expect(reason.contains("-32901"), "\(reason)")
            }
        }
    }

    /// DTM's reading of JSON-RPC branch answers, case by case.
    @Test func branchAnswersAreMappedAsDTMDoes() {
        typealias Caller = JSONRPCBranchCaller
        #expect(Caller.result(status: 200, body: #"{"jsonrpc":"2.0","id":"1","result":{}}"#) == .success)
        #expect(Caller.result(status: 200, body: #"{"jsonrpc":"2.0","id":"1","error":null,"result":null}"#) == .success)
        #expect(Caller.result(status: 200, body: #"{"jsonrpc":"2.0","id":"1","error":{"code":-32902}}"#) == .ongoing)
        #expect(Caller.result(status: 200, body: #"{"jsonrpc":"2.0","id":"1","error":{"code":-32901}}"#)
                == .failure(message: #"{"jsonrpc":"2.0","id":"1","error":{"code":-32901}}"#))
        #expect(!Caller.result(status: 200, body: #"{"jsonrpc":"2.0","id":"1","error":{"code":-32603}}"#).isSuccess)
        #expect(!Caller.result(status: 200, body: #"{"jsonrpc":"2.0","id":"1","error":"x"}"#).isSuccess)
        #expect(!Caller.result(status: 200, body: "not json").isSuccess)
        #expect(Caller.result(status: 409, body: "{}") == .failure(message: "{}"))
        #expect(Caller.result(status: 425, body: "{}") == .ongoing)
        #expect(!Caller.result(status: 500, body: #"{"jsonrpc":"2.0","id":"1","result":{}}"#).isSuccess)
    }
}
