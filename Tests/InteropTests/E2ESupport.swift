import DtmEngine
import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing

// Shared machinery of the end-to-end tests: the Python busi peer (gRPC + HTTP), the Python
// SDK-like client, an in-process coordinator on a temporary SQLite file, and polling helpers.

/// A fresh temporary directory.
func makeTempDir(_ prefix: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// A gid no other test (or earlier run) uses.
func uniqueGid(_ label: String) -> String {
    "e2e-\(label)-\(UUID().uuidString.prefix(13).lowercased())"
}

// MARK: - Busi peer

/// One call the busi peer received, from its JSON-lines log.
struct BusiCall: Decodable, Sendable, CustomStringConvertible {
    var t: Double
    var transport: String
    var method: String
    var gid: String
    var transType: String
    var branchId: String
    var op: String
    var dtm: String?
    var amount: Int64?
    var result: String
    var delay: Double
    var headers: [String: String]
    var httpMethod: String?
    var query: [String: String]?
    var body: String?
    /// Calls of the same method, gid, branch_id and op the busi was still running when this one
    /// arrived (e2e_busi.py): more than 0 means one branch ran twice at once.
    var overlap: Int?

    var description: String { "\(method)(\(op) \(branchId) \(result))@\(String(format: "%.3f", t))" }
    /// "Method/op/branch_id", compact for order assertions.
    var key: String { "\(method)/\(op)/\(branchId)" }
}

enum Transport: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case grpc, http
    var testDescription: String { rawValue }
}

/// The Python busi peer (e2e_busi.py): a grpcio busi.Busi server and an HTTP busi server in one
/// process, shared by all tests of the run (calls are told apart by gid). It exits when the test
/// process does (its stdin closes).
final class BusiPeer: Sendable {
    let peer: RunningPeer
    let grpcPort: Int
    let httpPort: Int
    let logURL: URL
    let controlDir: URL

    private init(peer: RunningPeer, grpcPort: Int, httpPort: Int, logURL: URL, controlDir: URL) {
        self.peer = peer
        self.grpcPort = grpcPort
        self.httpPort = httpPort
        self.logURL = logURL
        self.controlDir = controlDir
    }

    private static let holder = Holder()

    private actor Holder {
        var task: Task<BusiPeer, any Error>?
        func get() async throws -> BusiPeer {
            if let task { return try await task.value }
            let task = Task { try await BusiPeer.launch() }
            self.task = task
            return try await task.value
        }
    }

    static func shared() async throws -> BusiPeer { try await holder.get() }

    private static let started = NIOLockedValueBox<BusiPeer?>(nil)
    /// The shared peer if some test started it (for failure messages).
    static var current: BusiPeer? { started.withLockedValue { $0 } }

    private static func launch() async throws -> BusiPeer {
        let python = try Peers.require(Peers.python, "python with grpcio")
        let dir = try makeTempDir("dtm-e2e-busi")
        let logURL = dir.appendingPathComponent("calls.jsonl")
        let controlDir = dir.appendingPathComponent("control")
        // The peer outlives every test and exits with the test process (its stdin closes); it
        // removes its files then.
        let peer = try await RunningPeer.start(python, ["e2e_busi.py", "--log", logURL.path, "--control", controlDir.path,
                                                        "--remove-on-exit", dir.path])
        guard let ports = try JSONSerialization.jsonObject(with: Data(peer.firstLine.utf8)) as? [String: Int],
              let grpc = ports["grpc"], let http = ports["http"] else {
            throw PeerError.badOutput("e2e_busi.py: \(peer.firstLine)")
        }
        let busi = BusiPeer(peer: peer, grpcPort: grpc, httpPort: http, logURL: logURL, controlDir: controlDir)
        started.withLockedValue { $0 = busi }
        return busi
    }

    /// Branch URL of a busi method over `transport`.
    func url(_ method: String, _ transport: Transport) -> String {
        switch transport {
        case .grpc: "127.0.0.1:\(grpcPort)/busi.Busi/\(method)"
        case .http: "http://127.0.0.1:\(httpPort)/api/busi/\(method)"
        }
    }

    var grpcTarget: String { "127.0.0.1:\(grpcPort)" }

    /// Sets how the busi answers calls of `gid`: method → result or [results in turn];
    /// "delay" → seconds or [method: seconds]. Replaces the previous plan of that gid.
    func control(_ gid: String, _ plan: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: plan)
        try data.write(to: controlDir.appendingPathComponent("\(gid).json"), options: .atomic)
    }

    /// Every call logged so far, in arrival order (optionally only those of one gid).
    func calls(_ gid: String? = nil) -> [BusiCall] {
        guard let data = try? Data(contentsOf: logURL) else { return [] }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return data.split(separator: UInt8(ascii: "\n")).compactMap { line in
            try? decoder.decode(BusiCall.self, from: Data(line))
        }.filter { gid == nil || $0.gid == gid }
    }

    /// Calls of gids starting with `prefix`, grouped by gid.
    func calls(prefix: String) -> [String: [BusiCall]] {
        Dictionary(grouping: calls().filter { $0.gid.hasPrefix(prefix) }, by: \.gid)
    }

    /// Waits until `gid` has at least `count` calls matching `filter`; returns all calls of the gid.
    @discardableResult
    func waitForCalls(_ gid: String, count: Int = 1, timeout: Duration = .seconds(30),
                      where filter: @escaping (BusiCall) -> Bool = { _ in true }) async throws -> [BusiCall] {
        try await waitUntil("\(count) busi call(s) of \(gid): \(calls(gid))", timeout: timeout) {
            calls(gid).filter(filter).count >= count
        }
        return calls(gid)
    }
}

// MARK: - Python client

/// The outcome of one operation of e2e_client.py.
struct ClientResult: Decodable, Sendable {
    var code: String
    var details: String?
    var elapsed: Double?
    var start: Double?
    var end: Double?
    var gid: String?
    var acked: [String]?
    var refused: [[String: String]]?
}

/// Operations for e2e_client.py (a Python grpcio client doing an SDK's job).
enum Op {
    static func rpc(_ name: String, _ request: [String: Any], timeout: Double = 15) -> [String: Any] {
        ["rpc": name, "req": request, "timeout": timeout]
    }
    static func submit(_ request: [String: Any], timeout: Double = 15) -> [String: Any] { rpc("Submit", request, timeout: timeout) }
    static func prepare(_ request: [String: Any]) -> [String: Any] { rpc("Prepare", request) }
    static func abort(_ request: [String: Any]) -> [String: Any] { rpc("Abort", request) }
    static func registerBranch(_ request: [String: Any]) -> [String: Any] { rpc("RegisterBranch", request) }
    static var newGid: [String: Any] { ["rpc": "NewGid"] }
    static func raw(_ method: String, hex: String) -> [String: Any] { ["raw": "/dtmgimp.Dtm/\(method)", "hex": hex] }
    static func sleep(_ seconds: Double) -> [String: Any] { ["sleep": seconds] }
    /// A direct gRPC call of a busi method (a TCC try, an XA action), with DTM's metadata.
    static func busi(_ target: String, _ method: String, _ request: [String: Any], metadata: [String: String])
        -> [String: Any] {
        ["busi": target, "method": method, "req": request, "metadata": metadata]
    }
}

/// A branch payload: a serialised busi.ReqGrpc for gRPC branches, DTM's busi JSON for HTTP.
func busiPayload(_ transport: Transport, amount: Int = 30, transOut: String = "", transIn: String = "")
    -> [String: Any] {
    switch transport {
    case .grpc: ["busi": ["Amount": amount, "TransOutResult": transOut, "TransInResult": transIn]]
    case .http: ["json": ["amount": amount, "trans_out_Result": transOut, "trans_in_result": transIn]]
    }
}

/// A DtmRequest for a saga: step i = (action, compensate), one payload per step.
func sagaRequest(_ gid: String, steps: [(String, String)], payloads: [[String: Any]],
                 options: [String: Any]? = nil) -> [String: Any] {
    var request: [String: Any] = [
        "Gid": gid, "TransType": "saga",
        "Steps": steps.map { ["action": $0.0, "compensate": $0.1] }, "BinPayloads": payloads,
    ]
    if let options { request["TransOptions"] = options }
    return request
}

/// The usual two-step transfer saga: TransOut/TransOutRevert then TransIn/TransInRevert.
func transferSaga(_ gid: String, _ busi: BusiPeer, _ transport: Transport, transIn: String = "",
                  options: [String: Any]? = nil) -> [String: Any] {
    sagaRequest(gid, steps: [(busi.url("TransOut", transport), busi.url("TransOutRevert", transport)),
                             (busi.url("TransIn", transport), busi.url("TransInRevert", transport))],
                payloads: [busiPayload(transport, transIn: transIn), busiPayload(transport, transIn: transIn)],
                options: options)
}

/// Runs e2e_client.py against `target` and returns one result per operation.
func runClient(_ target: String, _ ops: [[String: Any]], timeout: Duration = .seconds(50)) async throws -> [ClientResult] {
    let python = try Peers.require(Peers.python, "python with grpcio")
    let json = String(decoding: try JSONSerialization.data(withJSONObject: ops), as: UTF8.self)
    let run = try await Peers.run(python, ["e2e_client.py", target, json], timeout: timeout)
    guard run.status == 0 else {
        Issue.record("e2e_client.py failed (\(run.status)): \(run.stderr)")
        throw PeerError.badOutput(run.stderr)
    }
    struct Output: Decodable { var results: [ClientResult] }
    do {
        return try JSONDecoder().decode(Output.self, from: Data(run.stdout.utf8)).results
    } catch {
        Issue.record("e2e_client.py printed \(run.stdout) / \(run.stderr)")
        throw error
    }
}

/// Reads a store file with Python's sqlite3 (db_dump.py): gid → (status, reason, branch statuses).
struct DumpedTransaction: Decodable, Sendable {
    struct Branch: Decodable, Sendable {
        var branchId: String
        var op: String
        var status: String
    }
    var transType: String
    var status: String
    var rollbackReason: String
    var branches: [Branch]
    var branchStatuses: [String] { branches.map(\.status) }
}

struct DatabaseDump: Decodable, Sendable {
    var globals: [String: DumpedTransaction]
    var orphanBranches: Int
}

func dumpDatabase(_ path: String) async throws -> DatabaseDump {
    let python = try Peers.require(Peers.python, "python")
    let run = try await Peers.run(python, ["db_dump.py", path], timeout: .seconds(20))
    guard run.status == 0 else { throw PeerError.badOutput("db_dump.py: \(run.stderr)") }
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    return try decoder.decode(DatabaseDump.self, from: Data(run.stdout.utf8))
}

// MARK: - In-process coordinator

/// A coordinator under test: in process, on a temporary SQLite file, with short intervals
/// (retry 1 s, cron every ~1 s). Timeouts are far off: a loaded machine may stall the Python
/// client or busi for seconds, and a tcc prepared by a client must still be prepared when it
/// submits, and a branch call cut off is called again, which the tests' exact call lists
/// would see. A test that wants a timeout sets the transaction's own TimeoutToFail.
struct E2ECoordinator: Stoppable {
    let server: CoordinatorServer
    let store: SQLiteStore
    let dbPath: String
    private let dir: URL
    var target: String { "127.0.0.1:\(server.grpcPort)" }

    static let engine = EngineConfig(retryInterval: 1, timeoutToFail: 600, requestTimeout: 30, transCronInterval: 1)

    static var logger: Logger {
        var logger = Logger(label: "dtm.e2e")
        // Branch errors show as warnings; DTM_E2E_LOG=debug shows more while debugging a test.
        logger.logLevel = ProcessInfo.processInfo.environment["DTM_E2E_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return logger
    }

    /// Starts a coordinator on a fresh store file.
    static func start() async throws -> E2ECoordinator {
        let dir = try makeTempDir("dtm-e2e-store")
        let dbPath = dir.appendingPathComponent("dtm.sqlite").path
        let store = try await onOwnThread { try SQLiteStore(path: dbPath, logger: logger) }
        do {
            let server = try await CoordinatorServer.start(
                CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, engine: engine), store: store, logger: logger)
            return E2ECoordinator(server: server, store: store, dbPath: dbPath, dir: dir)
        } catch {
            await onOwnThread { store.close() }
            try? FileManager.default.removeItem(at: dir)
            throw error
        }
    }

    /// Stops the coordinator and removes its files.
    func stop() async {
        await server.stop()
        let store = self.store
        await onOwnThread { store.close() }
        try? FileManager.default.removeItem(at: dir)
    }

    /// Starts a coordinator, runs `body`, then stops it and removes its files.
    static func with<T>(_ body: (E2ECoordinator) async throws -> T) async throws -> T {
        try await withStarted(await start(), body)
    }

    func global(_ gid: String) async throws -> GlobalTransaction? { try await store.findGlobal(gid: gid) }

    func branchStatuses(_ gid: String) async throws -> [String] {
        try await store.findBranches(gid: gid).map(\.status.rawValue)
    }

    /// Waits until the transaction is `succeed` or `failed` and returns it.
    @discardableResult
    func waitFinal(_ gid: String, timeout: Duration = .seconds(30)) async throws -> GlobalTransaction {
        var last: GlobalTransaction?
        try await waitUntil("\(gid) to finish (now \(last?.status.rawValue ?? "missing"); busi calls: "
                            + "\(BusiPeer.current?.calls(gid).description ?? "none"))", timeout: timeout) {
            last = try await global(gid)
            return last?.status.isFinished ?? false
        }
        return try #require(last)
    }
}

extension Array where Element == BusiCall {
    var keys: [String] { map(\.key) }
    func named(_ methods: String...) -> [BusiCall] { filter { methods.contains($0.method) } }
    func ops(_ ops: String...) -> [BusiCall] { filter { ops.contains($0.op) } }
}
