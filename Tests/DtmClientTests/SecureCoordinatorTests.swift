import DtmClient
import DtmEngine
import DtmGRPC
import DtmNet
import DtmServer
import DtmTestSupport
import Foundation
import Testing

/// The SDK against a coordinator started with TLS and bearer tokens (README "Security"): the
/// token and the CA bundle in `CoordinatorCredentials` are all a client needs, over gRPC
/// (`grpcs://`) and HTTPS; a client without them is refused and nothing is stored.
@Suite struct SecureCoordinatorTests {
    static let token = "sdk-test-token-\(UUID().uuidString)"

    /// A coordinator with TLS on both ports and a tokens file; `body` gets the client's endpoint.
    static func withSecureCoordinator(_ transport: Transport,
                                      _ body: (CoordinatorServer, CoordinatorEndpoint, TestCA) async throws -> Void) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-sdk-tls-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ca = try TestCA.make(in: dir)
        let server = try ca.issueServer("coordinator")
        let tokens = dir.appendingPathComponent("tokens").path
        try "\(token)\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        var config = CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: quickEngine)
        config.tls = ServerTLSConfig(certificateFile: server.certificate, privateKeyFile: server.key)
        config.security = SecurityConfig(auth: AuthConfig(tokensFile: tokens))
        try await withStarted(try await CoordinatorServer.start(config, store: InMemoryStore(), logger: testLogger)) { coordinator in
            let endpoint: CoordinatorEndpoint = switch transport {
            case .grpc: .grpc("GRPCS://127.0.0.1:\(coordinator.grpcPort)")  // the scheme in any case
            case .http: .http("https://127.0.0.1:\(coordinator.httpPort)/api/dtmsvr")
            }
            try await body(coordinator, endpoint, ca)
        }
    }

    @Test(arguments: Transport.allCases)
    func tokenAndCARunASaga(_ transport: Transport) async throws {
        try await Self.withSecureCoordinator(transport) { coordinator, endpoint, ca in
            let credentials = CoordinatorCredentials(token: Self.token, tls: ClientTLSConfig(caFile: ca.certificate))
            try await withStarted(DtmClient(endpoint, callTimeout: .seconds(60), credentials: credentials)) { client in
                let gid = try await client.newGid()
                // Steps without URLs succeed without a call: this is about the coordinator's API.
                var saga = Saga(client, gid: gid, options: TransOptions(waitResult: true))
                saga.add(action: "", compensate: "", payload: [])
                saga.add(action: "", compensate: "", payload: [])
                try await saga.submit()
                #expect(try await coordinator.store.findGlobal(gid: gid)?.status == .succeed)
            }
        }
    }

    @Test(arguments: Transport.allCases)
    func aClientWithoutTheTokenOrTheCAIsRefused(_ transport: Transport) async throws {
        try await Self.withSecureCoordinator(transport) { coordinator, endpoint, ca in
            // No token: 401 / UNAUTHENTICATED, and the saga is not stored.
            try await withStarted(DtmClient(endpoint, callTimeout: .seconds(60),
                                            credentials: CoordinatorCredentials(tls: ClientTLSConfig(caFile: ca.certificate)))) { client in
                let gid = uniqueGid("sdk-no-token")
                var saga = Saga(client, gid: gid)
                saga.add(action: "", compensate: "", payload: [])
                let error = await #expect(throws: DtmClientError.self) { try await saga.submit() }
                switch (transport, error) {
                case (.grpc, .grpc(let code, _)?): #expect(code == .unauthenticated)
                case (.http, .http(let status, _)?): #expect(status == 401)
                default: Issue.record("unexpected \(String(describing: error))")
                }
                let stored = try await coordinator.store.findGlobal(gid: gid)
                #expect(stored == nil)
            }
            // The token but not the test CA: the handshake fails before anything is sent.
            try await withStarted(DtmClient(endpoint, callTimeout: .seconds(60),
                                            credentials: CoordinatorCredentials(token: Self.token))) { client in
                let error = await #expect(throws: DtmClientError.self) { _ = try await client.newGid() }
                switch error {
                case .transport?, .grpc(.unavailable, _)?: break
                default: Issue.record("expected a TLS failure, got \(String(describing: error))")
                }
            }
            // A CA file that does not exist is a clear error, not a crash.
            try await withStarted(DtmClient(endpoint, callTimeout: .seconds(60), credentials: CoordinatorCredentials(
                token: Self.token, tls: ClientTLSConfig(caFile: "/nonexistent/ca.pem")))) { client in
                let error = await #expect(throws: DtmClientError.self) { _ = try await client.newGid() }
                #expect("\(String(describing: error))".contains("/nonexistent/ca.pem"))
            }
        }
    }
}
