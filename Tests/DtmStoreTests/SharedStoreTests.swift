import DtmEngine
import DtmPostgres
import DtmStore
import Foundation
import Testing

/// Issue 8, item 6 and issue 9: two coordinators share one store (an SQLite file, a PostgreSQL
/// schema) under load, with branch calls that outlive the lease. No branch may ever be called by
/// both at once, and no saga action may run after its compensation started.
@Suite("Two coordinators on one store")
struct SharedStoreTests {
    @Test func leasesKeepCoordinatorsApartOnSQLite() async throws {
        let file = TemporaryDatabase()
        defer { file.remove() }
        let stores = try [openSQLiteStore(file.path), openSQLiteStore(file.path)]
        defer { stores.forEach { $0.close() } }
        try await leasesKeepCoordinatorsApart(stores) {
            try RawDatabase(path: file.path).execute("UPDATE trans_global SET owner = '', next_cron_time = 0")
        }
    }

    @Test func leasesKeepCoordinatorsApartOnPostgreSQL() async throws {
        let database = try await PostgresTestDatabase.shared()
        let schema = "shared_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased())"
        let url = database.url + "?sslmode=disable&schema=\(schema)"
        let stores = try [openPostgresStore(url), openPostgresStore(url)]
        for store in stores { #expect(await store.waitUntilReady(timeout: .seconds(60))) }
        try await leasesKeepCoordinatorsApart(stores) {
            try await database.cluster.psql("UPDATE \(schema).trans_global SET owner = '', next_cron_time = 0",
                                            database: database.name)
        }
        for store in stores { await store.close() }
        try await database.cluster.psql("DROP SCHEMA \(schema) CASCADE", database: database.name)
    }

    /// `expireLeases` makes every stored transaction due and unowned, as after a crash.
    private func leasesKeepCoordinatorsApart(_ stores: [any TransactionStore],
                                             expireLeases: () async throws -> Void) async throws {
        let ledger = CallLedger()
        // A one-second lease: calls of 1.3 s outlive it unless it is renewed.
        let config = EngineConfig(retryInterval: 1, timeoutToFail: 30, requestTimeout: 3, transCronInterval: 1)
        let drivers = zip(["A", "B"], stores).map { owner, store in
            TransactionDriver(store: store, caller: LedgerCaller(owner: owner, ledger: ledger), config: config,
                              owner: owner)
        }
        let loops = drivers.map { CronLoop(driver: $0, maxConcurrent: 8, sleep: { try? await Task.sleep(for: .seconds($0 / 10)) }) }
        // Stored by requests that never ran them (as after a crash): both loops compete for them.
        let intake = Coordinator(driver: drivers[0], schedule: { _ in })
        var gids: [String] = []
        for index in 0..<40 {
            let gid = "shared-\(index)"
            gids.append(gid)
            let slow = index % 5 == 0 ? "slow" : "fast"
            let second = index % 4 == 1 ? "fail" : "ok"
            let steps = [["action": "http://busi/\(slow)/a1", "compensate": "http://busi/\(slow)/c1"],
                         ["action": "http://busi/\(second)/a2", "compensate": "http://busi/ok/c2"]]
            try await intake.submit(TransRequest(gid: gid, transType: "saga", steps: steps, payloads: [[], []]))
        }
        try await expireLeases()

        let running = loops.map { loop in Task { await loop.run() } }
        defer { running.forEach { $0.cancel() } }
        let deadline = ContinuousClock.now + .seconds(120)
        var unfinished = gids
        while !unfinished.isEmpty && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            var still: [String] = []
            for gid in unfinished where try await stores[0].findGlobal(gid: gid)?.status.isFinished != true {
                still.append(gid)
            }
            unfinished = still
        }
        for task in running { task.cancel() }
        for task in running { await task.value }
        #expect(unfinished.isEmpty, "unfinished: \(unfinished)")

        for (index, gid) in gids.enumerated() {
            let status = try await stores[0].findGlobal(gid: gid)?.status
            #expect(status == (index % 4 == 1 ? .failed : .succeed), "\(gid)")
        }
        let violations = await ledger.violations
        #expect(violations.isEmpty, "\(violations)")
        let owners = await ledger.owners
        #expect(owners == ["A", "B"], "both coordinators should have driven transactions")
    }
}

/// Every branch call of both coordinators, with the two invariants checked as calls start.
actor CallLedger {
    private var inFlight: [String: String] = [:]  // gid → owner calling it now
    private var compensated: Set<String> = []      // gid/branch whose compensation started
    private(set) var violations: [String] = []
    private(set) var owners: Set<String> = []

    func begin(_ owner: String, _ gid: String, _ call: BranchCall) {
        owners.insert(owner)
        if let other = inFlight[gid], other != owner {
            violations.append("\(gid) \(call.branchID)/\(call.op) by \(owner) while \(other) calls it")
        }
        inFlight[gid] = owner
        let branch = "\(gid)/\(call.branchID)"
        if call.op == .compensate { compensated.insert(branch) }
        if call.op == .action && compensated.contains(branch) {
            violations.append("\(branch) action by \(owner) after its compensation")
        }
    }

    func end(_ gid: String) { inFlight[gid] = nil }
}

/// Branches by URL: `/slow/` takes 1.3 s (beyond the one-second lease), `/fail/` answers FAILURE.
struct LedgerCaller: BranchCaller {
    let owner: String
    let ledger: CallLedger

    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        await ledger.begin(owner, global.gid, call)
        if call.url.contains("/slow/") {
            try? await Task.sleep(for: .milliseconds(1300))
        } else {
            try? await Task.sleep(for: .milliseconds(5))
        }
        await ledger.end(global.gid)
        return call.url.contains("/fail/") ? .failure(message: "no money") : .success
    }
}
