import DtmClient
import DtmTestSupport
import Foundation
import Testing

/// DtmClient with Python peers: a saga built with the SDK whose branches are a grpcio (and an
/// HTTP) Python service, and Swift branch services called on behalf of DTM's Python SDK,
/// dtmcli. Python is the interop venv (`DTM_PYTHON`, else `.venv-interop/bin/python`).
@Suite struct PythonInteropTests {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static var python: String? {
        [ProcessInfo.processInfo.environment["DTM_PYTHON"], repoRoot.appendingPathComponent(".venv-interop/bin/python").path]
            .compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The SDK's saga, branches served by the interop suite's Python busi (grpcio server and
    /// HTTP server in one process): success, and a TransIn FAILURE compensated in reverse order.
    @Test(arguments: Transport.allCases)
    func sdkSagaWithPythonBranches(_ transport: Transport) async throws {
        let python = try #require(Self.python, "set DTM_PYTHON to the interop venv's python (tools/setup)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-sdk-busi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let log = dir.appendingPathComponent("calls.jsonl")
        let peer = try await RunningPeer.start(python, in: Self.repoRoot.appendingPathComponent("Tests/InteropTests/python"),
                                              ["e2e_busi.py", "--log", log.path, "--control", dir.appendingPathComponent("control").path,
                                               "--remove-on-exit", dir.path])
        defer { peer.stop() }
        let ports = try #require(try JSONSerialization.jsonObject(with: Data(peer.firstLine.utf8)) as? [String: Int])
        func url(_ method: String) -> String {
            switch transport {
            case .grpc: "127.0.0.1:\(ports["grpc"] ?? 0)/busi.Busi/\(method)"
            case .http: "http://127.0.0.1:\(ports["http"] ?? 0)/api/busi/\(method)"
            }
        }
        func payload(transIn: String = "") -> [UInt8] {
            switch transport {
            case .grpc: BusiReqGrpc(amount: 30, transInResult: transIn).encode()
            case .http: Array(#"{"amount":30,"trans_in_result":"\#(transIn)"}"#.utf8)
            }
        }
        /// "Method/op" of the calls the busi logged for `gid`.
        func calls(_ gid: String) -> [String] {
            guard let data = try? Data(contentsOf: log) else { return [] }
            return data.split(separator: UInt8(ascii: "\n")).compactMap { line in
                guard let call = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                      call["gid"] as? String == gid else { return nil }
                return "\(call["method"] ?? "")/\(call["op"] ?? "")"
            }
        }
        try await Fixture.with(transport) { f in
            let ok = uniqueGid("py-saga-ok")
            var saga = Saga(f.client, gid: ok, options: TransOptions(waitResult: true))
            saga.add(action: url("TransOut"), compensate: url("TransOutRevert"), payload: payload())
            saga.add(action: url("TransIn"), compensate: url("TransInRevert"), payload: payload())
            try await saga.submit()
            #expect(try await f.waitFinal(ok).status == "succeed")
            #expect(calls(ok) == ["TransOut/action", "TransIn/action"])

            let failed = uniqueGid("py-saga-fail")
            var rollback = Saga(f.client, gid: failed)
            rollback.add(action: url("TransOut"), compensate: url("TransOutRevert"), payload: payload())
            rollback.add(action: url("TransIn"), compensate: url("TransInRevert"), payload: payload(transIn: "FAILURE"))
            try await rollback.submit()
            let final = try await f.waitFinal(failed)
            #expect(final.status == "failed")
            #expect(final.rollbackReason.contains("TransIn"), "\(final.rollbackReason)")
            try await waitUntil("both compensations of \(failed): \(calls(failed))") { calls(failed).count == 4 }
            #expect(calls(failed) == ["TransOut/action", "TransIn/action", "TransInRevert/compensate",
                                      "TransOutRevert/compensate"])
        }
    }

    /// dtmcli (DTM's Python SDK) runs sagas and TCCs whose branches are the SDK-written bank over
    /// HTTP (Hummingbird routes with the barrier): outcomes and balances are DTM's.
    @Test func dtmcliDrivesSwiftBranches() async throws {
        let python = try #require(Self.python, "set DTM_PYTHON to the interop venv's python (tools/setup)")
        try await Fixture.with(.http) { f in
            let dtm = "http://127.0.0.1:\(f.coordinator.httpPort)/api/dtmsvr"
            let busi = "http://127.0.0.1:\(f.httpPort)/api/bank"
            let peer = try await RunningPeer.start(python, in: Self.repoRoot.appendingPathComponent("Tests/DtmClientTests/python"),
                                                  ["dtmcli_to_swift.py", dtm, busi])
            defer { peer.stop() }
            let gids = try #require(try JSONSerialization.jsonObject(with: Data(peer.firstLine.utf8)) as? [String: String],
                                    "\(peer.firstLine)")
            let expected = [("saga", "succeed"), ("saga_rollback", "failed"), ("tcc", "succeed"), ("tcc_rollback", "failed")]
            for (flow, status) in expected {
                let gid = try #require(gids[flow], "\(flow) did not run: \(gids)")
                #expect(try await f.waitFinal(gid).status == status, "\(flow)")
            }
            #expect(try await f.branchStatuses(gids["tcc_rollback"] ?? "") == ["succeed", "prepared", "succeed", "prepared"])
            // Two transfers of 30 went through; both rolled-back ones left the balances alone,
            // although each called a compensation whose action had failed (null compensation).
            try await waitUntil("balances to settle") { try await f.bank.balances() == [40, 160] }
            #expect(f.bank.calls(gids["saga_rollback"] ?? "").contains("TransInRevert/compensate"))
            #expect(f.bank.calls(gids["tcc_rollback"] ?? "").contains("TransInRevert/cancel"))
        }
    }
}
