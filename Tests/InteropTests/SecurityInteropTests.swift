import DtmTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real `dtm` with `--auth-tokens`, `--branch-allow` and `--redact-query`, and a real client
/// (python grpcio with metadata, urllib over HTTP with the header): what a DTM user changes.
@Suite struct SecurityInteropTests {
    @Test func tokensAllowListAndRedactionWithRealClients() async throws {
        let binary = try #require(Peers.dtmBinary, "build the dtm executable first")
        let python = try Peers.require(Peers.python, "python with grpcio")
        let workDir = try makeTempDir("dtm-security")
        defer { try? FileManager.default.removeItem(at: workDir) }
        let token = "interop-\(UUID().uuidString)"
        let tokens = workDir.appendingPathComponent("tokens")
        try Data("# tokens of the interop test\n\(token)\n".utf8).write(to: tokens)
        let dtm = try await DtmProcess.start(
            binary: binary, store: workDir.appendingPathComponent("dtm.sqlite").path,
            logURL: workDir.appendingPathComponent("dtm.log"),
            arguments: ["--auth-tokens", tokens.path, "--branch-allow", "127.0.0.0/8", "--redact-query",
                        "--log-level", "debug"])
        defer { dtm.killIfRunning() }
        let run = try await Peers.run(python, ["auth_client.py", dtm.target, dtm.httpBase, token], timeout: .seconds(120))
        #expect(run.status == 0, "\(run.stderr)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any],
                                   "\(run.stdout)\n\(run.stderr)")
        #expect(results["grpc_no_token"] as? String == "UNAUTHENTICATED", "\(results)")
        #expect(results["grpc_wrong_token"] as? String == "UNAUTHENTICATED", "\(results)")
        #expect((results["grpc_gid"] as? String)?.count == 22, "\(results)")
        #expect(results["grpc_prepare"] as? String == "OK" && results["grpc_abort"] as? String == "OK", "\(results)")
        #expect(results["grpc_fenced_submit"] as? String == "PERMISSION_DENIED", "\(results)")
        #expect(results["grpc_health_no_token"] as? String == "OK", "\(results)")
        #expect(results["http_no_token"] as? Int == 401 && results["http_wrong_token"] as? Int == 401, "\(results)")
        #expect(results["http_ping_no_token"] as? Int == 200, "\(results)")
        #expect((results["http_query"] as? [Any])?.first as? Int == 200, "\(results)")
        #expect(results["http_submit_no_token"] as? Int == 401 && results["http_submit"] as? Int == 200, "\(results)")
        #expect(results["http_fenced_submit"] as? Int == 403, "\(results)")
        let queried = results["http_query_text"] as? String ?? ""
        #expect(queried.contains("[redacted]") && !queried.contains("branch-secret-xyz"), "\(queried)")
        try await dtm.stop(SIGTERM)
        // Neither the tokens nor the branch header reached the log, even at debug.
        #expect(!dtm.log.contains(token) && !dtm.log.contains("branch-secret-xyz"), "\(dtm.log.suffix(4000))")
    }

    /// A bad rule or an unreadable key file stops `dtm` at start with a message naming it.
    @Test(arguments: [
        (["--branch-allow", "10.0.0.0/33"], "10.0.0.0/33"),
        (["--branch-allow-file", "/nonexistent/allow"], "/nonexistent/allow"),
        (["--auth-tokens", "/nonexistent/tokens"], "/nonexistent/tokens"),
        (["--auth-jwt-rs256-public-key", "/nonexistent/key.pem"], "/nonexistent/key.pem"),
    ])
    func badSecurityOptionsStopTheStart(arguments: [String], named: String) async throws {
        let binary = try #require(Peers.dtmBinary, "build the dtm executable first")
        let workDir = try makeTempDir("dtm-security-bad")
        defer { try? FileManager.default.removeItem(at: workDir) }
        let run = try await Peers.run(binary, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0",
                                               "--store", workDir.appendingPathComponent("d.sqlite").path] + arguments,
                                      timeout: .seconds(60))
        #expect(run.status != 0)
        #expect((run.stderr + run.stdout).contains(named), "\(run.stderr)\n\(run.stdout)")
    }
}
