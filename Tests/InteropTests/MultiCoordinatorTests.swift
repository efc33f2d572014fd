import DtmTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// Issue 9: several `dtm` processes on one store. crash_client.py spreads sagas, concurrent
// sagas, msgs (some left to the back-check), TCCs and XAs over all of them, step by step in turn
// (round-robin) through both the gRPC and the HTTP API, while the test kills, restarts or cuts
// off their database; then every transaction must reach its correct final state (queried through
// the coordinators that are left), and the busi's log must show no branch run twice at once and
// no saga action after its compensation.

/// Which store the coordinators of a test share.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// One SQLite file opened by every process (each write batch takes the file lock).
    case sqlite
    /// A fresh database of the test process's PostgreSQL cluster.
    case postgres

    var testDescription: String { rawValue }
}

/// A store for one test: what `dtm --store` is given, and its clean-up.
struct SharedStore: Stoppable {
    let url: String
    let database: TestDatabase?

    /// A SQLite file in `dir`, or a new database on `cluster` (the shared cluster by default).
    static func make(_ kind: StoreKind, in dir: URL, cluster: TestPostgres? = nil) async throws -> SharedStore {
        switch kind {
        case .sqlite:
            return SharedStore(url: dir.appendingPathComponent("dtm.sqlite").path, database: nil)
        case .postgres:
            let server: TestPostgres
            if let cluster { server = cluster } else { server = try await TestPostgres.shared() }
            let database = try await server.createDatabase()
            return SharedStore(url: database.url, database: database)
        }
    }

    func stop() async {
        do { try await database?.drop() } catch { Issue.record("dropping the test database: \(error)") }
    }
}

/// `dtm` processes on one store and the crash client driving them; the client's address file
/// always lists the members that serve.
final class Fleet: @unchecked Sendable {
    let binary: String
    let store: String
    let dir: URL
    private(set) var members: [DtmProcess] = []
    /// Members the test killed on purpose; every other one must still run at the end.
    private var killed: Set<ObjectIdentifier> = []
    private var launched = 0
    private var client: CrashClient?

    init(binary: String, store: String, dir: URL) {
        self.binary = binary
        self.store = store
        self.dir = dir
    }

    /// Starts `count` coordinators, one after the other (the first creates the schema).
    func start(_ count: Int) async throws {
        for _ in 0..<count { members.append(try await launch()) }
    }

    private func launch() async throws -> DtmProcess {
        launched += 1
        // timeout-to-fail 3 s: msgs left prepared are back-checked soon; request timeout 5 s:
        // well above the busi's delays, so no branch call is cut off and made again.
        return try await DtmProcess.start(binary: binary, store: store, logURL: dir.appendingPathComponent("dtm-\(launched).log"),
                                          requestTimeout: 5, timeoutToFail: 3)
    }

    func drive(_ client: CrashClient) throws {
        self.client = client
        try client.publish(members)
    }

    /// SIGKILL: the process's leases expire and the others take its work over.
    func kill(_ index: Int) async throws {
        killed.insert(ObjectIdentifier(members[index]))
        try await members[index].stop(SIGKILL)
        #expect(members[index].process.terminationReason == .uncaughtSignal)
        try client?.publish(members)
    }

    /// A clean stop (SIGTERM) and a new process on the same store, on new ports.
    func restart(_ index: Int) async throws {
        try await members[index].stop(SIGTERM)
        #expect(members[index].process.terminationStatus == 0, "\(members[index].log.suffix(2000))")
        try client?.publish(members)
        members[index] = try await launch()
        try client?.publish(members)
    }

    var serving: [DtmProcess] { members.filter(\.serving) }

    /// Checks that no member died but those the test killed, then stops them cleanly and checks
    /// they exit 0.
    func stopAll() async throws {
        for (index, member) in members.enumerated() where !killed.contains(ObjectIdentifier(member)) {
            #expect(member.process.isRunning, "coordinator \(index + 1) died: \(member.log.suffix(3000))")
        }
        for member in serving {
            try await member.stop(SIGTERM)
            #expect(member.process.terminationStatus == 0, "\(member.log.suffix(2000))")
        }
    }

    func killAll() { members.forEach { $0.killIfRunning() } }

    /// The end of each member's log, for failure messages.
    var logTails: String {
        (1...max(1, launched)).map { index in
            let text = (try? String(contentsOf: dir.appendingPathComponent("dtm-\(index).log"), encoding: .utf8)) ?? ""
            return "--- dtm-\(index).log:\n\(text.suffix(1500))"
        }.joined(separator: "\n")
    }
}

/// Reads transactions through the coordinators' HTTP API (api_dump.py), whatever the store.
func dumpThroughAPI(_ bases: [String], gids: [String], scratch: URL) async throws -> DatabaseDump {
    let python = try Peers.require(Peers.python, "python")
    let file = scratch.appendingPathComponent("gids-\(UUID().uuidString).txt")
    try Data(gids.joined(separator: "\n").utf8).write(to: file)
    defer { try? FileManager.default.removeItem(at: file) }
    let run = try await Peers.run(python, ["api_dump.py", bases.joined(separator: ","), file.path], timeout: .seconds(60))
    guard run.status == 0 else { throw PeerError.badOutput("api_dump.py: \(run.stderr)") }
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    return try decoder.decode(DatabaseDump.self, from: Data(run.stdout.utf8))
}

/// One run of load against a fleet: start it, disrupt it as the work progresses, let it settle,
/// check every transaction.
struct FleetRun {
    /// Something done to the fleet (or its database) once this share of the transactions has had
    /// branch calls.
    struct Disruption {
        var progress: Double
        var name: String
        var action: (Fleet) async throws -> Void
    }

    var label: String
    var coordinators = 3
    var transactions = 84
    var disruptions: [Disruption]
    /// Transactions started a second: the load lasts transactions / rate seconds (8 s), so each
    /// disruption, keyed on transactions started, finds the client still at work.
    static let rate = 10

    /// Transactions started before `disruption`.
    func needed(_ disruption: Disruption) -> Int { Int(Double(transactions) * disruption.progress) }

    func run(store: SharedStore, dir: URL) async throws {
        let binary = try #require(Peers.dtmBinary, "build the dtm executable first")
        let python = try Peers.require(Peers.python, "python with grpcio")
        let busi = try await BusiPeer.shared()
        let fleet = Fleet(binary: binary, store: store.url, dir: dir)
        defer { fleet.killAll() }
        try await fleet.start(coordinators)

        let prefix = uniqueGid(label)
        let client = try CrashClient(
            python: python, busi: busi, dir: dir, prefix: prefix, seed: UInt64.random(in: 1...999_999),
            arguments: ["--count", "\(transactions)", "--concurrency", "8", "--kinds", "saga,csaga,msg,msgcheck,tcc,xa",
                        "--flaky", "0.5", "--delay", "0.1", "--rate", "\(Self.rate)",
                        "--gates", disruptions.map { "\(needed($0))" }.joined(separator: ","), "--gate-dir", dir.path])
        defer { client.killIfRunning() }
        try fleet.drive(client)

        var disrupted: [String] = []
        for disruption in disruptions {
            let needed = needed(disruption)
            var underWay = 0
            try await waitUntil("\(needed) transactions started before \(disruption.name)", timeout: .seconds(120),
                                poll: .milliseconds(100)) {
                // The client writes each transaction's busi plan (its delays) as it starts it.
                underWay = (try? FileManager.default.contentsOfDirectory(atPath: busi.controlDir.path))?
                    .filter { $0.hasPrefix("\(prefix)-") }.count ?? 0
                return underWay >= needed || !client.process.isRunning
            }
            // The client waits at this disruption's gate, so the disruption hits a running load
            // (released just before it), however slow the machine.
            #expect(client.process.isRunning, "the client finished before \(disruption.name)")
            _ = FileManager.default.createFile(atPath: dir.appendingPathComponent("go-\(needed)").path, contents: nil)
            try await disruption.action(fleet)
            disrupted.append("\(disruption.name) after \(underWay) started")
        }

        let started: [HarnessTransaction]
        do {
            started = try await client.finish(timeout: .seconds(180))
        } catch {
            Issue.record("\(fleet.logTails)")
            throw error
        }
        #expect(started.count == transactions)

        // Settle: poll the transactions not yet final through the coordinators that serve.
        var unfinished = started.map(\.gid)
        do {
            try await waitUntil("every transaction final (left: \(unfinished.prefix(10)))", timeout: .seconds(120),
                                poll: .milliseconds(500)) {
                let dump = try await dumpThroughAPI(fleet.serving.map(\.httpBase), gids: unfinished, scratch: dir)
                unfinished = unfinished.filter { gid in
                    guard let status = dump.globals[gid]?.status else { return false }  // never stored: checked below
                    return status != "succeed" && status != "failed"
                }
                return unfinished.isEmpty
            }
        } catch {
            // Reported below, transaction by transaction.
        }
        let dump = try await dumpThroughAPI(fleet.serving.map(\.httpBase), gids: started.map(\.gid), scratch: dir)
        for member in fleet.serving {
            let status = await member.httpStatus("/api/ping")
            #expect(status == 200, "/api/ping of \(member.target) answered \(status.map(String.init) ?? "nothing")")
        }
        try await fleet.stopAll()

        let calls = CrashHarnessTests.calls(busi, prefix: prefix)
        var violations: [String] = []
        for transaction in started {
            let mine = calls[transaction.gid] ?? []
            var problems = CrashHarnessTests.check(transaction, stored: dump.globals[transaction.gid], calls: mine)
            let overlapping = mine.filter { ($0.overlap ?? 0) > 0 }
            if !overlapping.isEmpty { problems.append("branch called while the same call still ran: \(overlapping)") }
            for problem in problems {
                violations.append("\(transaction.gid) (\(transaction.kind) \(transaction.transport) \(transaction.plan)"
                                  + "\(transaction.flaky ? " flaky" : "")): \(problem); steps "
                                  + "\(transaction.steps.map { "\($0.name)=\($0.code)x\($0.attempts)" }); stored "
                                  + "\(dump.globals[transaction.gid].map { "\($0.status) \($0.branches.map { "\($0.branchId)/\($0.op)/\($0.status)" })" } ?? "nothing"); "
                                  + "calls \(mine)")
            }
        }
        for violation in violations.prefix(30) { Issue.record("\(violation)") }
        if !violations.isEmpty { Issue.record("\(fleet.logTails)") }
        #expect(violations.isEmpty, "\(violations.count) violation(s)")

        let stored = started.filter { dump.globals[$0.gid] != nil }
        let flaky = stored.filter(\.flaky).count
        let retried = calls.values.filter { list in list.contains { $0.result != "SUCCESS" } }.count
        // The load ran: most transactions got stored (a step answered with an error during a
        // disruption is not retried by the client, as an SDK would surface it).
        #expect(stored.count >= transactions / 2, "only \(stored.count) of \(transactions) stored")
        print("\(label): \(started.count) transactions over \(coordinators) coordinators, \(stored.count) stored and checked "
              + "(\(flaky) flaky, \(retried) with a non-final busi answer), \(calls.values.map(\.count).reduce(0, +)) busi calls, "
              + "\(disrupted.joined(separator: ", ")); \(violations.count) violation(s)")
    }
}

@Suite struct MultiCoordinatorTests {
    /// Three coordinators on one store; one is SIGKILLed a third of the way in, another stopped
    /// and started again two thirds of the way in.
    @Test(arguments: StoreKind.allCases)
    func threeCoordinatorsOneStoreSurviveKillAndRestart(_ kind: StoreKind) async throws {
        let dir = try makeTempDir("dtm-fleet")
        defer { try? FileManager.default.removeItem(at: dir) }
        try await withStarted(await SharedStore.make(kind, in: dir)) { store in
            try await FleetRun(label: "fleet-\(kind.rawValue)", disruptions: [
                .init(progress: 1.0 / 3, name: "SIGKILL of coordinator 1") { try await $0.kill(0) },
                .init(progress: 2.0 / 3, name: "restart of coordinator 2") { try await $0.restart(1) },
            ]).run(store: store, dir: dir)
        }
    }

    /// PostgreSQL dies as in a crash (`pg_ctl restart -m immediate`) under three coordinators:
    /// they reconnect and finish everything, nothing acknowledged is lost.
    @Test func postgresRestartedMidRun() async throws {
        let dir = try makeTempDir("dtm-fleet-pgrestart")
        defer { try? FileManager.default.removeItem(at: dir) }
        try await withStarted(await TestPostgres.launch()) { cluster in
            try await withStarted(await SharedStore.make(.postgres, in: dir, cluster: cluster)) { store in
                try await FleetRun(label: "fleet-pgrestart", disruptions: [
                    .init(progress: 0.4, name: "pg_ctl restart -m immediate") { fleet in
                        try await cluster.restartImmediate()
                        // Every coordinator reconnects: healthy again without a restart of its own.
                        for member in fleet.serving {
                            try await waitUntil("\(member.target) healthy after the PostgreSQL restart", timeout: .seconds(60)) {
                                await member.httpStatus("/api/ping") == 200
                            }
                        }
                    },
                ]).run(store: store, dir: dir)
            }
        }
    }

    /// `dtm --store postgres://...` started while PostgreSQL is down keeps running (retrying with
    /// back-off, logging why), answers /api/ping with 503 meanwhile, and serves once the
    /// database is up: ping 200 and a saga submitted then finishes.
    @Test func coordinatorStartedBeforePostgresServesOnceItIsUp() async throws {
        let binary = try #require(Peers.dtmBinary, "build the dtm executable first")
        let busi = try await BusiPeer.shared()
        let dir = try makeTempDir("dtm-pgdown")
        defer { try? FileManager.default.removeItem(at: dir) }
        try await withStarted(await TestPostgres.launch()) { cluster in
            let database = try await cluster.createDatabase()
            try await cluster.stopServer()
            let dtm = try await DtmProcess.start(binary: binary, store: database.url,
                                                 logURL: dir.appendingPathComponent("dtm.log"))
            defer { dtm.killIfRunning() }
            try await waitUntil("/api/ping 503 while PostgreSQL is down: \(dtm.log.suffix(2000))") {
                await dtm.httpStatus("/api/ping") == 503
            }
            #expect(dtm.process.isRunning)
            #expect(dtm.log.contains(" error ") || dtm.log.contains(" warning "),
                    "no error logged while the database is down: \(dtm.log.suffix(2000))")

            try await cluster.startServer()
            try await waitUntil("/api/ping 200 once PostgreSQL is up: \(dtm.log.suffix(2000))", timeout: .seconds(60)) {
                await dtm.httpStatus("/api/ping") == 200
            }
            let gid = uniqueGid("pgdown")
            let submitted = try await runClient(dtm.target, [Op.submit(transferSaga(gid, busi, .grpc))])
            #expect(submitted.map(\.code) == ["OK"], "\(submitted)")
            try await waitUntil("\(gid) to succeed") {
                try await dumpThroughAPI([dtm.httpBase], gids: [gid], scratch: dir).globals[gid]?.status == "succeed"
            }
            try await dtm.stop(SIGTERM)
            #expect(dtm.process.terminationStatus == 0, "\(dtm.log.suffix(2000))")
        }
    }
}
