import DtmEngine
import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import Testing

/// The admin web UI (/admin) in a real headless Chromium, driven by Selenium
/// (python/admin_ui_check.py): an in-process coordinator with authentication on and the Python
/// busi run three transactions (one saga that succeeds, one whose TransIn answers FAILURE so it
/// compensates, one whose TransIn keeps failing with markup in its error, under a gid with markup
/// in it); the script checks the list, the filters, the diagram, the attempts, the "why is this
/// not finished" box and Force stop, and saves screenshots (PNG) to the artifacts directory:
/// `$DTM_ARTIFACTS/admin-ui`, else `.build/artifacts/admin-ui` in the repository.
///
/// Needs Debian's `chromium` and `chromium-driver` and the venv's `selenium` (tools/setup installs
/// them); without them the test fails, it does not skip.
@Suite struct AdminUIBrowserTests {
    static var artifacts: URL {
        if let base = ProcessInfo.processInfo.environment["DTM_ARTIFACTS"], !base.isEmpty {
            return URL(fileURLWithPath: base).appendingPathComponent("admin-ui")
        }
        return Peers.repoRoot.appendingPathComponent(".build/artifacts/admin-ui")
    }

    @Test func adminUIInHeadlessChromium() async throws {
        let python = try Peers.require(Peers.python, "python with selenium")
        for tool in ["chromium", "chromedriver"] where Peers.which(tool) == nil {
            Issue.record("\(tool) not found: run tools/setup (Debian packages chromium and chromium-driver)")
            return
        }
        let busi = try await BusiPeer.shared()
        let token = "admin-ui-\(UUID().uuidString)"
        let dir = try makeTempDir("dtm-admin-ui")
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokens = dir.appendingPathComponent("tokens")
        try Data("\(token)\n".utf8).write(to: tokens)
        let dbPath = dir.appendingPathComponent("dtm.sqlite").path
        let store = try await onOwnThread { try SQLiteStore(path: dbPath, logger: E2ECoordinator.logger) }
        do {
            try await run(busi: busi, store: store, token: token, tokensFile: tokens.path, python: python)
        } catch {
            await onOwnThread { store.close() }
            throw error
        }
        await onOwnThread { store.close() }
    }

    private func run(busi: BusiPeer, store: SQLiteStore, token: String, tokensFile: String, python: String) async throws {
        var config = CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: E2ECoordinator.engine)
        config.security = SecurityConfig(auth: AuthConfig(tokensFile: tokensFile))
        try await withStarted(await CoordinatorServer.start(config, store: store, logger: E2ECoordinator.logger)) { server in
            // Gids of this run only, so the prefix filter can narrow the list to them. The stuck
            // one carries markup (allowed by the gid rules: printable, no spaces).
            let prefix = "ui-\(UUID().uuidString.prefix(8).lowercased())-"
            let ok = prefix + "ok", failed = prefix + "failed", stuck = prefix + "stuck-<b>x<i>y"
            let stuckError = "<img src=x onerror=window.__dtmxss=1><b>bold</b>"
            try busi.control(stuck, ["TransIn": stuckError])

            func saga(_ gid: String, transIn: String) -> TransRequest {
                let body = Array(#"{"amount":30,"trans_out_Result":"","trans_in_result":"\#(transIn)"}"#.utf8)
                return TransRequest(gid: gid, transType: "saga",
                                    steps: [["action": busi.url("TransOut", .http), "compensate": busi.url("TransOutRevert", .http)],
                                            ["action": busi.url("TransIn", .http), "compensate": busi.url("TransInRevert", .http)]],
                                    payloads: [body, body])
            }
            try await server.engine.submit(saga(ok, transIn: ""))
            try await server.engine.submit(saga(failed, transIn: "FAILURE"))
            try await server.engine.submit(saga(stuck, transIn: ""))

            func status(_ gid: String) async throws -> GlobalStatus? { try await store.findGlobal(gid: gid)?.status }
            try await waitUntil("\(ok) to succeed", timeout: .seconds(60)) { try await status(ok) == .succeed }
            try await waitUntil("\(failed) to fail", timeout: .seconds(60)) { try await status(failed) == .failed }
            // Two failed TransIn calls: the stuck one has a last error and a retry scheduled.
            try await busi.waitForCalls(stuck, count: 2, timeout: .seconds(60)) { $0.method == "TransIn" }
            #expect(try await status(stuck) == .submitted)

            let artifacts = Self.artifacts
            try FileManager.default.createDirectory(at: artifacts, withIntermediateDirectories: true)
            let run = try await Peers.run(python, [
                "admin_ui_check.py", "--base", "http://127.0.0.1:\(server.httpPort)", "--artifacts", artifacts.path,
                "--prefix", prefix, "--ok", ok, "--failed", failed, "--stuck", stuck, "--stuck-error", stuckError,
                "--token", token,
            ], timeout: .seconds(300))
            try #require(run.status == 0, "admin_ui_check.py (\(run.status)): \(run.stdout)\n\(run.stderr.suffix(3000))")
            // Force stop from the page reached the store.
            try await waitUntil("force-stop of \(stuck) to be stored", timeout: .seconds(30)) {
                try await status(stuck) == .failed
            }
            for name in ["list", "failed-saga", "stuck", "stuck-force-stopped"] {
                #expect(FileManager.default.fileExists(atPath: artifacts.appendingPathComponent("\(name).png").path),
                        "screenshot \(name).png in \(artifacts.path)")
            }
        }
    }
}
