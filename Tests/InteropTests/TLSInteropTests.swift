import DtmTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// Issue 11 items 1-2: the real `dtm` over TLS (grpcio with ssl_channel_credentials, https with
// Python's ssl), mutual TLS, a certificate swap while connections stay open, and gRPC branches
// served over TLS by grpcio, called through `grpcs://` URLs. Every certificate is made by the
// test with openssl.
@Suite(.serialized) struct TLSInteropTests {
    /// A saga over gRPC with TLS whose branches are `grpcs://` (success, then a failure with its
    /// compensations), queried over https; a saga through the JSON API over https whose second
    /// action is an https branch trusted through --branch-ca; both ports answer with the
    /// configured certificate and ALPN.
    @Test func sagasOverTLSWithTLSBranches() async throws {
        try await TLSFixture.with { fixture in
            let ca = try TestCA.make(in: fixture.dir.appendingPathComponent("ca"))
            let server = try ca.issueServer("dtm-server")
            let busi = try await RunningPeer.start(fixture.python, ["busi_server.py", "--tls", server.certificate, server.key])
            defer { busi.stop() }
            let dtm = try await fixture.startDtm(["--tls-cert", server.certificate, "--tls-key", server.key,
                                                  "--branch-ca", ca.certificate])
            defer { dtm.killIfRunning() }
            let client = TLSClient(fixture: fixture, ca: ca.certificate)

            for (port, alpn) in [(dtm.grpcPort, "h2"), (dtm.httpPort, "http/1.1")] {
                let peer = try await client.peer(port: port, alpn: alpn)
                #expect(peer["serial"] as? String == server.serial, "\(peer)")
                #expect(peer["cn"] as? String == "dtm-server")
                #expect(peer["alpn"] as? String == alpn)
                #expect(peer["read"] as? String == "data", "\(peer)")
            }

            let busiURL = { (method: String) in "grpcs://127.0.0.1:\(busi.firstLine)/busi.Busi/\(method)" }
            let ok = uniqueGid("tls-ok"), failed = uniqueGid("tls-failed")
            func saga(_ gid: String, transIn: String) -> [String: Any] {
                // TransOutRevert reads TransOutResult (empty: OK), so both compensations succeed.
                sagaRequest(gid, steps: [(busiURL("TransOut"), busiURL("TransOutRevert")),
                                         (busiURL("TransIn"), busiURL("TransOutRevert"))],
                            payloads: [busiPayload(.grpc), busiPayload(.grpc, transIn: transIn)])
            }
            let submitted = try await client.grpc(dtm.target, [Op.submit(saga(ok, transIn: "")),
                                                               Op.submit(saga(failed, transIn: "FAILURE"))])
            #expect(submitted.map { $0["code"] as? String } == ["OK", "OK"], "\(submitted)")

            let done = try await client.wait(dtm, ok)
            #expect(done["status"] as? String == "succeed", "\(done) \(dtm.log.suffix(3000))")
            #expect(done["branches"] as? [String] == ["prepared", "succeed", "prepared", "succeed"])
            let rolledBack = try await client.wait(dtm, failed)
            #expect(rolledBack["status"] as? String == "failed", "\(rolledBack)")
            #expect(rolledBack["branches"] as? [String] == ["succeed", "succeed", "succeed", "failed"])
            #expect((rolledBack["rollback_reason"] as? String)?.contains("reason:FAILURE") ?? false, "\(rolledBack)")

            // The JSON API over https; the second action is an https branch (this coordinator's own
            // /api/ping), verified against --branch-ca.
            let httpBusi = try await BusiPeer.shared()
            let viaHTTP = uniqueGid("tls-http")
            let body: [String: Any] = [
                "gid": viaHTTP, "trans_type": "saga",
                "steps": [["action": httpBusi.url("TransOut", .http), "compensate": httpBusi.url("TransOutRevert", .http)],
                          ["action": "https://127.0.0.1:\(dtm.httpPort)/api/ping", "compensate": ""]],
                "payloads": [#"{"amount":30}"#, ""],
            ]
            let answer = try await client.https("POST", "https://127.0.0.1:\(dtm.httpPort)/api/dtmsvr/submit", body: body)
            #expect(answer["status"] as? Int == 200, "\(answer)")
            let httpDone = try await client.wait(dtm, viaHTTP)
            #expect(httpDone["status"] as? String == "succeed", "\(httpDone) \(dtm.log.suffix(3000))")
            #expect(httpDone["branches"] as? [String] == ["prepared", "succeed", "prepared", "succeed"])

            // Plaintext to a TLS port gets nowhere.
            #expect(await httpGet("http://127.0.0.1:\(dtm.httpPort)/api/ping")?.status != 200)
            try await dtm.stop(SIGTERM)
        }
    }

    /// With --tls-client-ca, a client without a certificate (or with one of another CA) is refused
    /// during the handshake on both ports; one with a certificate works, and the coordinator
    /// presents its --branch-client-cert to a grpcio busi that requires mutual TLS.
    @Test func mutualTLS() async throws {
        try await TLSFixture.with { fixture in
            let ca = try TestCA.make(in: fixture.dir.appendingPathComponent("ca"))
            let server = try ca.issueServer("dtm-server")
            let client = try ca.issueClient("dtm-client")
            let stranger = try TestCA.make(in: fixture.dir.appendingPathComponent("other"), name: "other-ca")
                .issueClient("stranger")
            let busi = try await RunningPeer.start(fixture.python, ["busi_server.py", "--tls", server.certificate,
                                                                    server.key, ca.certificate])
            defer { busi.stop() }
            let dtm = try await fixture.startDtm(["--tls-cert", server.certificate, "--tls-key", server.key,
                                                  "--tls-client-ca", ca.certificate, "--branch-ca", ca.certificate,
                                                  "--branch-client-cert", client.certificate,
                                                  "--branch-client-key", client.key])
            defer { dtm.killIfRunning() }
            let anonymous = TLSClient(fixture: fixture, ca: ca.certificate)
            let strangerClient = TLSClient(fixture: fixture, ca: ca.certificate, identity: stranger)
            let known = TLSClient(fixture: fixture, ca: ca.certificate, identity: client)

            for refused in [anonymous, strangerClient] {
                let calls = try await refused.grpc(dtm.target, [Op.newGid])
                #expect(calls.first?["code"] as? String == "UNAVAILABLE", "\(calls)")
                for (port, alpn) in [(dtm.grpcPort, "h2"), (dtm.httpPort, "http/1.1")] {
                    // TLS 1.3: the client's side of the handshake ends first; the server's alert
                    // arrives instead of any data.
                    let peer = try await refused.peer(port: port, alpn: alpn)
                    let failure = (peer["error"] as? String) ?? (peer["read"] as? String) ?? ""
                    #expect(failure.contains("SSLError") && failure.contains("ALERT"), "\(peer)")
                }
                let https = try await refused.https("GET", "https://127.0.0.1:\(dtm.httpPort)/api/dtmsvr/newGid")
                #expect(https["status"] == nil, "\(https)")
            }

            let gids = try await known.grpc(dtm.target, [Op.newGid])
            #expect(gids.first?["code"] as? String == "OK", "\(gids)")
            let https = try await known.https("GET", "https://127.0.0.1:\(dtm.httpPort)/api/dtmsvr/newGid")
            #expect(https["status"] as? Int == 200, "\(https)")

            let gid = uniqueGid("mtls")
            let url = { (method: String) in "grpcs://127.0.0.1:\(busi.firstLine)/busi.Busi/\(method)" }
            let saga = sagaRequest(gid, steps: [(url("TransOut"), url("TransOutRevert")), (url("TransIn"), url("TransOutRevert"))],
                                   payloads: [busiPayload(.grpc), busiPayload(.grpc)], options: ["WaitResult": true])
            let submitted = try await known.grpc(dtm.target, [Op.submit(saga)])
            #expect(submitted.first?["code"] as? String == "OK", "\(submitted) \(dtm.log.suffix(3000))")
            let done = try await known.wait(dtm, gid)
            #expect(done["status"] as? String == "succeed", "\(done)")
            try await dtm.stop(SIGTERM)
        }
    }

    /// The certificate files are rewritten with a certificate of another CA: a new connection gets
    /// the new certificate, while a gRPC channel and an https connection opened before (which
    /// trust only the old CA, so a reconnect would fail) keep working. Then a broken file keeps
    /// the certificate in use and logs an error. With polling off, SIGHUP reloads.
    @Test(arguments: [false, true])
    func certificateSwap(bySIGHUP: Bool) async throws {
        try await TLSFixture.with { fixture in
            let oldCA = try TestCA.make(in: fixture.dir.appendingPathComponent("old"), name: "old-ca")
            let newCA = try TestCA.make(in: fixture.dir.appendingPathComponent("new"), name: "new-ca")
            let old = try oldCA.issueServer("dtm-old"), new = try newCA.issueServer("dtm-new")
            let certFile = fixture.dir.appendingPathComponent("server.pem").path
            let keyFile = fixture.dir.appendingPathComponent("server.key").path
            try install(old, certFile: certFile, keyFile: keyFile)
            let bundle = fixture.dir.appendingPathComponent("both.pem").path
            try (String(contentsOfFile: oldCA.certificate, encoding: .utf8)
                 + String(contentsOfFile: newCA.certificate, encoding: .utf8)).write(toFile: bundle, atomically: true, encoding: .utf8)
            let dtm = try await fixture.startDtm(["--tls-cert", certFile, "--tls-key", keyFile]
                                                 + (bySIGHUP ? ["--tls-reload-interval", "0"] : []))
            defer { dtm.killIfRunning() }
            let either = TLSClient(fixture: fixture, ca: bundle)

            let go = fixture.dir.appendingPathComponent("go").path
            let out = fixture.dir.appendingPathComponent("held.json").path
            let held = try await RunningPeer.start(fixture.python, ["tls_client.py", "hold", dtm.target,
                                                                    "127.0.0.1:\(dtm.httpPort)", oldCA.certificate, go, out])
            defer { held.stop() }
            #expect(held.firstLine == "ready")

            try install(new, certFile: certFile, keyFile: keyFile)
            if bySIGHUP { kill(dtm.process.processIdentifier, SIGHUP) }
            for (port, alpn) in [(dtm.grpcPort, "h2"), (dtm.httpPort, "http/1.1")] {
                var last: [String: Any] = [:]
                try await waitUntil("port \(port) to serve the new certificate: \(last) \(dtm.log.suffix(2000))",
                                    timeout: .seconds(30)) {
                    last = try await either.peer(port: port, alpn: alpn)
                    return last["serial"] as? String == new.serial
                }
                #expect(last["cn"] as? String == "dtm-new")
                #expect(last["read"] as? String == "data", "\(last)")
            }

            _ = FileManager.default.createFile(atPath: go, contents: nil)
            try await waitUntil("the held connections to be used again", timeout: .seconds(30)) {
                FileManager.default.fileExists(atPath: out)
            }
            let result = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out)))
                as? [String: Any])
            #expect(result["grpc"] as? String == "OK", "\(result)")
            #expect(result["https"] as? Int == 200, "\(result)")
            #expect(result["same_socket"] as? Bool == true, "\(result)")
            #expect(result["serial_after"] as? String == old.serial, "\(result)")

            // A broken certificate file: reported, and the certificate in use stays.
            let reported = dtm.log.components(separatedBy: "TLS files not reloaded").count
            try "not a certificate\n".write(toFile: certFile, atomically: true, encoding: .utf8)
            if bySIGHUP { kill(dtm.process.processIdentifier, SIGHUP) }
            try await waitUntil("the bad file to be reported: \(dtm.log.suffix(2000))", timeout: .seconds(30)) {
                dtm.log.components(separatedBy: "TLS files not reloaded").count > reported
            }
            let still = try await either.peer(port: dtm.grpcPort, alpn: "h2")
            #expect(still["serial"] as? String == new.serial, "\(still)")
            #expect(dtm.process.isRunning)
            try await dtm.stop(SIGTERM)
        }
    }

    /// Bad TLS flags or files stop `dtm` at start-up with a message naming the problem.
    @Test func badTLSSettingsStopTheStart() async throws {
        try await TLSFixture.with { fixture in
            let ca = try TestCA.make(in: fixture.dir.appendingPathComponent("ca"))
            let server = try ca.issueServer("dtm-server")
            let other = try ca.issueServer("dtm-other")
            let cases: [([String], String)] = [
                (["--tls-cert", server.certificate], "TlsCert and TlsKey (--tls-cert, --tls-key) go together"),
                (["--tls-client-ca", ca.certificate], "TlsClientCa (--tls-client-ca) needs TlsCert"),
                (["--tls-cert", server.certificate, "--tls-key", other.key], "cannot be used together"),
                (["--tls-cert", "/nonexistent.pem", "--tls-key", server.key], "/nonexistent.pem"),
                (["--branch-ca", "/nonexistent-ca.pem"], "/nonexistent-ca.pem"),
                (["--branch-client-cert", server.certificate], "(--branch-client-cert, --branch-client-key) go together"),
            ]
            for (index, (arguments, message)) in cases.enumerated() {
                let dtm = try await fixture.startDtm(arguments, name: "bad-\(index)", mayDie: true)
                defer { dtm.killIfRunning() }
                #expect(try await dtm.waitForExit(timeout: .seconds(30)), "\(arguments)")
                #expect(dtm.process.terminationStatus != 0)
                #expect(dtm.log.contains(message), "\(arguments): \(dtm.log)")
            }
        }
    }
}

/// Copies a certificate and key over the files `dtm` reads (each replaced in one rename).
private func install(_ issued: TestCA.Issued, certFile: String, keyFile: String) throws {
    for (source, target) in [(issued.key, keyFile), (issued.certificate, certFile)] {
        try Data(contentsOf: URL(fileURLWithPath: source)).write(to: URL(fileURLWithPath: target), options: .atomic)
    }
}

/// A temporary directory, the Python and `dtm` of the build, and `dtm` processes on a store in it.
struct TLSFixture: Stoppable {
    let dir: URL
    let python: String
    let binary: String

    static func with(_ body: (TLSFixture) async throws -> Void) async throws {
        let python = try Peers.require(Peers.python, "python with grpcio")
        let binary = try Peers.require(Peers.dtmBinary, "the dtm executable")
        try await withStarted(TLSFixture(dir: try makeTempDir("dtm-tls"), python: python, binary: binary), body)
    }

    func startDtm(_ arguments: [String], name: String = "dtm", mayDie: Bool = false) async throws -> DtmProcess {
        try await DtmProcess.start(binary: binary, store: dir.appendingPathComponent("\(name).sqlite").path,
                                   logURL: dir.appendingPathComponent("\(name).log"), arguments: arguments, mayDie: mayDie)
    }

    func stop() async {
        try? FileManager.default.removeItem(at: dir)
    }
}

/// tls_client.py with one trust root and, optionally, a client certificate.
struct TLSClient {
    let fixture: TLSFixture
    let ca: String
    var identity: TestCA.Issued?

    private var credentials: [String] { [ca, identity?.certificate ?? "-", identity?.key ?? "-"] }

    private func run(_ arguments: [String]) async throws -> [String: Any] {
        let run = try await Peers.run(fixture.python, ["tls_client.py"] + arguments)
        guard run.status == 0, let object = try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
        else {
            throw PeerError.badOutput("tls_client.py \(arguments.first ?? ""): \(run.stdout) \(run.stderr)")
        }
        return object
    }

    func grpc(_ target: String, _ ops: [[String: Any]]) async throws -> [[String: Any]] {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: ops), as: UTF8.self)
        return try await run(["grpc", target] + credentials + [json])["results"] as? [[String: Any]] ?? []
    }

    func https(_ method: String, _ url: String, body: [String: Any]? = nil) async throws -> [String: Any] {
        let text = try body.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        return try await run(["https", method, url] + credentials + (text.map { [$0] } ?? []))
    }

    func wait(_ dtm: DtmProcess, _ gid: String) async throws -> [String: Any] {
        try await run(["wait", "https://127.0.0.1:\(dtm.httpPort)"] + credentials + [gid, "30"])
    }

    func peer(port: Int, alpn: String) async throws -> [String: Any] {
        try await run(["peer", "127.0.0.1", "\(port)"] + credentials + [alpn])
    }
}
