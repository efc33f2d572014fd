import DtmEngine
@testable import DtmStore
import Foundation
import Testing

/// Issue 8, item 11: a store that cannot write says so, and an episode of SQLITE_FULL or
/// SQLITE_BUSY loses nothing that was acknowledged.
@Suite("SQLite store health")
struct StoreHealthTests {
    @Test func aFullDatabaseIsReportedAndSurvived() async throws {
        try await withSQLiteStore { store, file in
            #expect(await store.health() == .healthy)
            for index in 0..<20 { #expect(try await store.saveNew(sampleGlobal("kept-\(index)"), branches: [])) }
            let pages = try RawDatabase(path: file.path).integer("PRAGMA page_count")
            try await store.runOnWriter("PRAGMA max_page_count = \(pages + 1)")

            var big = sampleGlobal("too-big")
            big.customData = String(repeating: "x", count: 64 << 10)
            let refused = await outcome { () async throws(StoreError) in try await store.saveNew(big, branches: []) }
            #expect(refused.error?.isDatabase == true, "\(refused)")
            guard case .unhealthy(let reason) = await store.health() else {
                Issue.record("a store that just failed to write reported healthy")
                return
            }
            #expect(reason.contains("full"), "\(reason)")

            try await store.runOnWriter("PRAGMA max_page_count = 1073741823")
            #expect(await store.health() == .healthy)
            #expect(try await store.saveNew(big, branches: []))
            for index in 0..<20 { #expect(try await store.findGlobal(gid: "kept-\(index)") != nil) }
        }
    }

    @Test func aLockHeldByAnotherProcessIsReportedAndSurvived() async throws {
        let file = TemporaryDatabase()
        defer { file.remove() }
        let store = try SQLiteStore(path: file.path, busyTimeout: .milliseconds(100))
        defer { store.close() }
        #expect(try await store.saveNew(sampleGlobal("acked"), branches: []))
        let other = try RawDatabase(path: file.path)
        try other.execute("BEGIN IMMEDIATE")
        let refused = await outcome { () async throws(StoreError) in
            try await store.saveNew(sampleGlobal("refused"), branches: [])
        }
        #expect(refused.error?.isDatabase == true)
        #expect(await store.health() != .healthy)
        try other.execute("COMMIT")
        #expect(await store.health() == .healthy)
        #expect(try await store.saveNew(sampleGlobal("later"), branches: []))
        #expect(try await store.findGlobal(gid: "acked") != nil)
        #expect(try await store.findGlobal(gid: "refused") == nil)
    }
}
