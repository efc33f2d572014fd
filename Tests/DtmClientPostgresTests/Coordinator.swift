import DtmEngine
import DtmServer
import DtmTestSupport
import Logging

/// An in-process coordinator for the end-to-end tests. This file alone imports the engine: its
/// TransOptions / TransType / BranchOp would clash with the SDK's in the test files.
struct TestCoordinator: Sendable {
    let server: CoordinatorServer
    var grpcTarget: String { "127.0.0.1:\(server.grpcPort)" }

    /// The stored status of `gid` (`prepared`, `submitted`, `aborting`, `succeed`, `failed`), nil if unknown.
    func status(_ gid: String) async throws -> String? {
        try await server.store.findGlobal(gid: gid)?.status.rawValue
    }

    /// The stored `branch_id/op: status` of every branch row of `gid`.
    func branches(_ gid: String) async throws -> [String] {
        try await server.store.findBranches(gid: gid).map { "\($0.branchID)/\($0.op.rawValue): \($0.status.rawValue)" }
    }

    /// Waits until `gid` is `succeed` or `failed`, and returns which.
    func waitFinal(_ gid: String) async throws -> String {
        var last: String?
        try await waitUntil("\(gid) to finish (now \(last ?? "missing"))") {
            last = try await status(gid)
            return last == "succeed" || last == "failed"
        }
        return last ?? ""
    }

    /// Runs `body` with a coordinator on free loopback ports (retries every second), always stopping it.
    static func with(_ body: (TestCoordinator) async throws -> Void) async throws {
        var logger = Logger(label: "dtm.client.postgres.test")
        logger.logLevel = .warning
        let engine = EngineConfig(retryInterval: 1, timeoutToFail: 600, requestTimeout: 30, transCronInterval: 1)
        try await withStarted(try await CoordinatorServer.start(
            CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: engine),
            store: InMemoryStore(), logger: logger)) { server in
            try await body(TestCoordinator(server: server))
        }
    }
}
