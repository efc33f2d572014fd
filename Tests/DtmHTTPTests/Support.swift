import AsyncHTTPClient
import DtmEngine
import DtmGRPC
import DtmNet
@testable import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Testing

/// Engine settings that keep tests quick: retries every second. No transaction times out and
/// no branch call is cut off unless a test asks for it: a loaded test machine may stall any
/// request for seconds, and a tcc prepared by a test must still be prepared when it submits.
let quickEngine = EngineConfig(retryInterval: 1, timeoutToFail: 600, requestTimeout: 30, transCronInterval: 1)

/// A quiet logger for coordinators started by tests.
let testLogger: Logger = {
    var logger = Logger(label: "dtm.test")
    logger.logLevel = .warning
    return logger
}()

/// Answers every branch call with success without any network traffic, and records the calls.
actor RecordingCaller: BranchCaller {
    private(set) var calls: [BranchCall] = []
    nonisolated func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        await record(call)
        return .success
    }
    private func record(_ call: BranchCall) { calls.append(call) }
}

/// A coordinator on free loopback ports.
func startCoordinator(store: any TransactionStore = InMemoryStore(), caller: (any BranchCaller)? = RecordingCaller(),
                      engine: EngineConfig = quickEngine) async throws -> CoordinatorServer {
    try await CoordinatorServer.start(CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: engine),
                                      store: store, branchCaller: caller, logger: testLogger)
}

/// Runs `body` with a fresh coordinator (on its own store unless given one) and its HTTP API,
/// then stops it.
func withCoordinator<T>(store: any TransactionStore = InMemoryStore(), caller: (any BranchCaller)? = RecordingCaller(),
                        engine: EngineConfig = quickEngine,
                        _ body: (CoordinatorServer, API) async throws -> T) async throws -> T {
    try await withStarted(await startCoordinator(store: store, caller: caller, engine: engine)) { coordinator in
        try await body(coordinator, API(port: coordinator.httpPort))
    }
}

/// Runs `body` with a fresh gRPC client of `coordinator` and its target, then stops the client.
func withGRPCClient<T>(_ coordinator: CoordinatorServer,
                       _ body: (GRPCClient, String) async throws -> T) async throws -> T {
    try await withStarted(GRPCClient()) { client in
        try await body(client, "127.0.0.1:\(coordinator.grpcPort)")
    }
}

/// A JSON client of one coordinator's HTTP API.
struct API: Sendable {
    let port: Int

    struct Answer: Sendable, CustomStringConvertible {
        let status: Int
        let text: String
        let contentType: String
        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
        }
        var description: String { "\(status) \(text)" }
    }

    func get(_ pathAndQuery: String) async throws -> Answer { try await send(.GET, pathAndQuery) }

    func post(_ path: String, _ body: String) async throws -> Answer {
        try await send(.POST, path, body: Array(body.utf8))
    }

    func post(_ path: String, json: [String: Any]) async throws -> Answer {
        try await send(.POST, path, body: Array(try JSONSerialization.data(withJSONObject: json)))
    }

    func send(_ method: HTTPMethod, _ pathAndQuery: String, body: [UInt8]? = nil) async throws -> Answer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(pathAndQuery)")
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return Answer(status: Int(response.status.code), text: String(buffer: bytes),
                      contentType: response.headers.first(name: "Content-Type") ?? "")
    }

    /// The `transaction` object of `/query` (empty when unknown) and its branches.
    func query(_ gid: String) async throws -> (transaction: [String: Any], branches: [[String: Any]]) {
        let json = try await get("/api/dtmsvr/query?gid=\(gid)").json
        return (json["transaction"] as? [String: Any] ?? [:], json["branches"] as? [[String: Any]] ?? [])
    }

    func status(_ gid: String) async throws -> String {
        try await query(gid).transaction["status"] as? String ?? ""
    }

    /// Polls until the transaction reaches `status` (or fails the test after `timeout`).
    func waitFor(_ gid: String, status expected: String, timeout: Duration = .seconds(30)) async throws {
        var last = ""
        try await waitUntil("\(gid) to be '\(expected)' (now '\(last)')", timeout: timeout) {
            last = try await status(gid)
            return last == expected
        }
    }
}

/// A business service for tests: a Hummingbird router on a free loopback port that
/// records every request it gets.
final class TestBusi: Stoppable {
    struct Received: Sendable {
        var method: String
        var path: String
        var query: [String: String]
        var body: [UInt8]
    }

    actor Log {
        private(set) var requests: [Received] = []
        func add(_ request: Received) { requests.append(request) }
    }

    let log = Log()
    private let server: HTTPAPIServer
    var port: Int { server.port }
    func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    /// `handle` answers each request (after it is logged); the default answers SUCCESS.
    init(_ handle: @escaping @Sendable (Received) async -> (Int, String) = { _ in (200, #"{"dtm_result":"SUCCESS"}"#) })
        async throws {
        let router = Router()
        let log = self.log
        router.on("**", method: .get) { request, _ in try await Self.answer(request, log, handle) }
        router.on("**", method: .post) { request, _ in try await Self.answer(request, log, handle) }
        server = try await HTTPAPIServer.start(host: "127.0.0.1", port: 0, router: router, logger: testLogger)
    }

    private static func answer(_ request: Request, _ log: Log,
                               _ handle: @Sendable (Received) async -> (Int, String)) async throws -> Response {
        let body = try await request.body.collect(upTo: 1 << 20)
        let received = Received(method: request.method.rawValue, path: request.uri.path,
                                query: APICall.parseQuery(request.uri.query), body: Array(buffer: body))
        await log.add(received)
        let (status, text) = await handle(received)
        return Response(status: .init(code: status), headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func requests(_ path: String) async -> [Received] { await log.requests.filter { $0.path == path } }

    func stop() async { await server.shutdown(gracePeriod: .milliseconds(100)) }
}

/// A SQLite store in a temporary file, opened and closed off Swift's cooperative pool (both
/// wait for the disk). Start it with `withStarted(await SQLiteStoreForTests.open())`.
struct SQLiteStoreForTests: Stoppable {
    let path: String
    let store: SQLiteStore

    static func open() async throws -> SQLiteStoreForTests {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-http-\(UUID().uuidString).sqlite").path
        return SQLiteStoreForTests(path: path, store: try await onOwnThread { try SQLiteStore(path: path, logger: testLogger) })
    }

    /// Closes the store and removes its files.
    func stop() async {
        let (store, path) = (store, path)
        await onOwnThread {
            store.close()
            removeDatabaseFiles(path)
        }
    }
}
