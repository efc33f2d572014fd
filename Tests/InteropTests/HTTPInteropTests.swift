import DtmEngine
import DtmServer
import DtmTestSupport
import Foundation
import Logging
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

extension Peers {
    /// schemathesis's `st`: beside the interop python (tools/setup installs it there), or
    /// `DTM_SCHEMATHESIS`, or a `.venv-schema` venv in the repository.
    static var schemathesis: String? {
        let environment = ProcessInfo.processInfo.environment
        let candidates: [String?] = [
            environment["DTM_SCHEMATHESIS"],
            python.map { URL(fileURLWithPath: $0).deletingLastPathComponent().appendingPathComponent("st").path },
            repoRoot.appendingPathComponent(".venv-schema/bin/st").path,
        ]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// Answers every branch call with success and calls nothing: generated requests carry
/// arbitrary URLs, which must never be dialled.
struct NoNetworkCaller: BranchCaller {
    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult { .success }
}

/// Engine settings for interop runs: the retry loop looks every second. Transactions time out
/// only when they ask to (the dtmcli msg does) and branch calls may take 30 s: on a loaded
/// machine a tcc must still be prepared when its SDK submits it.
let interopEngine = EngineConfig(retryInterval: 1, timeoutToFail: 600, requestTimeout: 30, transCronInterval: 1)

/// Coordinator logs at warning and above only.
let quietLogger: Logger = {
    var logger = Logger(label: "dtm.http-interop")
    logger.logLevel = .warning
    return logger
}()

@Suite(.serialized) struct HTTPInteropTests {
    /// DTM's own Python SDK (dtmcli from PyPI) against swift-dtm: saga (success and
    /// rollback), msg resolved by the query_prepared back-check, tcc (commit and rollback),
    /// with busi services in Python. Outcomes are read back through `/api/dtmsvr/query`.
    @Test func dtmcliPythonSDK() async throws {
        let python = try Peers.require(Peers.python, "python with dtmcli")
        try await withStarted(await CoordinatorServer.start(
            CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: interopEngine), store: InMemoryStore(),
            logger: quietLogger)) { coordinator in
            let dtm = "http://127.0.0.1:\(coordinator.httpPort)/api/dtmsvr"
            let peer = try await RunningPeer.start(python, ["dtmcli_flows.py", dtm])
            defer { peer.stop() }
            let gids = try #require(try JSONSerialization.jsonObject(with: Data(peer.firstLine.utf8)) as? [String: String],
                                    "\(peer.firstLine)")

            let expected: [(flow: String, status: String, branches: [String])] = [
                ("saga", "succeed", ["prepared", "succeed", "prepared", "succeed"]),
                ("saga_rollback", "failed", ["succeed", "succeed", "succeed", "failed"]),
                ("msg", "succeed", ["succeed"]),
                ("tcc", "succeed", ["prepared", "succeed", "prepared", "succeed"]),
                ("tcc_rollback", "failed", ["succeed", "prepared", "succeed", "prepared"]),
            ]
            for (flow, status, branches) in expected {
                let gid = try #require(gids[flow], "\(flow) did not run: \(gids)")
                var last: [String: Any] = [:]
                try await waitUntil("\(flow) to be \(status): \(last)") {
                    last = try await query(dtm, gid)
                    return (last["transaction"] as? [String: Any])?["status"] as? String == status
                }
                let transaction = last["transaction"] as? [String: Any] ?? [:]
                #expect(transaction["status"] as? String == status, "\(flow): \(last)")
                #expect((last["branches"] as? [[String: Any]] ?? []).map { $0["status"] as? String ?? "" } == branches,
                        "\(flow): \(last)")
            }
            let failed = try await query(dtm, gids["saga_rollback"] ?? "")["transaction"] as? [String: Any] ?? [:]
            let reason = failed["rollback_reason"] as? String ?? ""
            #expect(reason.contains("TransIn refused"), "the busi's FAILURE answer is the rollback reason: \(failed)")
            let calls = try await getJSON("http://127.0.0.1:\(gids["busi"] ?? "")/api/busi/calls")
            let backChecks = calls["QueryPrepared"] as? Int ?? 0
            #expect(backChecks >= 1, "the msg was resolved by its back-check: \(calls)")
            #expect(calls["TransOutRevert"] as? Int == 1 && calls["TransInRevert"] as? Int == 1, "\(calls)")
            #expect(calls["TransInCancel"] as? Int == 1 && calls["TransInConfirm"] as? Int == 1, "\(calls)")
        }
    }

    /// DTM's json-rpc protocol from Python with raw JSON-RPC requests to `/api/json-rpc` and a
    /// JSON-RPC busi (stdlib only, `python/jsonrpc_flows.py`): a saga that succeeds, a saga whose
    /// TransIn answers -32901 and is compensated, and malformed requests answered with JSON-RPC
    /// error codes, after which the server still answers.
    @Test func jsonRPCFromPython() async throws {
        let python = try Peers.require(Peers.python, "python")
        try await withStarted(await CoordinatorServer.start(
            CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: interopEngine), store: InMemoryStore(),
            logger: quietLogger)) { coordinator in
            let dtm = "http://127.0.0.1:\(coordinator.httpPort)/api/dtmsvr"
            let peer = try await RunningPeer.start(python, ["jsonrpc_flows.py", "http://127.0.0.1:\(coordinator.httpPort)/api/json-rpc"])
            defer { peer.stop() }
            let result = try #require(try JSONSerialization.jsonObject(with: Data(peer.firstLine.utf8)) as? [String: Any],
                                      "\(peer.firstLine)")
            #expect(result["errors"] as? [String: Int] == ["parse": -32700, "invalid": -32600, "unknown": -32601], "\(result)")
            #expect(result["after"] as? Bool == true)
            for (flow, status) in [("saga", "succeed"), ("saga_rollback", "failed")] {
                let gid = try #require(result[flow] as? String, "\(result)")
                var last: [String: Any] = [:]
                try await waitUntil("json-rpc \(flow) to be \(status): \(last)") {
                    last = try await query(dtm, gid)
                    return (last["transaction"] as? [String: Any])?["status"] as? String == status
                }
                #expect((last["transaction"] as? [String: Any])?["protocol"] as? String == "json-rpc")
            }
            let calls = try await getJSON("http://127.0.0.1:\(result["busi"] as? Int ?? 0)/calls")
            #expect(calls[result["saga"] as? String ?? ""] as? [String] == ["TransOut/action/01", "TransIn/action/02"], "\(calls)")
            #expect(calls[result["saga_rollback"] as? String ?? ""] as? [String]
                    == ["TransOut/action/01", "TransIn/action/02", "TransInRevert/compensate/02", "TransOutRevert/compensate/01"],
                    "\(calls)")
        }
    }

    /// Property-based run of the whole API against its OpenAPI document: malformed input
    /// gets a 4xx, never a 5xx, and every answer matches the document.
    @Test func schemathesisAgainstOpenAPIDocument() async throws {
        let st = try Peers.require(Peers.schemathesis, "schemathesis")
        try await withStarted(await CoordinatorServer.start(
            CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: interopEngine), store: InMemoryStore(),
            branchCaller: NoNetworkCaller(), logger: quietLogger)) { coordinator in
            let run = try await Peers.run(st, [
                "run", "http://127.0.0.1:\(coordinator.httpPort)/api/openapi.json",
                "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                    + "response_schema_conformance,negative_data_rejection,unsupported_method",
                "--phases", "examples,coverage,fuzzing", "--max-examples", "100", "--seed", "5",
                "--generation-database", "none", "--workers", "2", "--no-color", "--request-timeout", "20",
            ], timeout: .seconds(240))
            #expect(run.status == 0, "\(run.stdout.suffix(6000))\n\(run.stderr.suffix(2000))")
            #expect(try await query("http://127.0.0.1:\(coordinator.httpPort)/api/dtmsvr", "x").isEmpty == false,
                    "the server still answers")
        }
    }
}

/// `/api/dtmsvr/query?gid=` as a JSON object.
private func query(_ dtm: String, _ gid: String) async throws -> [String: Any] {
    try await getJSON("\(dtm)/query?gid=\(gid.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? gid)")
}

private func getJSON(_ url: String) async throws -> [String: Any] {
    let (data, _) = try await URLSession.shared.data(from: try #require(URL(string: url)))
    return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
}
