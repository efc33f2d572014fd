import CSQLite
import DtmEngine
import DtmStore
import Foundation
import Testing

/// Not a test: `tools/bench-store` runs this in release with DTM_BENCH=1. It prints a raw
/// SQLite baseline measured in the same run, then the store under concurrent callers.
@Suite("StoreBenchmark", .enabled(if: ProcessInfo.processInfo.environment["DTM_BENCH"] == "1"),
       .serialized)
struct StoreBenchmark {
    /// Seconds per measurement (DTM_BENCH_SECONDS, default 3).
    let seconds = Double(ProcessInfo.processInfo.environment["DTM_BENCH_SECONDS"] ?? "") ?? 3
    /// Concurrent saveNew callers to measure (DTM_BENCH_CALLERS, comma-separated).
    let callerCounts = (ProcessInfo.processInfo.environment["DTM_BENCH_CALLERS"] ?? "1,16,256,1024")
        .split(separator: ",").compactMap { Int($0) }

    @Test func groupCommitAgainstRawSQLite() async throws {
        let perRow = try rawInserts(rowsPerCommit: 1)
        let hundred = try rawInserts(rowsPerCommit: 100)
        print("raw SQLite, WAL, synchronous=FULL, one INSERT per commit: \(perRow.rowsPerSecond) rows/s = commits/s")
        print("raw SQLite, WAL, synchronous=FULL, 100 INSERTs per commit: \(hundred.rowsPerSecond) rows/s, "
              + "\(hundred.commitsPerSecond) commits/s")

        for callers in callerCounts {
            let file = TemporaryDatabase("bench")
            defer { file.remove() }
            let store = try openSQLiteStore(file.path)
            defer { store.close() }
            let cpuBefore = processCPUSeconds()
            let run = try await measure(callers: callers) { caller, sequence in
                let gid = "bench-\(caller)-\(sequence)"
                guard try await store.saveNew(sampleGlobal(gid, status: .submitted),
                                              branches: sampleBranches(gid)) else {
                    throw StoreError.database("gid \(gid) existed")
                }
            }
            let cpu = processCPUSeconds() - cpuBefore
            let stats = store.statistics
            let sagas = Double(run.operations) / run.elapsed
            let busy = Double(stats.busy.components.seconds) + Double(stats.busy.components.attoseconds) / 1e18
            print("""
                SQLiteStore.saveNew, 2-branch saga, \(callers) callers: \(Int(sagas)) sagas/s \
                (\(Int(sagas * 3)) rows/s), \(Int(Double(stats.commits) / run.elapsed)) commits/s, \
                \(String(format: "%.1f", Double(stats.writes) / Double(max(1, stats.commits)))) writes/commit \
                (largest \(stats.largestBatch)); sagas/s ÷ raw commits/s = \
                \(String(format: "%.2f", sagas / Double(perRow.rowsPerSecond))); \
                CPU \(Int(cpu / Double(run.operations) * 1e6)) µs/saga (all threads), \
                writer busy \(Int(busy / run.elapsed * 100))% (\(Int(busy / Double(run.operations) * 1e6)) µs/saga)
                """)
        }
    }

    @Test func readsBesideWrites() async throws {
        let file = TemporaryDatabase("bench-read")
        defer { file.remove() }
        let store = try openSQLiteStore(file.path)
        defer { store.close() }
        for index in 0..<1000 {
            _ = try await store.saveNew(sampleGlobal("r\(index)"), branches: sampleBranches("r\(index)"))
        }
        let idle = try await measure(callers: 16) { caller, sequence in
            _ = try await store.findGlobal(gid: "r\((caller * 31 + sequence) % 1000)")
        }
        print("SQLiteStore.findGlobal, 16 callers, idle writer: \(Int(Double(idle.operations) / idle.elapsed)) reads/s")

        async let writes = measure(callers: 64) { caller, sequence in
            _ = try await store.saveNew(sampleGlobal("w-\(caller)-\(sequence)"), branches: sampleBranches("w"))
        }
        let busy = try await measure(callers: 16) { caller, sequence in
            _ = try await store.findGlobal(gid: "r\((caller * 31 + sequence) % 1000)")
        }
        let written = try await writes
        print("""
            SQLiteStore.findGlobal, 16 callers, beside 64 saveNew callers: \
            \(Int(Double(busy.operations) / busy.elapsed)) reads/s \
            while \(Int(Double(written.operations) / written.elapsed)) sagas/s were saved
            """)
    }

    /// Runs `operation` from `callers` concurrent tasks for `seconds`.
    private func measure(
        callers: Int, _ operation: @escaping @Sendable (Int, Int) async throws -> Void
    ) async throws -> (operations: Int, elapsed: Double) {
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int(seconds * 1000))
        let operations = try await withThrowingTaskGroup(of: Int.self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var done = 0
                    while ContinuousClock.now < deadline {
                        try await operation(caller, done)
                        done += 1
                    }
                    return done
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = ContinuousClock.now - start
        return (operations, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    /// Durable inserts straight through the C API: the fsync-bound ceiling the store is compared with.
    private func rawInserts(rowsPerCommit: Int) throws -> (rowsPerSecond: Int, commitsPerSecond: Int) {
        let file = TemporaryDatabase("bench-raw")
        defer { file.remove() }
        let raw = try RawDatabase(path: file.path, create: true)
        try raw.execute("PRAGMA journal_mode = WAL")
        try raw.execute("PRAGMA synchronous = FULL")
        try raw.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, gid TEXT NOT NULL UNIQUE, data BLOB NOT NULL)")
        let payload = [UInt8](repeating: 7, count: 200)
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int(seconds * 1000))
        var rows = 0
        var commits = 0
        while ContinuousClock.now < deadline {
            if rowsPerCommit > 1 { try raw.execute("BEGIN") }
            for _ in 0..<rowsPerCommit {
                try raw.insert("INSERT INTO t (gid, data) VALUES (?, ?)", text: "raw-\(rows)", blob: payload)
                rows += 1
            }
            if rowsPerCommit > 1 { try raw.execute("COMMIT") }
            commits += 1
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return (Int(Double(rows) / seconds), Int(Double(commits) / seconds))
    }
}

/// User + system CPU time of this process so far.
private func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
