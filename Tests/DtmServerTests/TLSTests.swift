import AsyncHTTPClient
import DtmEngine
import DtmGRPC
import DtmNet
import DtmServer
import DtmTestSupport
import Foundation
import Logging
import NIOSSL
import Testing

/// The TLS pipeline in process: our gRPC client against our gRPC server on port 0, both with
/// TLS, mutual TLS, a reload, and the coordinator's JSON API over https.
@Suite struct TLSTests {
    /// A CA, a server certificate and a client certificate in a fresh directory.
    struct Certificates {
        let dir: URL
        let ca: TestCA
        let server: TestCA.Issued
        let client: TestCA.Issued

        static func make() async throws -> Certificates {
            try await onOwnThread {
                let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-tls-\(UUID().uuidString)")
                let ca = try TestCA.make(in: dir)
                return Certificates(dir: dir, ca: ca, server: try ca.issueServer("server"), client: try ca.issueClient("client"))
            }
        }

        func remove() { try? FileManager.default.removeItem(at: dir) }
    }

    static let logger = Logger(label: "dtm.tls.test")

    static func echoRouter() -> GRPCRouter {
        var router = GRPCRouter()
        router.register(service: "t.S", method: "Echo", .sync { GRPCResponse(message: $0.message) })
        return router
    }

    static func call(_ client: GRPCClient, _ port: Int, tls: Bool = true) async -> Result<[UInt8], RPCError> {
        do throws(RPCError) {
            return .success(try await client.unary(target: "127.0.0.1:\(port)", path: "/t.S/Echo", message: [7],
                                                   timeout: .seconds(30), tls: tls).message)
        } catch {
            return .failure(error)
        }
    }

    @Test func grpcClientAndServerOverTLS() async throws {
        let certs = try await Certificates.make()
        defer { certs.remove() }
        let tls = try ServerTLS(ServerTLSConfig(certificateFile: certs.server.certificate, privateKeyFile: certs.server.key,
                                                reloadInterval: nil, reloadOnSIGHUP: false), logger: Self.logger)
        try await withStarted(try await GRPCServer.start(host: "127.0.0.1", port: 0, router: Self.echoRouter(), tls: tls)) { server async throws in
            try await withStarted(GRPCClient(config: GRPCClientConfig(tls: ClientTLSConfig(caFile: certs.ca.certificate)))) { client async throws in
                #expect(try await Self.call(client, server.port).get() == [7])
                // Plaintext HTTP/2 to a TLS port fails; so does trusting only the system store.
                #expect(await Self.call(client, server.port, tls: false).error?.code == .unavailable)
            }
            try await withStarted(GRPCClient()) { client async throws in
                let error = await Self.call(client, server.port).error
                #expect(error?.code == .unavailable)
                #expect(error?.message.contains("handshake") ?? false, "\(String(describing: error))")
            }
        }
    }

    @Test func mutualTLSRefusesClientsWithoutACertificate() async throws {
        let certs = try await Certificates.make()
        defer { certs.remove() }
        let tls = try ServerTLS(ServerTLSConfig(certificateFile: certs.server.certificate, privateKeyFile: certs.server.key,
                                                clientCAFile: certs.ca.certificate, reloadInterval: nil, reloadOnSIGHUP: false),
                                logger: Self.logger)
        try await withStarted(try await GRPCServer.start(host: "127.0.0.1", port: 0, router: Self.echoRouter(), tls: tls)) { server async throws in
            try await withStarted(GRPCClient(config: GRPCClientConfig(tls: ClientTLSConfig(caFile: certs.ca.certificate)))) { client async throws in
                #expect(await Self.call(client, server.port).error?.code == .unavailable)
            }
            let identified = ClientTLSConfig(caFile: certs.ca.certificate, certificateFile: certs.client.certificate,
                                             privateKeyFile: certs.client.key)
            try await withStarted(GRPCClient(config: GRPCClientConfig(tls: identified))) { client async throws in
                #expect(try await Self.call(client, server.port).get() == [7])
            }
        }
    }

    /// A reload with a broken file keeps the certificate; one with a certificate of another CA
    /// swaps it for new connections while a pooled connection made before goes on working.
    @Test func reloadSwapsTheCertificateForNewConnectionsOnly() async throws {
        let certs = try await Certificates.make()
        defer { certs.remove() }
        let (otherCA, other) = try await onOwnThread {
            let ca = try TestCA.make(in: certs.dir.appendingPathComponent("other"), name: "other-ca")
            return (ca, try ca.issueServer("other"))
        }
        let certFile = certs.dir.appendingPathComponent("live.pem").path
        let keyFile = certs.dir.appendingPathComponent("live.key").path
        func install(_ issued: TestCA.Issued) throws {
            try Data(contentsOf: URL(fileURLWithPath: issued.key)).write(to: URL(fileURLWithPath: keyFile), options: .atomic)
            try Data(contentsOf: URL(fileURLWithPath: issued.certificate)).write(to: URL(fileURLWithPath: certFile), options: .atomic)
        }
        try install(certs.server)
        let tls = try ServerTLS(ServerTLSConfig(certificateFile: certFile, privateKeyFile: keyFile,
                                                reloadInterval: nil, reloadOnSIGHUP: false), logger: Self.logger)
        func serial() -> String {
            (tls.certificate?.serialNumber ?? []).map { String(format: "%02X", $0) }.joined()
        }
        #expect(serial() == certs.server.serial)
        try await withStarted(try await GRPCServer.start(host: "127.0.0.1", port: 0, router: Self.echoRouter(), tls: tls)) { server async throws in
            try await withStarted(GRPCClient(config: GRPCClientConfig(tls: ClientTLSConfig(caFile: certs.ca.certificate)))) { old async throws in
                #expect(try await Self.call(old, server.port).get() == [7])

                try "garbage".write(toFile: certFile, atomically: true, encoding: .utf8)
                #expect(!tls.reload())
                #expect(serial() == certs.server.serial)

                try install(other)
                #expect(tls.reload())
                #expect(serial() == other.serial)
                // The pooled connection keeps its session; a new client trusting the old CA only is
                // refused, one trusting the new CA gets in.
                #expect(try await Self.call(old, server.port).get() == [7])
                try await withStarted(GRPCClient(config: GRPCClientConfig(tls: ClientTLSConfig(caFile: certs.ca.certificate)))) { client async throws in
                    #expect(await Self.call(client, server.port).error?.code == .unavailable)
                }
                try await withStarted(GRPCClient(config: GRPCClientConfig(tls: ClientTLSConfig(caFile: otherCA.certificate)))) { client async throws in
                    #expect(try await Self.call(client, server.port).get() == [7])
                }
            }
        }
    }

    /// The coordinator with `tls` serves its JSON API over https (HTTP/1.1).
    @Test func coordinatorServesTheJSONAPIOverHTTPS() async throws {
        let certs = try await Certificates.make()
        defer { certs.remove() }
        var config = CoordinatorConfig(host: "127.0.0.1", grpcPort: 0)
        config.tls = ServerTLSConfig(certificateFile: certs.server.certificate, privateKeyFile: certs.server.key,
                                     reloadInterval: nil, reloadOnSIGHUP: false)
        try await withStarted(try await CoordinatorServer.start(config, store: InMemoryStore())) { coordinator async throws in
            var configuration = HTTPClient.Configuration()
            configuration.tlsConfiguration = try ClientTLSConfig(caFile: certs.ca.certificate).makeConfiguration()
            let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            do {
                let response = try await http.execute(HTTPClientRequest(url: "https://127.0.0.1:\(coordinator.httpPort)/api/ping"),
                                                      timeout: .seconds(30))
                #expect(response.status == .ok)
                #expect(response.version == .http1_1)
            } catch {
                Issue.record("https request failed: \(error)")
            }
            try await http.shutdown()
        }
    }
}

extension Result {
    fileprivate var error: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
