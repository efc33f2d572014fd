import ArgumentParser
import CSQLite
import DtmGRPC
import DtmNet
import DtmProto
import Foundation
import Synchronization

/// Load generator behind tools/bench-saga: serves the busi branches in process, sends 2-step
/// saga Submits over gRPC to one or several running coordinators (in turn), watches their store
/// for completions (the SQLite file, or a PostgreSQL database through psql), and measures a raw
/// durable SQLite insert loop as the baseline of the same run (or takes the script's pgbench rate).
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dtm-bench",
                                                    abstract: "Saga Submit benchmark against a running swift-dtm.")

    @Option(help: "Coordinator gRPC address; several, comma-separated, share the Submits in turn.")
    var coordinator = "127.0.0.1:36790"

    @Option(help: "The coordinators' store, to count finished sagas: a SQLite file (read-only) or a postgres:// URL (queried with psql).")
    var store: String

    @Option(help: "psql used to count finished sagas in a PostgreSQL store.")
    var psql = "psql"

    @Option(help: "Baseline rate measured by the caller (e.g. pgbench's tps); replaces the raw SQLite baseline.")
    var baselineRate: Double?

    @Option(help: "Name of the baseline in the report.")
    var baselineLabel = "raw SQLite durable commits (baseline)"

    @Option(help: "Sagas in the throughput phase.")
    var sagas = 50_000

    @Option(help: "Submits in flight at once in the throughput phase.")
    var concurrency = 256

    @Option(help: "Seconds of the latency phase (at half the measured Submit rate).")
    var latencySeconds = 4.0

    @Option(help: "Submits/s of the latency phase (default: half the measured accepted rate).")
    var pacedRate: Double?

    @Flag(help: "In the latency phase call NewGid (no store, no engine) instead of Submit: separates transport latency from the rest.")
    var pacedNewGid = false

    @Option(help: "Scratch folder for the raw SQLite baseline.")
    var scratch = NSTemporaryDirectory()

    func run() async throws {
        let baseline = try baselineRate
            ?? RawSQLite.durableCommitsPerSecond(path: scratch + "/raw-baseline-\(getpid()).sqlite", seconds: 2)
        let busiCalls = AtomicCounter()
        var router = GRPCRouter()
        for method in ["TransOut", "TransIn", "TransOutRevert", "TransInRevert"] {
            router.register(service: "busi.Busi", method: method, .sync { _ in
                busiCalls.increment()
                return GRPCResponse(message: [])
            })
        }
        let busi = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: router)
        let client = GRPCClient()
        let run = String(UInt32.random(in: 0 ... .max), radix: 36)
        let payload = BusiReqGrpc(amount: 30).encode()
        let steps = #"[{"action":"127.0.0.1:\#(busi.port)/busi.Busi/TransOut","compensate":"127.0.0.1:\#(busi.port)/busi.Busi/TransOutRevert"},{"action":"127.0.0.1:\#(busi.port)/busi.Busi/TransIn","compensate":"127.0.0.1:\#(busi.port)/busi.Busi/TransInRevert"}]"#
        let coordinators = self.coordinator.split(separator: ",").map(String.init)
        guard let coordinator = coordinators.first else { throw ValidationError("--coordinator names no address") }
        let turn = AtomicCounter()
        let submit: @Sendable (String) async throws(RPCError) -> Void = { gid in
            let request = DtmRequest(gid: gid, transType: "saga", binPayloads: [payload, payload], steps: steps)
            let target = coordinators[turn.increment() % coordinators.count]
            _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/Submit", message: request.encode(),
                                       timeout: .seconds(30))
        }
        let counter: any FinishedCounter = store.hasPrefix("postgres://") || store.hasPrefix("postgresql://")
            ? PsqlCounter(psql: psql, url: store, gidPrefix: "bench-\(run)-")
            : try RawSQLite.Counter(path: store, gidPrefix: "bench-\(run)-")
        // psql starts a process per count: poll it less often than the SQLite file.
        let poll: Duration = counter is PsqlCounter ? .milliseconds(100) : .milliseconds(20)

        // Phase 1: closed loop, as many Submits as the coordinator accepts.
        let sagas = self.sagas
        let failures = AtomicCounter()
        let next = AtomicCounter()
        let started = ContinuousClock.now
        let latencies = await withTaskGroup(of: [Duration].self) { group in
            for _ in 0..<self.concurrency {
                group.addTask {
                    var mine: [Duration] = []
                    while true {
                        let index = next.increment()
                        guard index < sagas else { return mine }
                        let callStart = ContinuousClock.now
                        do { try await submit("bench-\(run)-\(index)") } catch { failures.increment() }
                        mine.append(ContinuousClock.now - callStart)
                    }
                }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
        let acceptedIn = ContinuousClock.now - started
        var finished = 0
        while finished < sagas && ContinuousClock.now - started < .seconds(120) {
            finished = try counter.finished(allOfRun: false)
            if finished < sagas { try await Task.sleep(for: poll) }
        }
        let completedIn = ContinuousClock.now - started
        let acceptedRate = Double(sagas) / acceptedIn.seconds
        let completedRate = Double(finished) / completedIn.seconds

        // Phase 2: open loop at half the accepted rate; latency of each Submit.
        let rate = pacedRate ?? acceptedRate / 2
        let newGidOnly = pacedNewGid
        let count = Int(rate * latencySeconds)
        let paced = await withTaskGroup(of: Duration?.self) { group in
            let phaseStart = ContinuousClock.now
            for index in 0..<count {
                let due = phaseStart + .seconds(Double(index) / rate)
                if due > ContinuousClock.now { try? await Task.sleep(until: due) }
                group.addTask {
                    let callStart = ContinuousClock.now
                    do {
                        if newGidOnly {
                            _ = try await client.unary(target: coordinator, path: "/dtmgimp.Dtm/NewGid",
                                                       message: Empty().encode(), timeout: .seconds(30))
                        } else {
                            try await submit("bench-\(run)-paced-\(index)")
                        }
                    } catch { return nil }
                    return ContinuousClock.now - callStart
                }
            }
            return await group.reduce(into: [Duration]()) { if let latency = $1 { $0.append(latency) } }
        }
        // Let the paced sagas finish before their branches go away.
        let total = sagas + (newGidOnly ? 0 : count)
        let drainStart = ContinuousClock.now
        while try counter.finished(allOfRun: true) < total && ContinuousClock.now - drainStart < .seconds(60) {
            try await Task.sleep(for: poll)
        }
        await client.shutdown()
        await busi.shutdown(gracePeriod: .milliseconds(200))

        print("sagas=\(sagas) concurrency=\(concurrency) coordinators=\(coordinators.count) failed submits=\(failures.value)")
        print(row(baselineLabel, baseline, "/s"))
        print(row("accepted Submits (durable)", acceptedRate, "/s"))
        print(row("completed sagas (\(finished)/\(sagas) final)", completedRate, "/s"))
        print(row("busi calls", Double(busiCalls.value), ""))
        print(row("Submit latency p50 at full load", latencies.percentile(0.5), " ms"))
        print(row("Submit latency p99 at full load", latencies.percentile(0.99), " ms"))
        print(row("Submit latency p50 at \(Int(rate))/s", paced.percentile(0.5), " ms"))
        print(row("Submit latency p99 at \(Int(rate))/s", paced.percentile(0.99), " ms"))
        print(row("ratio accepted / baseline", acceptedRate / baseline, ""))
        print(row("ratio completed / baseline", completedRate / baseline, ""))
    }

    private func row(_ label: String, _ value: Double, _ unit: String) -> String {
        label.padding(toLength: 46, withPad: " ", startingAt: 0) + String(format: "%12.2f", value) + unit
    }
}

final class AtomicCounter: Sendable {
    private let atomic = Atomic<Int>(0)

    /// Adds one; returns the value before.
    @discardableResult
    func increment() -> Int { atomic.add(1, ordering: .relaxed).oldValue }

    var value: Int { atomic.load(ordering: .relaxed) }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

extension [Duration] {
    /// In milliseconds.
    func percentile(_ p: Double) -> Double {
        guard !isEmpty else { return .nan }
        let sorted = self.sorted()
        return sorted[Swift.min(sorted.count - 1, Int(Double(sorted.count) * p))].seconds * 1000
    }
}

/// Direct sqlite3 use for the baseline and the completion counter; each handle is closed in
/// the scope that opened it.
enum RawSQLite {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// One row per transaction, WAL, synchronous=FULL: what a coordinator that fsyncs each
    /// Submit on its own could at most do.
    static func durableCommitsPerSecond(path: String, seconds: Double) throws -> Double {
        var db: OpaquePointer?
        guard sqlite3_open(path, &db) == SQLITE_OK, let db else { throw Failure(description: "open \(path)") }
        defer {
            sqlite3_close(db)
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
        }
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     + "CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b INTEGER)", nil, nil, nil)
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, "INSERT INTO t(a, b) VALUES (?, ?)", -1, &statement, nil) == SQLITE_OK else {
            throw Failure(description: "prepare")
        }
        defer { sqlite3_finalize(statement) }
        let start = ContinuousClock.now
        var commits = 0
        while (ContinuousClock.now - start).seconds < seconds {
            sqlite3_bind_int64(statement, 1, Int64(commits))
            sqlite3_bind_int64(statement, 2, Int64(commits) * 7)
            guard sqlite3_step(statement) == SQLITE_DONE else { throw Failure(description: "insert") }
            sqlite3_reset(statement)
            commits += 1
        }
        return Double(commits) / (ContinuousClock.now - start).seconds
    }

    /// Counts finished sagas of this run in the coordinator's database.
    final class Counter: FinishedCounter {
        private var db: OpaquePointer?
        private let prefix: String

        init(path: String, gidPrefix: String) throws {
            prefix = gidPrefix
            guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, nil) == SQLITE_OK else {
                throw Failure(description: "open \(path) read-only")
            }
            sqlite3_busy_timeout(db, 1000)
        }

        deinit { sqlite3_close(db) }

        /// Finished sagas of the throughput phase, or of the whole run.
        func finished(allOfRun: Bool) throws -> Int {
            var statement: OpaquePointer?
            // Throughput-phase gids are "<prefix><number>", latency-phase ones "<prefix>paced-<number>".
            let glob = allOfRun ? prefix + "*" : prefix + "[0-9]*"
            let sql = "SELECT count(*) FROM trans_global WHERE status IN ('succeed','failed') AND gid GLOB '\(glob)'"
            guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK else {
                throw Failure(description: "prepare count: \(String(cString: sqlite3_errmsg(db)))")
            }
            defer { sqlite3_finalize(statement) }
            guard sqlite3_step(statement) == SQLITE_ROW else { return 0 }
            return Int(sqlite3_column_int64(statement, 0))
        }
    }
}

/// Finished sagas of this run in the coordinators' store.
protocol FinishedCounter {
    /// Those of the throughput phase (gids `<prefix><number>`), or of the whole run.
    func finished(allOfRun: Bool) throws -> Int
}

/// Counts finished sagas of this run in a PostgreSQL store with `psql` (the load generator
/// links no PostgreSQL client).
struct PsqlCounter: FinishedCounter {
    var psql: String
    var url: String
    var gidPrefix: String

    func finished(allOfRun: Bool) throws -> Int {
        // Throughput-phase gids are "<prefix><number>", latency-phase ones "<prefix>paced-<number>".
        let pattern = allOfRun ? "^\(gidPrefix)" : "^\(gidPrefix)[0-9]"
        let sql = "SELECT count(*) FROM trans_global WHERE status IN ('succeed','failed') AND gid ~ '\(pattern)'"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [psql, "-X", "-At", "-d", url, "-c", sql]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let count = Int(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw RawSQLite.Failure(description: "psql could not count finished sagas in \(url)")
        }
        return count
    }
}
