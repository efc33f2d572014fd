import DtmClient
import DtmClientHummingbird
import DtmEngine
import DtmGRPC
import DtmNet
import DtmServer
import DtmSync
import DtmTestSupport
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Testing

/// Engine settings that keep tests quick: retries every second; nothing times out unless asked.
let quickEngine = EngineConfig(retryInterval: 1, timeoutToFail: 600, requestTimeout: 30, transCronInterval: 1)
/// A workflow is run by its client; the coordinator resumes one still unfinished when its retry
/// interval passes, possibly while the client still runs it (DTM's at-least-once: the barrier
/// makes that harmless). Tests that count exact calls give the client 10 s, so that a loaded
/// machine does not turn them into resume tests.
let patientEngine = EngineConfig(retryInterval: 10, timeoutToFail: 600, requestTimeout: 30, transCronInterval: 1)

let testLogger: Logger = {
    var logger = Logger(label: "dtm.client.test")
    logger.logLevel = .warning
    return logger
}()

/// How the SDK talks to the coordinator, and how the coordinator calls the branches.
enum Transport: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case grpc, http
    var testDescription: String { rawValue }
}

func uniqueGid(_ label: String) -> String {
    "sdk-\(label)-\(UUID().uuidString.prefix(13).lowercased())"
}

func temporaryPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("dtm-sdk-\(name)-\(UUID().uuidString).db").path
}

/// A database path under the temporary directory whose files are deleted when the last owner
/// lets go of it (hold it beside the database that uses it, so it lives as long).
final class TemporaryDatabaseFile: Sendable {
    let path: String

    init(_ name: String) {
        path = temporaryPath(name)
    }

    deinit { removeDatabaseFiles(path) }
}

/// A transfer request for the bank's branches: protobuf for gRPC, JSON text for HTTP.
struct Transfer: Sendable {
    var amount: Int64 = 30
    var transOutResult = ""
    var transInResult = ""

    func payload(_ transport: Transport) -> [UInt8] {
        switch transport {
        case .grpc:
            BusiReqGrpc(amount: amount, transOutResult: transOutResult, transInResult: transInResult).encode()
        case .http:
            Array(#"{"amount":\#(amount),"trans_out_result":"\#(transOutResult)","trans_in_result":"\#(transInResult)"}"#.utf8)
        }
    }

    init(amount: Int64 = 30, transOutResult: String = "", transInResult: String = "") {
        self.amount = amount
        self.transOutResult = transOutResult
        self.transInResult = transInResult
    }

    init(decoding body: [UInt8], _ transport: Transport) throws {
        switch transport {
        case .grpc:
            let request = try BusiReqGrpc(decoding: body)
            self.init(amount: request.amount, transOutResult: request.transOutResult, transInResult: request.transInResult)
        case .http:
            let object = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] ?? [:]
            self.init(amount: (object["amount"] as? NSNumber)?.int64Value ?? 0,
                      transOutResult: object["trans_out_result"] as? String ?? "",
                      transInResult: object["trans_in_result"] as? String ?? "")
        }
    }
}

/// A bank branch service written with the SDK: two accounts in a SQLite file, TransOut/TransIn
/// and their compensations behind the barrier, the msg back-check, and a log of every call.
final class Bank: Sendable {
    static let methods = ["TransOut", "TransOutRevert", "TransIn", "TransInRevert", "Confirm", "QueryPrepared"]
    let database: SQLiteBarrierDatabase
    private let file: TemporaryDatabaseFile
    private let calls = Locked<[String]>([])

    init() throws {
        let file = TemporaryDatabaseFile("bank")
        self.file = file
        database = try SQLiteBarrierDatabase(path: file.path)
    }

    var databasePath: String { file.path }

    func setUp() async throws {
        try await database.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        try await database.execute("INSERT INTO account VALUES (1, 100), (2, 100)")
    }

    /// Balances of accounts 1 (pays) and 2 (receives).
    func balances() async throws -> [Int64] {
        try await database.query("SELECT balance FROM account ORDER BY id").map { $0.first?.int ?? -1 }
    }

    /// Calls received of `gid`, as "Method/op".
    func calls(_ gid: String) -> [String] {
        calls.withLock { $0.filter { $0.hasPrefix(gid + " ") }.map { String($0.dropFirst(gid.count + 1)) } }
    }

    func record(_ gid: String, _ entry: String) {
        calls.withLock { $0.append("\(gid) \(entry)") }
    }

    /// An XA branch without an XA database: the action "prepares" and registers the branch
    /// (refusing when the transfer asks TransIn to fail); commit and rollback are only recorded.
    func handleXA(_ request: BranchRequest, _ transport: Transport, client: DtmClient) async throws -> [UInt8]? {
        record(request.info.gid, "Xa/\(request.info.op)")
        if request.info.op == "action" {
            if try Transfer(decoding: request.body, transport).transInResult == "FAILURE" {
                throw DtmClientError.failure("Xa refused")
            }
            try await client.registerXABranch(request.info)
        }
        return nil
    }

    /// The business logic of one branch method, shared by the gRPC and the HTTP service.
    func handle(_ method: String, _ request: BranchRequest, _ transport: Transport) async throws -> [UInt8]? {
        calls.withLock { $0.append("\(request.info.gid) \(method)/\(request.info.op)") }
        if method == "QueryPrepared" {
            try await BranchBarrier.queryPrepared(request.info, on: database)
            return nil
        }
        let transfer = try Transfer(decoding: request.body, transport)
        let planned = method.hasPrefix("TransOut") ? transfer.transOutResult : transfer.transInResult
        if !method.hasSuffix("Revert") && method != "Confirm" {
            switch planned {
            case "FAILURE": throw DtmClientError.failure("\(method) refused: insufficient balance")
            case "ONGOING": throw DtmClientError.ongoing
            default: break
            }
        }
        let (account, sign): (Int64, Int64) = switch method {
        case "TransOut": (1, -1)
        case "TransOutRevert": (1, 1)
        case "TransIn": (2, 1)
        case "TransInRevert": (2, -1)
        default: (0, 0)
        }
        var barrier = request.barrier
        try await barrier.call(database) { transaction in
            if account != 0 {
                try transaction.execute("UPDATE account SET balance = balance + ? WHERE id = ?",
                                        [.int(sign * transfer.amount), .int(account)])
            }
        }
        return nil
    }
}

/// An in-process coordinator, the bank served over gRPC and over HTTP, and an SDK client of
/// the coordinator speaking `transport`.
struct Fixture: Sendable {
    let transport: Transport
    let coordinator: CoordinatorServer
    let client: DtmClient
    let bank: Bank
    let grpcPort: Int
    let httpPort: Int
    let workflows: Workflows

    /// A branch URL of the bank over this fixture's transport.
    func url(_ method: String) -> String {
        switch transport {
        case .grpc: "127.0.0.1:\(grpcPort)/bank.Bank/\(method)"
        case .http: "http://127.0.0.1:\(httpPort)/api/bank/\(method)"
        }
    }

    func payload(_ transfer: Transfer = Transfer()) -> [UInt8] { transfer.payload(transport) }

    /// What the coordinator stored of a global transaction (plain values, so that tests need
    /// not import the engine, whose TransOptions / TransType would shadow the SDK's).
    struct Stored: Sendable {
        var status: String
        var rollbackReason: String
        var retryLimit: Int64
        var timeoutToFail: Int64
        var branchHeaders: [String: String]
        var isFinished: Bool { status == "succeed" || status == "failed" }
    }

    func global(_ gid: String) async throws -> Stored? {
        try await coordinator.store.findGlobal(gid: gid).map {
            Stored(status: $0.status.rawValue, rollbackReason: $0.rollbackReason, retryLimit: $0.options.retryLimit,
                   timeoutToFail: $0.options.timeoutToFail, branchHeaders: $0.options.branchHeaders)
        }
    }

    func branchStatuses(_ gid: String) async throws -> [String] {
        try await coordinator.store.findBranches(gid: gid).map(\.status.rawValue)
    }

    /// Waits until `gid` is `succeed` or `failed` and returns it.
    @discardableResult
    func waitFinal(_ gid: String, timeout: Duration = .seconds(30)) async throws -> Stored {
        var last: Stored?
        try await waitUntil("\(gid) to finish (now \(last?.status ?? "missing"), bank calls \(bank.calls(gid)))",
                            timeout: timeout) {
            last = try await global(gid)
            return last?.isFinished ?? false
        }
        return try #require(last)
    }

    /// Runs `body` with a fresh coordinator, bank and client; always stops them.
    static func with(_ transport: Transport, engine: EngineConfig = quickEngine,
                     _ body: (Fixture) async throws -> Void) async throws {
        let bank = try Bank()
        // Also when a test's closures keep the bank alive (a workflow handler capturing the fixture).
        defer { removeDatabaseFiles(bank.databasePath) }
        try await bank.setUp()
        try await withStarted(try await CoordinatorServer.start(
            CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: engine),
            store: InMemoryStore(), logger: testLogger)) { coordinator in
            let endpoint: CoordinatorEndpoint = switch transport {
            case .grpc: .grpc("127.0.0.1:\(coordinator.grpcPort)")
            case .http: .http("http://127.0.0.1:\(coordinator.httpPort)/api/dtmsvr")
            }
            // Generous: wait_result submits run whole transactions, and the machine may be loaded.
            try await withStarted(DtmClient(endpoint, callTimeout: .seconds(60))) { client in
                let workflows = Workflows(client: client)
                var router = GRPCRouter()
                for method in Bank.methods {
                    router.registerBranch("/bank.Bank/\(method)") { request in
                        try await bank.handle(method, request, .grpc) ?? []
                    }
                }
                router.registerBranch("/bank.Bank/Xa") { request in
                    try await bank.handleXA(request, .grpc, client: client) ?? []
                }
                workflows.serve(on: &router)
                try await withStarted(try await GRPCServer.start(host: "127.0.0.1", port: 0, router: router,
                                                                 logger: testLogger)) { grpcServer in
                    let httpRouter = Router()
                    for method in Bank.methods {
                        httpRouter.dtmBranch(RouterPath("/api/bank/\(method)")) { request in
                            try await bank.handle(method, request, .http)
                        }
                    }
                    httpRouter.dtmBranch("/api/bank/Xa") { request in
                        try await bank.handleXA(request, .http, client: client)
                    }
                    httpRouter.dtmBranch("/api/bank/workflow/resume") { request in
                        try await workflows.resume(query: request.query, body: request.body)
                        return nil
                    }
                    try await withStarted(try await HTTPTestServer.start(httpRouter)) { httpServer in
                        workflows.callback = switch transport {
                        case .grpc: "127.0.0.1:\(grpcServer.port)/workflow.Workflow/Execute"
                        case .http: "http://127.0.0.1:\(httpServer.port)/api/bank/workflow/resume"
                        }
                        try await body(Fixture(transport: transport, coordinator: coordinator, client: client, bank: bank,
                                               grpcPort: grpcServer.port, httpPort: httpServer.port, workflows: workflows))
                    }
                }
            }
        }
    }
}

extension DtmClient: Stoppable {
    public func stop() async { await shutdown() }
}

/// A Hummingbird application on a free loopback port, serving `router` until stopped.
final class HTTPTestServer: Stoppable {
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, Never>

    private init(port: Int, group: ServiceGroup, task: Task<Void, Never>) {
        self.port = port
        self.group = group
        self.task = task
    }

    static func start(_ router: Router<BasicRequestContext>) async throws -> HTTPTestServer {
        let (ready, readiness) = AsyncStream.makeStream(of: Int?.self)
        let app = Application(router: router, configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in readiness.yield(channel.localAddress?.port) },
                              logger: testLogger)
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: testLogger))
        let task = Task {
            try? await group.run()
            readiness.yield(nil)
        }
        var iterator = ready.makeAsyncIterator()
        guard let port = await iterator.next() ?? nil else {
            await task.value
            throw DtmClientError.transport("the test HTTP server did not start")
        }
        return HTTPTestServer(port: port, group: group, task: task)
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        await task.value
    }
}
