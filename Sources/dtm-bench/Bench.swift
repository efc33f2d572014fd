import ArgumentParser
import CSQLite
import DtmEngine
import DtmGRPC
import DtmNet
import DtmProto
import DtmStore
import DtmSync
import Foundation
import Logging
import Synchronization

/// Load generator behind tools/bench-saga: serves the busi branches in process, sends 2-step
/// saga Submits over gRPC to one or several running coordinators (in turn), watches their store
/// for completions (the SQLite file, or a PostgreSQL database through psql), and measures a raw
/// durable SQLite insert loop as the baseline of the same run (or takes the script's pgbench rate).
///
/// Modes: `throughput` (closed loop, then a short paced phase: the original benchmark),
/// `paced` (open loop at a fixed rate for a bounded time), `soak` (paced, with the
/// coordinators' RSS and open fds sampled) and `recovery` (fills the store with unfinished
/// sagas, starts a coordinator on it, times until all are finished). Where the coordinators'
/// pids, metrics addresses or malloc counter files are given, each mode also prints their CPU,
/// allocator calls and store commits per completed saga over its measured window.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dtm-bench",
                                                    abstract: "Saga Submit benchmark against a running swift-dtm.")

    enum Mode: String, ExpressibleByArgument, CaseIterable {
        case throughput, paced, soak, recovery
    }

    @Option(help: "throughput | paced | soak | recovery.")
    var mode: Mode = .throughput

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

    @Option(help: "Sagas in the throughput phase (in paced and soak modes: the peak measurement before, when the rate is a fraction).")
    var sagas = 50_000

    @Option(help: "Submits in flight at once in the throughput phase.")
    var concurrency = 256

    @Option(help: "Seconds of the latency phase of the throughput mode (at half the measured Submit rate).")
    var latencySeconds = 4.0

    @Option(help: "Submits/s of the paced phase (throughput mode: default half the accepted rate).")
    var pacedRate: Double?

    @Option(help: "Paced and soak modes without --paced-rate: offer this fraction of a reference rate measured in the same run.")
    var pacedFraction: Double?

    @Option(help: "The reference of --paced-fraction: 'accepted' (peak accepted Submits/s, measured first) or 'baseline' (the baseline's commits/s).")
    var pacedOf = "accepted"

    @Option(help: "Seconds of the paced or soak phase.")
    var duration = 15.0

    @Option(help: "Soak mode: seconds between samples of RSS and open fds.")
    var sampleSeconds = 5.0

    @Flag(help: "In the latency phase call NewGid (no store, no engine) instead of Submit: separates transport latency from the rest.")
    var pacedNewGid = false

    @Option(help: "Coordinator pids (comma-separated): CPU time, RSS and open fds are read from /proc/<pid>.")
    var coordinatorPid: String?

    @Option(help: "Coordinator HTTP addresses host:port (comma-separated): store commits are read from /api/metrics.")
    var metrics: String?

    @Option(help: "Files written by tools/malloc-count.c in the coordinators (comma-separated): allocator calls.")
    var mallocCountFile: String?

    @Option(help: "Recovery mode: unfinished sagas written to the store before the coordinator starts.")
    var recoveryCount = 100_000

    @Option(help: "Recovery mode: the dtm executable to start on the filled store.")
    var dtmBinary: String?

    @Option(help: "Recovery mode: the malloc counter shim to preload into the started dtm (optional).")
    var mallocShim: String?

    @Option(help: "The C load generator (tools/loadgen.c, built by tools/bench-saga) that sends the Submits and serves the branches in its own process; without it this process does both in Swift.")
    var loadgen: String?

    @Option(help: "Connections per coordinator of the C load generator.")
    var loadgenConnections = 4

    @Option(help: "Scratch folder for the raw SQLite baseline.")
    var scratch = NSTemporaryDirectory()

    func run() async throws {
        let baseline = try baselineRate
            ?? RawSQLite.durableCommitsPerSecond(path: scratch + "/raw-baseline-\(getpid()).sqlite", seconds: 2)
        let coordinators = coordinator.split(separator: ",").map(String.init)
        guard !coordinators.isEmpty else { throw ValidationError("--coordinator names no address") }
        if loadgen != nil && pacedNewGid { throw ValidationError("--paced-new-gid needs the Swift load generator") }
        // Recovery starts its own coordinator later: the C load generator then serves branches only.
        let driver: any LoadDriver = if let loadgen {
            try CLoadDriver(binary: loadgen, coordinators: mode == .recovery ? [] : coordinators,
                            connections: loadgenConnections)
        } else {
            try await SwiftLoadDriver(coordinators: coordinators)
        }
        let run = String(UInt32.random(in: 0 ... .max), radix: 36)
        let context = Context(busiPort: driver.busiPort, run: run, baseline: baseline, driver: driver,
                              coordinators: coordinators)
        do {
            if mode == .recovery {
                try await recovery(context)
            } else {
                try await load(context)
            }
        } catch {
            await driver.shutdown()
            throw error
        }
        await driver.shutdown()
    }

    struct Context {
        var busiPort: Int
        var run: String
        var baseline: Double
        var driver: any LoadDriver
        var coordinators: [String]

        var steps: String { benchSteps(busiPort: busiPort) }
    }

    // MARK: - Throughput, paced and soak

    private func load(_ context: Context) async throws {
        let (run, baseline, driver, coordinators) = (context.run, context.baseline, context.driver, context.coordinators)
        let counter: any FinishedCounter = store.hasPrefix("postgres://") || store.hasPrefix("postgresql://")
            ? PsqlCounter(psql: psql, url: store, gidPrefix: "bench-\(run)-")
            : try RawSQLite.Counter(path: store, gidPrefix: "bench-\(run)-")
        // psql starts a process per count: poll it less often than the SQLite file.
        let poll: Duration = counter is PsqlCounter ? .milliseconds(100) : .milliseconds(20)
        let probes = try Probes(pids: coordinatorPid, metrics: metrics, mallocFiles: mallocCountFile)

        var report: [String] = []
        func line(_ label: String, _ value: Double, _ unit: String) { report.append(row(label, value, unit)) }
        report.append("mode=\(mode.rawValue) coordinators=\(coordinators.count) load generator=\(loadgen == nil ? "swift (in dtm-bench)" : "C (tools/loadgen.c)")")
        line(baselineLabel, baseline, "/s")
        /// The load generator's own CPU per completed saga (it shares the machine).
        func loadCPU(since start: Double, completed: Int) {
            guard completed > 0, let end = try? driver.cpuSeconds() else { return }
            line("load generator CPU per completed saga", (end - start) / Double(completed) * 1e6, " µs")
        }

        // Closed loop, as many Submits as the coordinator accepts: the throughput mode, and the
        // peak a paced fraction refers to.
        var acceptedRate: Double?
        let needsPeak = mode == .throughput || (pacedRate == nil && pacedOf == "accepted")
        var closedLoopSagas = 0
        if needsPeak {
            let before = try probes.snapshot()
            let loadBefore = try driver.cpuSeconds()
            let started = ContinuousClock.now
            let result = try await driver.closedLoop(sagas: sagas, concurrency: concurrency, prefix: "bench-\(run)")
            let acceptedCount = result.ok
            closedLoopSagas = acceptedCount
            var finished = 0
            while finished < acceptedCount && ContinuousClock.now - started < .seconds(120) {
                finished = try counter.finished(allOfRun: false)
                if finished < acceptedCount { try await Task.sleep(for: poll) }
            }
            let completedIn = ContinuousClock.now - started
            let after = try probes.snapshot()
            let accepted = Double(acceptedCount) / result.seconds
            acceptedRate = accepted
            let completedRate = Double(finished) / completedIn.seconds
            report.append("-- closed loop: sagas=\(sagas) concurrency=\(concurrency) failed or rejected submits=\(result.failed)")
            line("accepted Submits (durable)", accepted, "/s")
            line("completed sagas (\(finished)/\(acceptedCount) final)", completedRate, "/s")
            line("Submit latency p50 at full load", result.p50, " ms")
            line("Submit latency p99 at full load", result.p99, " ms")
            line("ratio accepted / baseline", accepted / baseline, "")
            line("ratio completed / baseline", completedRate / baseline, "")
            report += probes.perSaga(from: before, to: after, completed: finished)
            loadCPU(since: loadBefore, completed: finished)
        }

        // Open loop: Submits offered at a fixed rate, each one's latency recorded from its due time.
        let rate: Double
        if let pacedRate {
            rate = pacedRate
        } else if let fraction = pacedFraction ?? (mode == .throughput ? 0.5 : nil) {
            switch pacedOf {
            case "accepted": rate = fraction * (acceptedRate ?? 0)
            case "baseline": rate = fraction * baseline
            default: throw ValidationError("--paced-of must be 'accepted' or 'baseline'")
            }
        } else {
            throw ValidationError("paced and soak modes need --paced-rate or --paced-fraction")
        }
        guard rate > 0 else { throw ValidationError("the paced rate came out as \(rate)/s") }
        let seconds = mode == .throughput ? latencySeconds : duration
        let newGidOnly = pacedNewGid
        let count = Int(rate * seconds)
        let samples = Locked<[Sample]>([])
        let sampling = mode == .soak
        let sampleEvery = Duration.milliseconds(Int64(sampleSeconds * 1000))
        let before = try probes.snapshot()
        let loadBefore = try driver.cpuSeconds()
        let phaseStart = ContinuousClock.now
        let sampler = Task {
            guard sampling else { return }
            while !Task.isCancelled {
                if let sample = probes.sample(at: (ContinuousClock.now - phaseStart).seconds) {
                    samples.withLock { $0.append(sample) }
                }
                try? await Task.sleep(for: sampleEvery)
            }
        }
        let result: LoadResult
        if newGidOnly, let swift = driver as? SwiftLoadDriver, let first = coordinators.first {
            result = await swift.pacedNewGid(target: first, rate: rate, seconds: seconds)
        } else {
            result = try await driver.paced(rate: rate, seconds: seconds, prefix: "bench-\(run)-paced")
        }
        // Let the paced sagas finish before their branches go away.
        let total = closedLoopSagas + (newGidOnly ? 0 : result.ok)
        var finished = try counter.finished(allOfRun: true)
        while finished < total && ContinuousClock.now - phaseStart < .seconds(seconds + 60) {
            try await Task.sleep(for: poll)
            finished = try counter.finished(allOfRun: true)
        }
        let completedIn = ContinuousClock.now - phaseStart
        if sampling, let last = probes.sample(at: completedIn.seconds) { samples.withLock { $0.append(last) } }
        sampler.cancel()
        _ = await sampler.value
        let after = try probes.snapshot()

        let pacedFinished = finished - closedLoopSagas
        report.append("-- paced: \(count) \(newGidOnly ? "NewGid calls" : "Submits") offered at \(Int(rate))/s for \(String(format: "%.1f", seconds)) s, failed or rejected=\(result.failed)")
        line("offered rate", rate, "/s")
        line("offered rate / baseline", rate / baseline, "")
        line("Submits sent", Double(count) / result.seconds, "/s")
        line("Submit latency p50 (paced)", result.p50, " ms")
        line("Submit latency p90 (paced)", result.p90, " ms")
        line("Submit latency p99 (paced)", result.p99, " ms")
        line("Submit latency max (paced)", result.max, " ms")
        if !newGidOnly {
            let completedRate = Double(pacedFinished) / completedIn.seconds
            line("completed sagas (\(pacedFinished)/\(result.ok) final)", completedRate, "/s")
            line("ratio completed / baseline", completedRate / baseline, "")
            report += probes.perSaga(from: before, to: after, completed: pacedFinished)
            loadCPU(since: loadBefore, completed: pacedFinished)
        }
        if sampling { report += Sample.summary(samples.withLock { $0 }, warmUpFraction: 0.25) }
        line("busi calls", Double(try await driver.busiCalls()), "")
        print(report.joined(separator: "\n"))
    }

    // MARK: - Recovery

    /// Writes `recoveryCount` submitted 2-step sagas through the SQLite store (as a coordinator
    /// killed right after acknowledging them leaves them, with leases already expired), starts
    /// `dtm` on the file with the branches up, and times until every one is finished.
    private func recovery(_ context: Context) async throws {
        guard let dtmBinary else { throw ValidationError("recovery mode needs --dtm-binary") }
        let count = recoveryCount
        let payload = BusiReqGrpc(amount: 30).encode()
        let steps = try TransRequest.parseSteps(context.steps)
        let prefix = "bench-\(context.run)-rec-"
        do {
            var quiet = Logger(label: "dtm-bench.fill")
            quiet.logLevel = .warning
            let sqlite = try SQLiteStore(path: store, logger: quiet)
            let fillStart = ContinuousClock.now
            let now = Date()
            let next = AtomicCounter()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<256 {
                    group.addTask {
                        while true {
                            let index = next.increment()
                            guard index < count else { return }
                            let gid = prefix + String(index)
                            var global = GlobalTransaction(gid: gid, transType: .saga, status: .submitted,
                                                           transProtocol: .grpc, createTime: now)
                            global.nextCronInterval = 10
                            global.nextCronTime = now.addingTimeInterval(-1)
                            global.owner = "bench-killed-coordinator"
                            var branches: [BranchRecord] = []
                            for (number, step) in steps.enumerated() {
                                let id = number < 9 ? "0\(number + 1)" : "\(number + 1)"
                                branches.append(BranchRecord(gid: gid, url: step["compensate"] ?? "", binData: payload,
                                                             branchID: id, op: .compensate, createTime: now))
                                branches.append(BranchRecord(gid: gid, url: step["action"] ?? "", binData: payload,
                                                             branchID: id, op: .action, createTime: now))
                            }
                            _ = try await sqlite.saveNew(global, branches: branches)
                        }
                    }
                }
                try await group.waitForAll()
            }
            sqlite.close()
            let filled = ContinuousClock.now - fillStart
            print(row("filled unfinished sagas (\(count))", Double(count) / filled.seconds, "/s"))
        }

        let counter = try RawSQLite.Counter(path: store, gidPrefix: prefix)
        let grpcPort = try freePort(), httpPort = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: dtmBinary)
        process.arguments = ["--host", "127.0.0.1", "--grpc-port", "\(grpcPort)", "--http-port", "\(httpPort)",
                             "--store", store, "--log-level", "warning"]
        var environment = ProcessInfo.processInfo.environment
        let mallocFile = scratch + "/recovery-malloc-\(getpid())"
        if let mallocShim {
            environment["LD_PRELOAD"] = mallocShim
            environment["DTM_MALLOC_COUNT_FILE"] = mallocFile
        }
        process.environment = environment
        let logPath = scratch + "/recovery-dtm-\(getpid()).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = FileHandle.nullDevice
        let started = ContinuousClock.now
        try process.run()
        let pid = process.processIdentifier
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        let probes = try Probes(pids: "\(pid)", metrics: "127.0.0.1:\(httpPort)",
                                mallocFiles: mallocShim == nil ? nil : mallocFile)
        let zero = Snapshot.zero
        let deadline = Duration.seconds(max(120, Double(count) / 200))
        var finished = 0
        var peakRSS = 0
        while finished < count && ContinuousClock.now - started < deadline && process.isRunning {
            try await Task.sleep(for: .milliseconds(100))
            finished = try counter.finished(allOfRun: true)
            peakRSS = max(peakRSS, probes.sample(at: 0)?.rss ?? 0)
        }
        let took = ContinuousClock.now - started
        // Metrics need the HTTP server up: read them once at the end (from zero at start).
        let after = try probes.snapshot()
        print("recovery: \(finished) of \(count) unfinished sagas finished after the coordinator started"
              + (process.isRunning ? "" : " (the coordinator exited; see \(logPath))"))
        print(row("time until all finished (goal < 10 s)", took.seconds, " s"))
        print(row("recovered sagas", Double(finished) / took.seconds, "/s"))
        print(row("recovered / baseline", Double(finished) / took.seconds / context.baseline, ""))
        print(row("coordinator peak RSS", Double(peakRSS) / 1_048_576, " MiB"))
        print(probes.perSaga(from: zero, to: after, completed: finished).joined(separator: "\n"))
        if finished < count { throw ExitCode(1) }
    }
}

/// One report line: label, value, unit.
func row(_ label: String, _ value: Double, _ unit: String) -> String {
    label.padding(toLength: 46, withPad: " ", startingAt: 0) + String(format: "%12.2f", value) + unit
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

// MARK: - Coordinator probes

/// Cumulative counters of the coordinators at one moment; differences over a window give the
/// per-saga figures. A component is nil when its source was not given.
struct Snapshot {
    var cpuSeconds: Double?
    var allocations: UInt64?
    var frees: UInt64?
    var commits: Double?
    var writes: Double?

    static let zero = Snapshot(cpuSeconds: 0, allocations: 0, frees: 0, commits: 0, writes: 0)
}

/// RSS and open fds of the coordinators at one moment of a soak.
struct Sample {
    var seconds: Double
    var rss: Int
    var fds: Int

    /// First, last, max and least-squares slope of each series, and a verdict. Rule: the
    /// first `warmUpFraction` of the samples is warm-up; over the rest, a series is "flat"
    /// when its fitted growth across that span stays below max(8 MiB, 5% of its value at the
    /// end of warm-up) for RSS and below 3 for fds, else "growing".
    static func summary(_ samples: [Sample], warmUpFraction: Double) -> [String] {
        guard samples.count >= 3 else { return ["soak: \(samples.count) samples, too few for a verdict"] }
        let steady = Array(samples.dropFirst(Int(Double(samples.count) * warmUpFraction)))
        func slope(_ values: [(Double, Double)]) -> Double {
            let n = Double(values.count)
            let mx = values.map(\.0).reduce(0, +) / n, my = values.map(\.1).reduce(0, +) / n
            let sxx = values.map { ($0.0 - mx) * ($0.0 - mx) }.reduce(0, +)
            let sxy = values.map { ($0.0 - mx) * ($0.1 - my) }.reduce(0, +)
            return sxx == 0 ? 0 : sxy / sxx
        }
        let span = (steady.last?.seconds ?? 0) - (steady.first?.seconds ?? 0)
        let mib = 1_048_576.0
        let rssSlope = slope(steady.map { ($0.seconds, Double($0.rss) / mib) })
        let fdSlope = slope(steady.map { ($0.seconds, Double($0.fds)) })
        let rssStart = Double(steady.first?.rss ?? 0) / mib
        let rssGrowth = rssSlope * span, fdGrowth = fdSlope * span
        let rssFlat = rssGrowth < max(8, 0.05 * rssStart)
        let fdFlat = fdGrowth < 3
        func series(_ name: String, _ values: [Double], _ unit: String, _ slope: Double) -> String {
            func f(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }
            return "\(name): first \(f(values.first ?? 0))\(unit), last \(f(values.last ?? 0))\(unit), "
                + "max \(f(values.max() ?? 0))\(unit); slope \(f(slope * 60, 3))\(unit)/min after warm-up"
        }
        return [
            "soak: \(samples.count) samples over \(String(format: "%.0f", samples.last?.seconds ?? 0)) s, the first \(Int(warmUpFraction * 100))% warm-up",
            series("RSS", samples.map { Double($0.rss) / mib }, " MiB", rssSlope),
            series("open fds", samples.map { Double($0.fds) }, "", fdSlope),
            "verdict RSS: \(rssFlat ? "flat" : "growing") (fitted growth "
                + String(format: "%.1f MiB after warm-up; flat below %.1f)", rssGrowth, max(8, 0.05 * rssStart)),
            "verdict fds: \(fdFlat ? "flat" : "growing") (fitted growth "
                + String(format: "%.1f after warm-up; flat below 3)", fdGrowth),
        ]
    }
}

/// Reads the coordinators' /proc entries, their malloc counter files (tools/malloc-count.c)
/// and their `/api/metrics` (store commits).
struct Probes: Sendable {
    var pids: [Int32]
    var metrics: [(host: String, port: UInt16)]
    var mallocFiles: [String]

    init(pids: String?, metrics: String?, mallocFiles: String?) throws {
        func list(_ text: String?) -> [String] {
            (text ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        self.pids = try list(pids).map {
            guard let pid = Int32($0) else { throw ValidationError("--coordinator-pid: '\($0)' is not a pid") }
            return pid
        }
        self.metrics = try list(metrics).map {
            guard let colon = $0.lastIndex(of: ":"), let port = UInt16($0[$0.index(after: colon)...]) else {
                throw ValidationError("--metrics: '\($0)' is not host:port")
            }
            return (String($0[..<colon]), port)
        }
        self.mallocFiles = list(mallocFiles)
    }

    func snapshot() throws -> Snapshot {
        var snapshot = Snapshot()
        if !pids.isEmpty {
            snapshot.cpuSeconds = try pids.map { try Self.cpuSeconds(pid: $0) }.reduce(0, +)
        }
        if !mallocFiles.isEmpty {
            let counts = try mallocFiles.map(Self.mallocCounts)
            snapshot.allocations = counts.map(\.allocations).reduce(0, +)
            snapshot.frees = counts.map(\.frees).reduce(0, +)
        }
        if !metrics.isEmpty {
            var commits = 0.0, writes = 0.0
            for (host, port) in metrics {
                let text = try httpGet(host: host, port: port, path: "/api/metrics")
                commits += Self.metricValue(text, "dtm_store_commit_batch_size_count")
                writes += Self.metricValue(text, "dtm_store_commit_batch_size_sum")
            }
            snapshot.commits = commits
            snapshot.writes = writes
        }
        return snapshot
    }

    /// RSS and open fds summed over the coordinators; nil when a process is gone.
    func sample(at seconds: Double) -> Sample? {
        guard !pids.isEmpty else { return nil }
        var rss = 0, fds = 0
        for pid in pids {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kib = Int(line.split(separator: " ").dropFirst().first ?? ""),
                  let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else {
                return nil
            }
            rss += kib * 1024
            fds += entries.count
        }
        return Sample(seconds: seconds, rss: rss, fds: fds)
    }

    /// The per-saga lines of a window that completed `completed` sagas.
    func perSaga(from before: Snapshot, to after: Snapshot, completed: Int) -> [String] {
        guard completed > 0 else { return ["no saga completed in the window: no per-saga figures"] }
        let n = Double(completed)
        var lines: [String] = []
        if let start = before.cpuSeconds, let end = after.cpuSeconds {
            lines.append(row("coordinator CPU per completed saga", (end - start) / n * 1e6, " µs"))
        }
        if let start = before.allocations, let end = after.allocations, let freeStart = before.frees,
           let freeEnd = after.frees {
            lines.append(row("allocations per completed saga", Double(end &- start) / n, ""))
            lines.append(row("frees per completed saga", Double(freeEnd &- freeStart) / n, ""))
        }
        if let start = before.commits, let end = after.commits, let writeStart = before.writes,
           let writeEnd = after.writes {
            if end > start {
                lines.append(row("store commits per completed saga", (end - start) / n, ""))
                lines.append(row("store write requests per completed saga", (writeEnd - writeStart) / n, ""))
            } else {
                lines.append("store commits: none counted (a PostgreSQL store has no commit metric)")
            }
        }
        return lines
    }

    /// utime + stime of /proc/<pid>/stat (fields 14 and 15), in seconds.
    static func cpuSeconds(pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        guard let close = stat.lastIndex(of: ")") else { throw ValidationError("unreadable /proc/\(pid)/stat") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else {
            throw ValidationError("unreadable /proc/\(pid)/stat")
        }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// malloc + calloc + realloc + aligned calls, and frees, from the shim's shared file: the sum
    /// of its per-thread blocks (see tools/malloc-count.c for the layout).
    static func mallocCounts(_ path: String) throws -> (allocations: UInt64, frees: UInt64) {
        guard let data = FileManager.default.contents(atPath: path), data.count >= 64 else {
            throw ValidationError("malloc counter file \(path) missing or short: was the shim preloaded?")
        }
        let bytes = [UInt8](data)
        // Native (little-endian) uint64 words, as the shim writes them.
        func word(_ index: Int) -> UInt64 {
            bytes[(index * 8)..<(index * 8 + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        guard Array(bytes[0..<8]) == Array("dtmalloc".utf8) else {
            throw ValidationError("\(path) is not a malloc counter file")
        }
        let blocks = Int(word(1))
        guard blocks > 1, blocks * 64 <= bytes.count else {
            throw ValidationError("malloc counter file \(path) says \(blocks) blocks in \(bytes.count) bytes")
        }
        var allocations: UInt64 = 0
        var frees: UInt64 = 0
        for block in 1..<blocks {
            let base = block * 8  // in words: 64-byte blocks
            allocations &+= word(base + 1) &+ word(base + 2) &+ word(base + 3) &+ word(base + 4)
            frees &+= word(base + 5)
        }
        return (allocations, frees)
    }

    /// The sum of a Prometheus metric's samples (all label sets) in a text exposition.
    static func metricValue(_ text: String, _ name: String) -> Double {
        text.split(separator: "\n").reduce(0) { sum, line in
            guard line.hasPrefix(name), line.dropFirst(name.count).first.map({ $0 == " " || $0 == "{" }) == true,
                  let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { return sum }
            return sum + value
        }
    }
}

/// A blocking HTTP/1.1 GET (Connection: close) returning the body; for the metrics endpoint.
func httpGet(host: String, port: UInt16, path: String) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ValidationError("socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw ValidationError("bad IPv4 address \(host)") }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw ValidationError("connect \(host):\(port): errno \(errno)") }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8)
    var sent = 0
    while sent < request.count {
        let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { throw ValidationError("send to \(host):\(port): errno \(errno)") }
        sent += n
    }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw ValidationError("recv from \(host):\(port): errno \(errno)") }
        if n == 0 { break }
        response += buffer[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard text.hasPrefix("HTTP/1.1 200"), let body = text.range(of: "\r\n\r\n") else {
        throw ValidationError("GET \(path) from \(host):\(port): \(text.prefix(80))")
    }
    return String(text[body.upperBound...])
}

/// A free TCP port on 127.0.0.1 (bound, read, closed: the caller binds it soon after).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ValidationError("socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    guard ok else { throw ValidationError("bind: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}
