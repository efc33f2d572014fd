import AsyncHTTPClient
import DtmEngine
@testable import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// A unique gid prefix per test: the tests of a run share nothing.
private func uniquePrefix(_ name: String) -> String { "\(name)-\(UUID().uuidString.prefix(8).lowercased())" }

private func sagaBody(_ gid: String, _ actions: [String], options: [String: Any] = [:]) -> [String: Any] {
    var body: [String: Any] = [
        "gid": gid, "trans_type": "saga",
        "steps": actions.enumerated().map { ["action": $0.element, "compensate": "http://busi/c\($0.offset)"] },
        "payloads": actions.map { _ in "{}" },
    ]
    for (key, value) in options { body[key] = value }
    return body
}

private func submit(_ api: API, _ gid: String, _ actions: [String], options: [String: Any] = [:]) async throws {
    let answer = try await api.post("/api/dtmsvr/submit", json: sagaBody(gid, actions, options: options))
    #expect(answer.status == 200, "\(answer)")
}

extension API.Answer {
    var error: String { json["error"] as? String ?? "" }
    var transactions: [[String: Any]] { json["transactions"] as? [[String: Any]] ?? [] }
    var gids: [String] { transactions.compactMap { $0["gid"] as? String } }
}

@Suite("Admin API (/api/admin)")
struct AdminAPITests {
    @Test func listFiltersPagesAndAnswersNewestFirst() async throws {
        try await withCoordinator(caller: ScriptedCaller()) { _, api in
            let p = uniquePrefix("list")
            try await submit(api, "\(p)-ok-1", ["http://busi/a"])
            try await submit(api, "\(p)-bad-2", ["http://busi/fail"])
            try await submit(api, "\(p)-ok-3", ["http://busi/b"])
            try await api.waitFor("\(p)-ok-1", status: "succeed")
            try await api.waitFor("\(p)-bad-2", status: "failed")
            try await api.waitFor("\(p)-ok-3", status: "succeed")

            let all = try await api.get("/api/admin/transactions?gid_prefix=\(p)")
            #expect(all.status == 200, "\(all)")
            #expect(all.gids == ["\(p)-ok-3", "\(p)-bad-2", "\(p)-ok-1"])
            #expect(all.json["next_position"] as? String == "")
            let row = try #require(all.transactions.last)
            #expect(Set(row.keys) == ["gid", "trans_type", "status", "create_time", "update_time", "finish_time",
                                      "next_cron_time", "owner", "rollback_reason"])
            #expect(row["trans_type"] as? String == "saga")
            let created = try #require(row["create_time"] as? String)
            #expect(AdminListFilter.parseRFC3339(created) != nil && created.hasSuffix("Z"), "\(created)")
            #expect((row["finish_time"] as? String)?.isEmpty == false)
            #expect(try await api.get("/api/admin/transactions?gid_prefix=\(p)-bad").transactions.first?["rollback_reason"]
                    as? String == "url:http://busi/fail return failed: FAILURE FAILURE")

            #expect(try await api.get("/api/admin/transactions?gid_prefix=\(p)&status=succeed").gids
                    == ["\(p)-ok-3", "\(p)-ok-1"])
            #expect(try await api.get("/api/admin/transactions?gid_prefix=\(p)&status=failed&trans_type=saga").gids
                    == ["\(p)-bad-2"])
            #expect(try await api.get("/api/admin/transactions?gid_prefix=\(p)&trans_type=tcc").gids.isEmpty)
            #expect(try await api.get("/api/admin/transactions?gid_prefix=\(p)-ok").gids.count == 2)
            // A created time range around now holds them; one in the past holds none.
            let past = "2001-01-01T00:00:00Z", future = "2999-01-01T00:00:00.5%2B02:00"
            #expect(try await api.get("/api/admin/transactions?gid_prefix=\(p)&created_from=\(past)&created_to=\(future)")
                .gids.count == 3)
            #expect(try await api.get("/api/admin/transactions?gid_prefix=\(p)&created_to=\(past)").gids.isEmpty)
            #expect(try await api.get("/api/admin/transactions?gid_prefix=\(p)&created_from=\(future)").gids.isEmpty)

            // Paging: two pages of two, the second the last.
            let first = try await api.get("/api/admin/transactions?gid_prefix=\(p)&limit=2")
            #expect(first.gids == ["\(p)-ok-3", "\(p)-bad-2"])
            let position = try #require(first.json["next_position"] as? String)
            #expect(!position.isEmpty)
            let second = try await api.get("/api/admin/transactions?gid_prefix=\(p)&limit=2&position=\(position)")
            #expect(second.gids == ["\(p)-ok-1"])
            #expect(second.json["next_position"] as? String == "")
        }
    }

    @Test(arguments: [
        ("status=done", "status: must be one of prepared, submitted, aborting, succeed, failed (got 'done')"),
        ("trans_type=sagas", "trans_type: must be one of saga, tcc, msg, xa, workflow (got 'sagas')"),
        ("limit=0", "limit: must be between 1 and 1000 (got 0)"),
        ("limit=1001", "limit: must be between 1 and 1000 (got 1001)"),
        ("limit=ten", "limit: expected a whole number, got 'ten'"),
        ("position=x", "position: expected a whole number, got 'x'"),
        ("created_from=yesterday",
         "created_from: expected an RFC 3339 time such as 2026-01-31T08:00:00Z (got 'yesterday')"),
        ("created_to=2026-13-01T00:00:00Z",
         "created_to: expected an RFC 3339 time such as 2026-01-31T08:00:00Z (got '2026-13-01T00:00:00Z')"),
    ])
    func badListInputIsA400(_ query: String, _ message: String) async throws {
        try await withCoordinator { _, api in
            let answer = try await api.get("/api/admin/transactions?\(query)")
            #expect(answer.status == 400, "\(answer)")
            #expect(answer.error == message)
        }
    }

    @Test func detailShowsBranchesAttemptsAndWhyItIsNotFinished() async throws {
        try await withCoordinator(caller: ScriptedCaller()) { _, api in
            let p = uniquePrefix("detail")
            // Finished, rolled back: compensations are attempts too; nothing is pending.
            try await submit(api, "\(p)-failed", ["http://busi/a", "http://busi/fail"])
            try await api.waitFor("\(p)-failed", status: "failed")
            let failed = try await api.get("/api/admin/transactions/\(p)-failed")
            #expect(failed.status == 200, "\(failed)")
            let transaction = try #require(failed.json["transaction"] as? [String: Any])
            #expect(transaction["status"] as? String == "failed")
            for key in ["retry_interval", "next_cron_interval", "timeout_to_fail", "retry_limit", "retry_count"] {
                #expect(transaction[key] is Int, "\(key)")
            }
            #expect((transaction["custom_data"] as? String) != nil)
            let branches = try #require(failed.json["branches"] as? [[String: Any]])
            #expect(branches.map { "\($0["branch_id"] ?? "")/\($0["op"] ?? "")/\($0["status"] ?? "")" }
                    == ["01/compensate/succeed", "01/action/succeed", "02/compensate/succeed", "02/action/failed"])
            let attempts = try #require(failed.json["attempts"] as? [[String: Any]])
            #expect(attempts.map { "\($0["branch_id"] ?? "")/\($0["op"] ?? "")/\($0["result"] ?? "")" }
                    == ["01/action/success", "02/action/failure", "02/compensate/success", "01/compensate/success"])
            #expect(attempts[1]["error"] as? String == "FAILURE FAILURE")
            #expect(attempts.allSatisfy { ($0["duration_ms"] as? Int ?? -1) >= 0 && !($0["owner"] as? String ?? "").isEmpty })
            #expect(failed.json["pending"] is NSNull)
            #expect(!failed.text.contains("branch_headers"))

            // Stuck on an erroring branch: the explanation says why and until when.
            try await submit(api, "\(p)-stuck", ["http://busi/error"],
                             options: ["retry_interval": 3600, "branch_headers": ["x-secret": "s3cr3t"]])
            var stuck = try await api.get("/api/admin/transactions/\(p)-stuck")
            try await waitUntil("the erroring call recorded") {
                stuck = try await api.get("/api/admin/transactions/\(p)-stuck")
                return !(stuck.json["attempts"] as? [Any] ?? []).isEmpty
            }
            let pending = try #require(stuck.json["pending"] as? [String: Any], "\(stuck)")
            let explanation = pending["explanation"] as? String ?? ""
            #expect(explanation.hasPrefix("waiting for retry at "), "\(explanation)")
            #expect(explanation.hasSuffix("after branch 01 action answered ERROR (attempt 1)"), "\(explanation)")
            #expect(pending["last_error"] as? String == "HTTP 500: boom\n\"forged\"")
            #expect(pending["retry_count"] as? Int == 1)
            #expect(!(pending["lease_owner"] as? String ?? "").isEmpty)
            #expect(pending["next_retry_time"] as? String == pending["lease_until"] as? String)
            #expect(!stuck.text.contains("s3cr3t") && !stuck.text.contains("x-secret"))

            let unknown = try await api.get("/api/admin/transactions/\(p)-nope")
            #expect(unknown.status == 404)
            #expect(unknown.error == "no transaction with gid '\(p)-nope'")
        }
    }

    @Test func forceStopAndRetryNow() async throws {
        try await withCoordinator(caller: ScriptedCaller()) { _, api in
            let p = uniquePrefix("ops")
            // Errors once, then succeeds; its retry is an hour away.
            try await submit(api, "\(p)-once", ["http://busi/\(p)/once"], options: ["retry_interval": 3600])
            try await waitUntil("the first call failed") {
                let detail = try await api.get("/api/admin/transactions/\(p)-once")
                return (detail.json["attempts"] as? [Any])?.count == 1
            }
            let before = try await api.get("/api/admin/transactions/\(p)-once")
            let retryAt = (before.json["transaction"] as? [String: Any])?["next_cron_time"] as? String ?? ""
            let due = try #require(AdminListFilter.parseRFC3339(retryAt))
            #expect(due.timeIntervalSinceNow > 600, "next retry \(retryAt)")
            let retried = try await api.post("/api/admin/transactions/\(p)-once/retry-now", "")
            #expect(retried.status == 200, "\(retried)")
            #expect(retried.json["dtm_result"] as? String == "SUCCESS")
            // Driven now, long before the hour is up.
            try await api.waitFor("\(p)-once", status: "succeed")
            #expect(Date() < due)
            let after = try await api.get("/api/admin/transactions/\(p)-once")
            #expect((after.json["attempts"] as? [[String: Any]])?.map { $0["result"] as? String ?? "" } == ["error", "success"])

            let finished = try await api.post("/api/admin/transactions/\(p)-once/retry-now", "")
            #expect(finished.status == 409, "\(finished)")
            #expect(finished.error == "transaction '\(p)-once' is succeed: a finished transaction is not retried")
            #expect(try await api.post("/api/admin/transactions/\(p)-nope/retry-now", "").status == 404)

            // Force-stop ends a stuck transaction as DTM's forceStop does, once.
            try await submit(api, "\(p)-stuck", ["http://busi/error"], options: ["retry_interval": 3600])
            let stopped = try await api.post("/api/admin/transactions/\(p)-stuck/force-stop", "")
            #expect(stopped.status == 200, "\(stopped)")
            #expect(stopped.json["dtm_result"] as? String == "SUCCESS")
            #expect(try await api.status("\(p)-stuck") == "failed")
            let again = try await api.post("/api/admin/transactions/\(p)-stuck/force-stop", "")
            #expect(again.status == 409, "\(again)")
            #expect(again.error.contains("status: failed"), "\(again)")
            let unknown = try await api.post("/api/admin/transactions/\(p)-nope/force-stop", "")
            #expect(unknown.status == 404, "\(unknown)")
            #expect(!unknown.error.isEmpty)
            // GET on a POST route, POST on a GET route: 405 with Allow.
            #expect(try await api.get("/api/admin/transactions/\(p)-stuck/force-stop").status == 405)
        }
    }

    @Test func everyAdminRouteNeedsTheTokenWhenTokensAreOn() async throws {
        let folder = try TempFolder()
        try await withStarted(folder) { folder in
            let token = "admin-token-0123456789abcdef"
            let tokens = try folder.write("tokens", "\(token)\n")
            var config = CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: quickEngine)
            config.security = SecurityConfig(auth: AuthConfig(tokensFile: tokens))
            try await withStarted(await CoordinatorServer.start(config, store: InMemoryStore(),
                                                                branchCaller: RecordingCaller(), logger: testLogger)) {
                coordinator in
                let gid = uniquePrefix("auth")
                let routes: [(HTTPMethod, String)] = [
                    (.GET, "/api/admin/transactions"), (.GET, "/api/admin/transactions/\(gid)"),
                    (.POST, "/api/admin/transactions/\(gid)/force-stop"),
                    (.POST, "/api/admin/transactions/\(gid)/retry-now"),
                ]
                for (method, path) in routes {
                    for authorization in [nil, "Bearer wrong-token"] {
                        let answer = try await authorized(coordinator.httpPort, method, path, authorization)
                        #expect(answer.status == 401, "\(method) \(path) \(authorization ?? "no token"): \(answer)")
                    }
                }
                #expect(try await authorized(coordinator.httpPort, .GET, routes[0].1, "Bearer \(token)").status == 200)
                #expect(try await authorized(coordinator.httpPort, .GET, routes[1].1, "Bearer \(token)").status == 404)
            }
        }
    }
}

private func authorized(_ port: Int, _ method: HTTPMethod, _ path: String,
                        _ authorization: String?) async throws -> API.Answer {
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
    request.method = method
    if let authorization { request.headers.add(name: "Authorization", value: authorization) }
    if method == .POST { request.body = .bytes(ByteBuffer(string: "")) }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
    let bytes = try await response.body.collect(upTo: 1 << 20)
    return API.Answer(status: Int(response.status.code), text: String(buffer: bytes),
                      contentType: response.headers.first(name: "Content-Type") ?? "")
}
