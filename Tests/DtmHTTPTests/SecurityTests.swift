import AsyncHTTPClient
import DtmEngine
import DtmGRPC
import DtmNet
import DtmProto
@testable import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import Hummingbird
import JWTKit
import Logging
import NIOCore
import NIOHTTP1
import DtmSync
import Testing

// Issue 11 items 3-5: authentication, the branch URL fence, no secrets in logs or answers.

// MARK: - Support

/// A folder of its own for a test's token and key files, removed afterwards.
struct TempFolder: Stoppable {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-sec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func write(_ name: String, _ text: String) throws -> String {
        let path = url.appendingPathComponent(name).path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        return path
    }
    func stop() async { try? FileManager.default.removeItem(at: url) }
}

/// Every log record, rendered the way a line-per-record text log prints it.
final class CapturedLogs: Sendable {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
        /// `message key=value …` with values as given (no escaping of its own).
        var line: String { ([message] + metadata.sorted { $0.key < $1.key }.map { "\($0)=\($1)" }).joined(separator: " ") }
    }

    private let records = Locked<[Record]>([])
    var all: [Record] { records.withLock { $0 } }
    func add(_ record: Record) { records.withLock { $0.append(record) } }

    func logger(level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: "dtm.captured") { _ in CapturingHandler(sink: self) }
        logger.logLevel = level
        return logger
    }

    struct CapturingHandler: LogHandler {
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                 file: String, function: String, line: UInt) {
            let merged = self.metadata.merging(metadata ?? [:]) { $1 }
            sink.add(Record(level: level, message: message.description, metadata: merged.mapValues { "\($0)" }))
        }
    }
}

private let validToken = "tok-valid-0123456789abcdef"
private let rotatedToken = "tok-rotated-fedcba9876543210"
private let hsSecret = "an-hs256-secret-that-is-long-enough-0123456789"

/// A coordinator with `security`, on loopback free ports.
private func withSecured<T>(_ security: SecurityConfig, store: any TransactionStore = InMemoryStore(),
                            caller: (any BranchCaller)? = RecordingCaller(), logger: Logger = testLogger,
                            host: String = "127.0.0.1",
                            _ body: (CoordinatorServer) async throws -> T) async throws -> T {
    var config = CoordinatorConfig(host: host, grpcPort: 0, httpPort: 0, engine: quickEngine)
    config.security = security
    return try await withStarted(await CoordinatorServer.start(config, store: store, branchCaller: caller, logger: logger)) {
        try await body($0)
    }
}

/// One HTTP request with an optional Authorization header.
private func send(_ port: Int, _ method: HTTPMethod, _ pathAndQuery: String, body: String? = nil,
                  authorization: String? = nil) async throws -> API.Answer {
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(pathAndQuery)")
    request.method = method
    if let authorization { request.headers.add(name: "Authorization", value: authorization) }
    if let body {
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
    }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
    let bytes = try await response.body.collect(upTo: 16 << 20)
    return API.Answer(status: Int(response.status.code), text: String(buffer: bytes),
                      contentType: response.headers.first(name: "Content-Type") ?? "")
}

private func bearer(_ token: String) -> String { "Bearer \(token)" }

/// The status a refused gRPC call ended with (nil when it was served).
private func refusal(_ client: GRPCClient, _ target: String, _ method: String, _ message: [UInt8],
                     _ metadata: Metadata = Metadata()) async -> RPCError? {
    do throws(RPCError) {
        _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/\(method)", message: message, metadata: metadata,
                                   timeout: .seconds(30))
        return nil
    } catch {
        return error
    }
}

/// Every transaction and topic in the store.
private func storedEverything(_ store: any TransactionStore) async throws -> (gids: [String], topics: Int) {
    let globals = try await store.scanGlobals(GlobalQuery(limit: 1000))
    let topics = try await store.scanKV(cat: "topic", position: nil, limit: 1000)
    return (globals.map(\.gid), topics.count)
}

private func sagaBody(_ gid: String, url: String = "http://10.0.0.1/a", compensate: String? = nil,
                      headers: [String: String] = [:], wait: Bool = false) -> String {
    let object: [String: Any] = [
        "gid": gid, "trans_type": "saga", "steps": [["action": url, "compensate": compensate ?? url]], "payloads": ["{}"],
        "branch_headers": headers, "wait_result": wait,
    ]
    return String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
}

/// The claims a test signs.
private struct TestClaims: JWTPayload {
    var exp: ExpirationClaim
    var dtm_gid_prefix: String?
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

// MARK: - Authentication

@Suite struct AuthenticationTests {
    /// Every route of the API (the router's own table), with a request that would store
    /// something if it were served.
    static func httpRoutes(_ coordinator: CoordinatorServer) -> [(HTTPMethod, String, String?)] {
        let api = DtmHTTPAPI(engine: coordinator.engine,
                             admin: CoordinatorAdmin(store: coordinator.store, config: quickEngine, clock: SystemClock(),
                                                     wake: {}),
                             topics: TopicRegistry(store: coordinator.store))
        return api.routes.filter { !$0.isOpen }.map { route in
            let path = route.path.replacingOccurrences(of: ":topicName", with: "t1")
            let method = HTTPMethod(rawValue: route.method.rawValue)
            switch route.path {
            case let p where p.hasSuffix("/subscribe") || p.hasSuffix("/unsubscribe"):
                return (method, path + "?topic=t1&url=http://10.0.0.1/u&remark=r", nil)
            case let p where p.contains("egister"):
                return (method, path, #"{"gid":"auth-t","branch_id":"01","trans_type":"tcc","confirm":"http://10.0.0.1/c","cancel":"http://10.0.0.1/k"}"#)
            default:
                return (method, path + "?gid=auth-t", route.method == .post ? sagaBody("auth-t") : nil)
            }
        }
    }

    @Test func everyHTTPRouteRefusesMissingAndWrongTokensAndStoresNothing() async throws {
        try await withStarted(try TempFolder()) { folder in
            let tokens = try folder.write("tokens", "# rotation: old and new\n\n\(validToken)\n")
            try await withSecured(SecurityConfig(auth: AuthConfig(tokensFile: tokens))) { coordinator in
                let routes = Self.httpRoutes(coordinator)
                #expect(routes.count >= 19)
                for (method, path, body) in routes {
                    for authorization in [nil, bearer("wrong-token"), "Basic dXNlcjpwdw==", "Bearer", bearer(validToken + "x")] {
                        let answer = try await send(coordinator.httpPort, method, path, body: body, authorization: authorization)
                        #expect(answer.status == 401, "\(method) \(path) with \(authorization ?? "no header"): \(answer)")
                        #expect(answer.json["message"] is String, "\(answer)")
                        #expect(!answer.text.contains(validToken))
                    }
                }
                // Unknown paths too: nothing is told about the API without a token.
                #expect(try await send(coordinator.httpPort, .GET, "/api/dtmsvr/nope").status == 401)
                let stored = try await storedEverything(coordinator.store)
                #expect(stored.gids.isEmpty && stored.topics == 0, "\(stored)")

                // Open: liveness and the API description.
                #expect(try await send(coordinator.httpPort, .GET, "/api/ping").status == 200)
                #expect(try await send(coordinator.httpPort, .GET, "/api/openapi.json").status == 200)
                // The right token works, in either case of the scheme.
                let ok = try await send(coordinator.httpPort, .POST, "/api/dtmsvr/submit", body: sagaBody("auth-ok"),
                                        authorization: "bearer \(validToken)")
                #expect(ok.status == 200, "\(ok)")
                #expect(try await storedEverything(coordinator.store).gids == ["auth-ok"])
                let unknown = try await send(coordinator.httpPort, .GET, "/api/dtmsvr/nope", authorization: bearer(validToken))
                #expect(unknown.status == 404)
            }
        }
    }

    static func grpcRequest(_ method: String) -> [UInt8] {
        switch method {
        case "NewGid": return Empty().encode()
        case "RegisterBranch":
            return DtmBranchRequest(gid: "auth-g", transType: "tcc", branchID: "01",
                                    data: ["confirm": "http://10.0.0.1/c", "cancel": "http://10.0.0.1/k"]).encode()
        case "Subscribe", "Unsubscribe", "DeleteTopic":
            return DtmTopicRequest(topic: "t1", url: "http://10.0.0.1/u", remark: "r").encode()
        case "PrepareWorkflow":
            return DtmRequest(gid: "auth-g", transType: "workflow", customedData: #"{"name":"wf","data":""}"#).encode()
        default:
            return DtmRequest(gid: "auth-g", transType: method == "Submit" ? "saga" : "tcc",
                              binPayloads: method == "Submit" ? [[]] : [],
                              steps: method == "Submit" ? #"[{"action":"10.0.0.1:5/a.B/C","compensate":""}]"# : "").encode()
        }
    }

    @Test func everyGRPCMethodRefusesMissingAndWrongTokensAndStoresNothing() async throws {
        try await withStarted(try TempFolder()) { folder in
            let tokens = try folder.write("tokens", "\(validToken)\n")
            try await withSecured(SecurityConfig(auth: AuthConfig(tokensFile: tokens))) { coordinator in
                try await withGRPCClient(coordinator) { client, target in
                    for method in DtmGRPCService.methods {
                        for value in [nil, bearer("wrong-token"), validToken, "Bearer"] {
                            var metadata = Metadata()
                            if let value { metadata.add("authorization", value) }
                            let error = await refusal(client, target, method, Self.grpcRequest(method), metadata)
                            #expect(error?.code == .unauthenticated, "\(method) with \(value ?? "no metadata"): \(String(describing: error))")
                            #expect(error?.message.contains(validToken) != true)
                        }
                    }
                    let stored = try await storedEverything(coordinator.store)
                    #expect(stored.gids.isEmpty && stored.topics == 0, "\(stored)")

                    // Health stays open; the right token works.
                    _ = try await client.unary(target: target, path: "/grpc.health.v1.Health/Check",
                                               message: HealthCheckRequest().encode(), timeout: .seconds(30))
                    var metadata = Metadata()
                    metadata.add("authorization", bearer(validToken))
                    let gid = try DtmGidReply(decoding: try await client.unary(
                        target: target, path: "/dtmgimp.Dtm/NewGid", message: Empty().encode(), metadata: metadata,
                        timeout: .seconds(30)).message).gid
                    #expect(gid.count == 22)
                    _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/Submit",
                                               message: Self.grpcRequest("Submit"), metadata: metadata, timeout: .seconds(30))
                    #expect(try await storedEverything(coordinator.store).gids == ["auth-g"])
                }
            }
        }
    }

    @Test func aChangedTokensFileIsPickedUp() async throws {
        try await withStarted(try TempFolder()) { folder in
            let tokens = try folder.write("tokens", "\(validToken)\n")
            let auth = AuthConfig(tokensFile: tokens, reloadInterval: .milliseconds(10))
            try await withSecured(SecurityConfig(auth: auth)) { coordinator in
                let port = coordinator.httpPort
                #expect(try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(validToken)).status == 200)
                #expect(try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(rotatedToken)).status == 401)
                // Rotation: both for a while, then only the new one.
                _ = try folder.write("tokens", "# rotating\n\(validToken)\n\(rotatedToken)\n")
                try await waitUntil("the rotated token to be accepted") {
                    try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(rotatedToken)).status == 200
                }
                #expect(try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(validToken)).status == 200)
                _ = try folder.write("tokens", "\(rotatedToken)\n")
                try await waitUntil("the old token to be refused") {
                    try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(validToken)).status == 401
                }
                #expect(try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(rotatedToken)).status == 200)
                // A file that disappears keeps the tokens read before.
                try FileManager.default.removeItem(atPath: tokens)
                try await Task.sleep(for: .milliseconds(30))  // past reloadInterval; not a synchronisation
                #expect(try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(rotatedToken)).status == 200)
            }
        }
    }

    @Test func constantTimeComparison() {
        let stored = Array(validToken.utf8)
        #expect(Authenticator.constantTimeEquals(stored, stored))
        #expect(!Authenticator.constantTimeEquals(stored, Array((validToken + "x").utf8)))
        #expect(!Authenticator.constantTimeEquals(stored, Array(validToken.dropLast().utf8)))
        #expect(!Authenticator.constantTimeEquals(stored, []))
        #expect(!Authenticator.constantTimeEquals([], []))
    }

    /// A JWT-secured coordinator: HS256 (secret file) or RS256 (public key PEM), with signers.
    private func withJWT(_ algorithm: String, _ body: (CoordinatorServer, JWTKeyCollection, JWTKeyCollection) async throws -> Void)
        async throws {
        try await withStarted(try TempFolder()) { folder in
            var auth = AuthConfig()
            let good = JWTKeyCollection(), bad = JWTKeyCollection()
            if algorithm == "HS256" {
                auth.jwtHS256SecretFile = try folder.write("secret", hsSecret + "\n")
                await good.add(hmac: HMACKey(from: hsSecret), digestAlgorithm: .sha256)
                await bad.add(hmac: HMACKey(from: hsSecret + "-other"), digestAlgorithm: .sha256)
            } else {
                let (privatePEM, publicPEM) = try await makeRSAKeyPair(in: folder)
                auth.jwtRS256PublicKeyFile = try folder.write("public.pem", publicPEM)
                await good.add(rsa: try Insecure.RSA.PrivateKey(pem: privatePEM), digestAlgorithm: .sha256)
                let (otherPEM, _) = try await makeRSAKeyPair(in: folder)
                await bad.add(rsa: try Insecure.RSA.PrivateKey(pem: otherPEM), digestAlgorithm: .sha256)
            }
            try await withSecured(SecurityConfig(auth: auth)) { try await body($0, good, bad) }
        }
    }

    @Test(arguments: ["HS256", "RS256"])
    func jwtAcceptedExpiredAndForgedRefusedPrefixEnforced(algorithm: String) async throws {
        try await withJWT(algorithm) { coordinator, good, bad in
            let port = coordinator.httpPort
            let hour = Date().addingTimeInterval(3600)
            let plain = try await good.sign(TestClaims(exp: .init(value: hour)))
            let expired = try await good.sign(TestClaims(exp: .init(value: Date().addingTimeInterval(-60))))
            let forged = try await bad.sign(TestClaims(exp: .init(value: hour)))
            let tenant = try await good.sign(TestClaims(exp: .init(value: hour), dtm_gid_prefix: "tenant-a-"))

            #expect(try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(plain)).status == 200)
            for token in [expired, forged, plain + "x", "a.b.c"] {
                let answer = try await send(port, .GET, "/api/dtmsvr/version", authorization: bearer(token))
                #expect(answer.status == 401, "\(answer)")
            }
            // The prefix claim: NewGid answers gids with it; any other gid is refused, nothing stored.
            let newGid = try await send(port, .GET, "/api/dtmsvr/newGid", authorization: bearer(tenant))
            let gid = try #require(newGid.json["gid"] as? String)
            #expect(gid.hasPrefix("tenant-a-"))
            let outside = try await send(port, .POST, "/api/dtmsvr/submit", body: sagaBody("tenant-b-1"),
                                         authorization: bearer(tenant))
            #expect(outside.status == 403, "\(outside)")
            for path in ["/api/dtmsvr/query?gid=tenant-b-1", "/api/dtmsvr/all", "/api/dtmsvr/scanKV?cat=topic"] {
                #expect(try await send(port, .GET, path, authorization: bearer(tenant)).status == 403, "\(path)")
            }
            #expect(try await send(port, .POST, "/api/dtmsvr/submit", body: sagaBody(gid), authorization: bearer(tenant))
                .status == 200)
            #expect(try await send(port, .GET, "/api/dtmsvr/query?gid=\(gid)", authorization: bearer(tenant)).status == 200)
            #expect(try await storedEverything(coordinator.store).gids == [gid])

            try await withGRPCClient(coordinator) { client, target in
                var metadata = Metadata()
                metadata.add("authorization", bearer(tenant))
                let reply = try await client.unary(target: target, path: "/dtmgimp.Dtm/NewGid", message: Empty().encode(),
                                                   metadata: metadata, timeout: .seconds(30))
                #expect(try DtmGidReply(decoding: reply.message).gid.hasPrefix("tenant-a-"))
                for (method, message) in [("Prepare", DtmRequest(gid: "tenant-b-2", transType: "tcc").encode()),
                                          ("Subscribe", DtmTopicRequest(topic: "t", url: "http://10.0.0.1/u").encode())] {
                    let error = await refusal(client, target, method, message, metadata)
                    #expect(error?.code == .permissionDenied, "\(method): \(String(describing: error))")
                }
                var expiredMetadata = Metadata()
                expiredMetadata.add("authorization", bearer(expired))
                let error = await refusal(client, target, "NewGid", Empty().encode(), expiredMetadata)
                #expect(error?.code == .unauthenticated, "\(String(describing: error))")
            }
            #expect(try await storedEverything(coordinator.store).gids == [gid])
        }
    }

    @Test func oneWarningWhenListeningBeyondLoopbackWithoutAuthentication() async throws {
        let logs = CapturedLogs()
        try await withSecured(SecurityConfig(), logger: logs.logger(level: .info), host: "0.0.0.0") { _ in }
        #expect(logs.all.filter { $0.level == .warning && $0.message.contains("no authentication") }.count == 1)
        let quiet = CapturedLogs()
        try await withSecured(SecurityConfig(), logger: quiet.logger(level: .info)) { _ in }
        try await withStarted(try TempFolder()) { folder in
            let tokens = try folder.write("tokens", validToken)
            try await withSecured(SecurityConfig(auth: AuthConfig(tokensFile: tokens)), logger: quiet.logger(level: .info),
                                  host: "0.0.0.0") { _ in }
        }
        #expect(!quiet.all.contains { $0.message.contains("no authentication") })
    }
}

/// An RSA key pair made by openssl: (private PEM, public PEM).
private func makeRSAKeyPair(in folder: TempFolder) async throws -> (String, String) {
    let name = UUID().uuidString
    let privatePath = folder.url.appendingPathComponent("\(name).key").path
    let publicPath = folder.url.appendingPathComponent("\(name).pub").path
    for arguments in [["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", privatePath],
                      ["pkey", "-in", privatePath, "-pubout", "-out", publicPath]] {
        let status = try await onOwnThread { try spawnAndWait("/usr/bin/openssl", arguments) }
        #expect(status == 0, "openssl \(arguments)")
    }
    return (try String(contentsOfFile: privatePath, encoding: .utf8), try String(contentsOfFile: publicPath, encoding: .utf8))
}

// MARK: - Branch URL fence

@Suite struct BranchFenceTests {
    @Test func aBranchURLOutsideTheListIsRefusedAtSubmitAndNothingIsStored() async throws {
        let allow = try BranchAllowList(parsing: ["10.0.0.0/8", "busi.internal:8080"])
        try await withSecured(SecurityConfig(branchAllowList: allow)) { coordinator in
            let port = coordinator.httpPort
            let refused = try await send(port, .POST, "/api/dtmsvr/submit", body: sagaBody("fence-1", url: "http://192.168.1.1/a"))
            #expect(refused.status == 403, "\(refused)")
            let message = refused.json["message"] as? String ?? ""
            #expect(message.contains("http://192.168.1.1/a") && message.contains("10.0.0.0/8"), "\(message)")
            #expect(try await send(port, .POST, "/api/dtmsvr/prepare",
                                   body: #"{"gid":"fence-2","trans_type":"msg","query_prepared":"http://172.16.0.9/q","steps":[{"action":"http://10.0.0.2/a"}],"payloads":["{}"]}"#)
                .status == 403)
            #expect(try await send(port, .POST, "/api/dtmsvr/prepare", body: #"{"gid":"fence-3","trans_type":"tcc"}"#).status == 200)
            let branch = try await send(port, .POST, "/api/dtmsvr/registerBranch",
                                        body: #"{"gid":"fence-3","branch_id":"01","trans_type":"tcc","confirm":"http://172.16.0.1/c","cancel":"http://10.0.0.1/k"}"#)
            #expect(branch.status == 403, "\(branch)")
            try await withGRPCClient(coordinator) { client, target in
                let error = await refusal(client, target, "Submit", DtmRequest(
                    gid: "fence-4", transType: "saga", binPayloads: [[]],
                    steps: #"[{"action":"192.168.0.1:5000/a.B/C","compensate":""}]"#).encode())
                #expect(error?.code == .permissionDenied && error?.message.contains("192.168.0.1:5000") == true,
                        "\(String(describing: error))")
            }
            #expect(try await storedEverything(coordinator.store).gids == ["fence-3"])
            #expect(try await coordinator.store.findBranches(gid: "fence-3").isEmpty)
            // Inside the list: accepted.
            #expect(try await send(port, .POST, "/api/dtmsvr/submit", body: sagaBody("fence-5", url: "http://busi.internal:8080/a"))
                .status == 200)
        }
    }

    @Test func aHostNameResolvingOutsideTheListIsRefusedAtCallTime() async throws {
        let allow = try BranchAllowList(parsing: ["10.0.0.0/8"])
        let caller = RecordingCaller()
        let logs = CapturedLogs()
        try await withSecured(SecurityConfig(branchAllowList: allow), caller: caller, logger: logs.logger(level: .info)) {
            coordinator in
            // `localhost` passes at Submit (only its addresses can tell) and resolves to loopback.
            let answer = try await send(coordinator.httpPort, .POST, "/api/dtmsvr/submit",
                                        body: sagaBody("fence-dns", url: "http://localhost:8080/a"))
            #expect(answer.status == 200, "\(answer)")
            try await waitUntil("the refused call to be logged") {
                logs.all.contains { $0.message.contains("branch call failed") && ($0.metadata["error"] ?? "").contains("allow-list") }
            }
            let record = try #require(logs.all.first { $0.message.contains("branch call failed") })
            #expect(record.metadata["error"]?.contains("localhost") == true, "\(record)")
            #expect(await caller.calls.isEmpty)
            #expect(try await coordinator.store.findGlobal(gid: "fence-dns")?.status == .submitted)
        }
    }

    @Test func callTimeChecksOfSchemesAndResolvedAddresses() async throws {
        let open = FencedBranchCaller(inner: RecordingCaller(), allowList: nil)
        for url in ["http+unix://%2Ftmp%2Fdtm.sock/a", "unix:/tmp/dtm.sock/a.B/C", "file:///etc/passwd", "ftp://h/a",
                    "http://user:secret@h/a"] {
            let refusal = await open.refusal(for: url)
            #expect(refusal != nil, "\(url)")
            #expect(refusal?.contains("secret") != true)
        }
        #expect(await open.refusal(for: "http://h/a") == nil)
        #expect(await open.refusal(for: "h:1/a.B/C") == nil)
        let loopbackOnly = FencedBranchCaller(inner: RecordingCaller(), allowList: try BranchAllowList(parsing: ["127.0.0.0/8"]))
        #expect(await loopbackOnly.refusal(for: "http://localhost:9/a") == nil)
        let other = FencedBranchCaller(inner: RecordingCaller(), allowList: try BranchAllowList(parsing: ["10.9.9.9"]))
        let refusal = await other.refusal(for: "http://localhost:9/a")
        #expect(refusal?.contains("127.0.0.1") == true, "\(refusal ?? "allowed")")
    }

    @Test func aRedirectIsNotFollowed() async throws {
        try await withStarted(try await TestBusi()) { target in
            let redirector = try await RedirectingBusi(location: target.url("/stolen"))
            try await withStarted(redirector) { redirector in
                try await withSecured(SecurityConfig(), caller: nil) { coordinator in
                    let answer = try await send(coordinator.httpPort, .POST, "/api/dtmsvr/submit",
                                                body: sagaBody("redirect-1", url: "http://127.0.0.1:\(redirector.port)/a",
                                                               wait: true))
                    // The pass is over when wait_result answers: the 302 was the call's answer.
                    #expect(answer.status != 200, "\(answer)")
                    #expect(await redirector.hits() >= 1)
                    #expect(await target.requests("/stolen").isEmpty)
                }
            }
        }
    }
}

/// Answers every request with 302 to `location`, counting them.
final class RedirectingBusi: Stoppable {
    actor Counter {
        var count = 0
        func add() { count += 1 }
    }
    let counter = Counter()
    private let server: HTTPAPIServer
    var port: Int { server.port }

    init(location: String) async throws {
        let router = Router()
        let counter = self.counter
        for method in [HTTPRequest.Method.get, .post] {
            router.on("**", method: method) { _, _ in
                await counter.add()
                return Response(status: .found, headers: [.location: location])
            }
        }
        server = try await HTTPAPIServer.start(host: "127.0.0.1", port: 0, router: router, logger: testLogger)
    }

    func hits() async -> Int { await counter.count }
    func stop() async { await server.shutdown(gracePeriod: .milliseconds(100)) }
}

// MARK: - No secrets leak

@Suite struct SecretLeakTests {
    @Test func branchHeadersAndInjectedTextNeverReachTheLogsRaw() async throws {
        let secret = "s3cr3t-bearer-value-42"
        let forged = "2026-11-29T00:00:00+0000 critical dtm : forged line"
        let body = "FAILURE\n\(forged)\n" + String(repeating: "x", count: 2000)
        // /a fails the saga; /e errors once (a retried branch error is logged) and then fails it.
        let errored = Locked(false)
        try await withStarted(try await TestBusi({ request in
            let first = request.path == "/e" && errored.withLock { (seen: inout Bool) -> Bool in
                defer { seen = true }
                return !seen
            }
            if first { return (500, "oops\n\(forged)") }  // no FAILURE in it: a branch error
            return request.path == "/a" || request.path == "/e" ? (409, body) : (200, "SUCCESS")
        })) { busi in
            let logs = CapturedLogs()
            try await withSecured(SecurityConfig(), caller: nil, logger: logs.logger()) { coordinator in
                let port = coordinator.httpPort
                // Log-injection gids: refused (gRPC) or stripped of line breaks (HTTP, as DTM).
                _ = try await send(port, .POST, "/api/dtmsvr/submit", body: sagaBody("inj\n\(forged)", url: busi.url("/a")))
                try await withGRPCClient(coordinator) { client, target in
                    _ = try? await client.unary(target: target, path: "/dtmgimp.Dtm/Submit", message: DtmRequest(
                        gid: "inj\r\n\(forged)", transType: "saga").encode(), timeout: .seconds(30))
                }
                let gid = "leak-\(UUID().uuidString.prefix(8))"
                let answer = try await send(port, .POST, "/api/dtmsvr/submit",
                                            body: sagaBody(gid, url: busi.url("/a"), compensate: busi.url("/c"),
                                                           headers: ["Authorization": "Bearer \(secret)"], wait: true))
                #expect(answer.status == 409, "\(answer)")
                // Remote text is clipped in the answer and the stored rollback reason.
                #expect(answer.text.utf8.count < 600, "\(answer.text.utf8.count) bytes")
                let reason = try #require(try await coordinator.store.findGlobal(gid: gid)).rollbackReason
                #expect(reason.contains("truncated") && reason.utf8.count < 400, "\(reason)")
                // The branch got the header: it is a real secret, sent where it belongs.
                #expect(await busi.requests("/a").count >= 1)

                let retried = "leak-\(UUID().uuidString.prefix(8))"
                #expect(try await send(port, .POST, "/api/dtmsvr/submit",
                                       body: sagaBody(retried, url: busi.url("/e"), compensate: busi.url("/c"),
                                                      headers: ["Authorization": "Bearer \(secret)"])).status == 200)
                try await waitUntil("\(retried) to fail after a retried error") {
                    try await coordinator.store.findGlobal(gid: retried)?.status == .failed
                }
            }
            let records = logs.all
            #expect(records.contains { $0.message == "transaction state changed" && $0.line.contains("failed") }, "\(records.map(\.line))")
            #expect(records.contains { $0.message.contains("branch call failed") && $0.line.contains("forged") },
                    "\(records.map(\.line))")
            for record in records {
                #expect(!record.line.contains(secret), "\(record.line)")
                // One record, one line: no value can start a forged line.
                #expect(!record.line.contains("\n") && !record.line.contains("\r"), "\(record.line)")
                #expect(!record.message.contains("forged"), "\(record.message)")
            }
        }
    }

    @Test func redactQueryHidesHeaderValuesAndUserinfo() async throws {
        let secret = "s3cr3t-in-query"
        for redact in [false, true] {
            try await withSecured(SecurityConfig(redactQuery: redact)) { coordinator in
                let port = coordinator.httpPort
                let submit = try await send(port, .POST, "/api/dtmsvr/submit",
                                            body: sagaBody("redact-1", url: "http://10.0.0.1/a",
                                                           headers: ["Authorization": "Bearer \(secret)"]))
                #expect(submit.status == 200, "\(submit)")
                for path in ["/api/dtmsvr/query?gid=redact-1", "/api/dtmsvr/all", "/api/dtmsvr/all?gid=redact-1"] {
                    let answer = try await send(port, .GET, path)
                    #expect(answer.status == 200)
                    #expect(answer.text.contains(secret) == !redact, "\(path): \(answer.text)")
                    #expect(answer.text.contains("Authorization"), "\(path): header names stay")
                    if redact { #expect(answer.text.contains("[redacted]")) }
                }
            }
        }
        #expect(Redaction.url("http://user:pw@h:1/a?b=c@d") == "http://[redacted]@h:1/a?b=c@d")
        #expect(Redaction.url("http://h/a@b") == "http://h/a@b")
    }

    @Test func remoteTextIsClipped() {
        let long = String(repeating: "é", count: 300)  // 600 bytes, 2 a character
        let clipped = Redaction.clip(long)
        #expect(clipped.hasPrefix(String(repeating: "é", count: 128)) && clipped.hasSuffix("…[truncated, 600 bytes]"))
        #expect(Redaction.clip("short") == "short")
        guard case .failure(let message) = HTTPBranchCaller.result(status: 409, body: "FAILURE " + long) else {
            Issue.record("not a failure"); return
        }
        #expect(message.utf8.count < 300)
        guard case .error(let error) = HTTPBranchCaller.result(status: 500, body: long) else {
            Issue.record("not an error"); return
        }
        #expect(error.hasPrefix("HTTP 500: ") && error.contains("truncated"))
        let grpc = GRPCBranchCaller.goStyle(RPCError(.internal, long))
        #expect(grpc.contains("truncated") && grpc.utf8.count < 350)
    }
}

/// Whether lone branch calls may run in the pass's task: only when every layer ends its calls on
/// its own (`BranchCaller.endsCallsWithinTimeout`).
@Suite struct CallerBoundsTests {
    struct EndingCaller: BranchCaller {
        var endsCallsWithinTimeout: Bool { true }
        func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult { .success }
    }

    @Test func eachLayerPassesItOnOrWithdrawsIt() async throws {
        #expect(RecordingCaller().endsCallsWithinTimeout == false)
        #expect(FencedBranchCaller(inner: EndingCaller(), allowList: nil).endsCallsWithinTimeout)
        #expect(!FencedBranchCaller(inner: RecordingCaller(), allowList: nil).endsCallsWithinTimeout)
        // Resolving a host for the allow-list has no deadline.
        let listed = FencedBranchCaller(inner: EndingCaller(), allowList: try BranchAllowList(parsing: ["10.0.0.0/8"]))
        #expect(!listed.endsCallsWithinTimeout)
        let metrics = CoordinatorMetrics()
        #expect(MeteredBranchCaller(base: FencedBranchCaller(inner: EndingCaller(), allowList: nil),
                                    metrics: metrics).endsCallsWithinTimeout)
        #expect(!MeteredBranchCaller(base: listed, metrics: metrics).endsCallsWithinTimeout)
        let grpc = GRPCClient(logger: testLogger)
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        #expect(DtmBranchCaller(grpcClient: grpc, httpClient: http, logger: testLogger).endsCallsWithinTimeout)
        await grpc.shutdown()
        try await http.shutdown()
    }
}
