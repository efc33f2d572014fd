@testable import DtmStore
import Foundation
import Testing

/// WAL checkpoints: the checkpointer thread's connection never runs a statement of its own,
/// and SQLite checkpoints nothing (yet answers OK) on a connection that has not opened the WAL.
@Suite("SQLite checkpoints")
struct CheckpointTests {
    @Test func aFreshConnectionCopiesTheWALIntoTheDatabase() throws {
        let file = TemporaryDatabase("checkpoint")
        defer { file.remove() }
        let writer = try RawDatabase(path: file.path, create: true)
        try writer.execute("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0")
        try writer.execute("CREATE TABLE t (v BLOB)")
        for _ in 0..<50 { try writer.insert("INSERT INTO t (v) VALUES (?2)", text: "", blob: [UInt8](repeating: 7, count: 3000)) }

        let before = try databaseSize(file.path)
        #expect(before < 50 * 3000, "the rows are only in the WAL: \(before) bytes")

        let checkpointer = try SQLiteConnection(path: file.path)
        let copied = try checkpointer.checkpoint()
        #expect(copied >= 50, "frames in the database file after the checkpoint: \(copied)")
        #expect(try databaseSize(file.path) > 50 * 3000)
        #expect(try writer.integer("SELECT count(*) FROM t") == 50)
    }

    private func databaseSize(_ path: String) throws -> Int {
        try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
    }

    @Test func theCheckpointerThreadKeepsTheWALShort() async throws {
        try await withSQLiteStore { store, _ throws in
            // Far more WAL frames than the step at which the writer asks the checkpointer.
            for index in 0..<600 {
                _ = try await store.saveNew(sampleGlobal("c\(index)"), branches: sampleBranches("c\(index)"))
            }
            // The checkpointer runs beside the writer: give it time on a loaded machine.
            let deadline = ContinuousClock.now + .seconds(20)
            while store.statistics.checkpointsBeside == 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(store.statistics.checkpointsBeside > 0, "\(store.statistics)")
            #expect(store.statistics.checkpointsByWriter == 0, "\(store.statistics)")
        }
    }
}
