import AsyncHTTPClient
import DtmEngine
import DtmGRPC
import DtmNet
@testable import DtmServer
import DtmStore
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Testing

/// Engine settings that keep tests quick: retries every second, short timeouts.
let quickEngine = EngineConfig(retryInterval: 1, timeoutToFail: 3, requestTimeout: 2, transCronInterval: 1)

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

/// Runs `body` with a fresh coordinator and its HTTP API, then stops it.
func withCoordinator(store: any TransactionStore = InMemoryStore(), caller: (any BranchCaller)? = RecordingCaller(),
                     _ body: (CoordinatorServer, API) async throws -> Void) async throws {
    let coordinator = try await startCoordinator(store: store, caller: caller)
    do {
        try await body(coordinator, API(port: coordinator.httpPort))
    } catch {
        await coordinator.shutdown(gracePeriod: .milliseconds(100))
        throw error
    }
    await coordinator.shutdown(gracePeriod: .milliseconds(100))
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
    func waitFor(_ gid: String, status expected: String, timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            last = try await status(gid)
            if last == expected { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("\(gid): status '\(last)' after \(timeout), expected '\(expected)'")
    }
}

/// Polls `condition` until it holds or `timeout` passes; records an issue on timeout.
func eventually(_ what: String, timeout: Duration = .seconds(20),
                _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("timed out waiting for \(what)")
}

/// A business service for tests: a Hummingbird router on a free loopback port that
/// records every request it gets.
final class TestBusi: Sendable {
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

/// A temporary SQLite file path, removed with its WAL files by `removeDatabase`.
func temporaryDatabase() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("dtm-http-\(UUID().uuidString).sqlite").path
}

func removeDatabase(_ path: String) {
    for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
}

/// A fresh gRPC client of `coordinator`. (Its first call needs no warm-up: the client used to
/// lose the server's SETTINGS now and then and hang, fixed in DtmNet.)
func connectedGRPCClient(_ coordinator: CoordinatorServer) async -> (client: GRPCClient, target: String) {
    (GRPCClient(), "127.0.0.1:\(coordinator.grpcPort)")
}
