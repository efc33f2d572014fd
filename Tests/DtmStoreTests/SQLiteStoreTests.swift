import DtmEngine
import DtmStore
import Foundation
import Testing

/// What only the SQLite store has: a file, a schema version, group commit, several
/// processes on one file.
@Suite("SQLiteStore")
struct SQLiteStoreTests {
    @Test func dataSurvivesCloseAndReopen() async throws {
        let file = TemporaryDatabase()
        defer { file.remove() }
        let first = try openSQLiteStore(file.path)
        #expect(first.path == file.path)
        _ = try await first.saveNew(sampleGlobal("g1"), branches: sampleBranches("g1"))
        try await first.createKV(cat: "topics", key: "t", value: "[]", now: at(0))
        first.close()

        let second = try openSQLiteStore(file.path)
        defer { second.close() }
        #expect(try await second.findGlobal(gid: "g1")?.withoutID == sampleGlobal("g1"))
        #expect(try await second.findBranches(gid: "g1").map(\.withoutID) == sampleBranches("g1"))
        #expect(try await second.findKV(cat: "topics", key: "t").count == 1)
        #expect(try await second.saveNew(sampleGlobal("g1"), branches: []) == false)
    }

    @Test func migrationsRunOnceAndReopenIsANoOp() async throws {
        let file = TemporaryDatabase()
        defer { file.remove() }
        for round in 0..<3 {
            let store = try openSQLiteStore(file.path)
            #expect(try await store.saveNew(sampleGlobal("g\(round)"), branches: []))
            store.close()
            #expect(try RawDatabase(path: file.path).integer("PRAGMA user_version") == 3)
        }
        let raw = try RawDatabase(path: file.path)
        #expect(try raw.integer("SELECT count(*) FROM trans_global") == 3)
        #expect(try raw.integer("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'kv'") == 1)
        #expect(try raw.text("PRAGMA journal_mode") == "wal")
    }

    @Test func refusesASchemaNewerThanItKnows() throws {
        let file = TemporaryDatabase()
        defer { file.remove() }
        try openSQLiteStore(file.path).close()
        try RawDatabase(path: file.path).execute("PRAGMA user_version = 99")
        #expect(throws: StoreError.self) { try openSQLiteStore(file.path) }
    }

    @Test func unusablePathIsADatabaseError() {
        #expect {
            try openSQLiteStore("/nonexistent-dir/\(UUID().uuidString)/x.sqlite")
        } throws: { error in
            (error as? StoreError)?.isDatabase == true
        }
    }

    @Test func callsAfterCloseFail() async throws {
        try await withSQLiteStore { store, _ throws in
            store.close()
            store.close()
            let write = await outcome { () async throws(StoreError) in
                try await store.saveNew(sampleGlobal("g1"), branches: [])
            }
            #expect(write.error?.isDatabase == true)
            let read = await outcome { () async throws(StoreError) in try await store.findGlobal(gid: "g1") }
            #expect(read.error?.isDatabase == true)
        }
    }

    @Test func groupCommitSharesCommitsAmongConcurrentWrites() async throws {
        try await withSQLiteStore { store, _ throws in
            let writes = 2000
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<writes {
                    group.addTask {
                        try await store.saveNew(sampleGlobal("g\(index)"), branches: sampleBranches("g\(index)"))
                    }
                }
                for try await saved in group { #expect(saved) }
            }
            let stats = store.statistics
            #expect(stats.writes == writes)
            #expect(stats.commits < writes / 4, "commits: \(stats.commits)")
            #expect(stats.largestBatch > 1)
            #expect(try await store.scanGlobals(GlobalQuery(limit: writes + 1)).count == writes)
            for index in [0, 999, 1999] {
                #expect(try await store.findBranches(gid: "g\(index)").count == 2)
            }
        }
    }

    @Test func failingRequestsInABatchDoNotDisturbTheOthers() async throws {
        try await withSQLiteStore { store, _ throws in
            _ = try await store.saveNew(sampleGlobal("existing", status: .submitted), branches: sampleBranches("existing"))
            let existing = try await store.findBranches(gid: "existing")
            let existingGlobal = try #require(try await store.findGlobal(gid: "existing"))

            enum Expected: Sendable { case saved, exists, notFound, conflict }
            let results = await withTaskGroup(of: (Expected, Result<Bool, StoreError>).self) { group in
                for index in 0..<1200 {
                    group.addTask {
                        switch index % 4 {
                        case 0:
                            return (.saved, await outcome { () async throws(StoreError) in
                                try await store.saveNew(sampleGlobal("new\(index)"), branches: sampleBranches("new\(index)"))
                            })
                        case 1:
                            return (.exists, await outcome { () async throws(StoreError) in
                                try await store.saveNew(sampleGlobal("existing"), branches: [])
                            })
                        case 2:
                            return (.notFound, await outcome { () async throws(StoreError) in
                                try await store.changeStatus(gid: "existing", from: .prepared, to: .failed,
                                                             update: GlobalUpdate(), now: at(1))
                                return true
                            })
                        default:
                            return (.conflict, await outcome { () async throws(StoreError) in
                                try await store.appendBranches(
                                    gid: "existing", expecting: .submitted,
                                    branches: sampleBranches("existing", count: 1, op: .compensate)
                                        + sampleBranches("existing", count: 1), now: at(1))
                                return true
                            })
                        }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            for (expected, result) in results {
                switch expected {
                case .saved: #expect((try? result.get()) == true)
                case .exists: #expect((try? result.get()) == false)
                case .notFound: #expect(result.error?.isNotFound == true)
                case .conflict: #expect(result.error?.isUniqueConflict == true)
                }
            }
            #expect(store.statistics.largestBatch > 1)
            #expect(try await store.scanGlobals(GlobalQuery(limit: 2000)).count == 301)
            #expect(try await store.findGlobal(gid: "existing")?.status == .submitted)
            #expect(try await store.findBranches(gid: "existing") == existing)
            // The conflicting appendBranches touched update_time before its insert failed: undone too.
            #expect(try await store.findGlobal(gid: "existing")?.updateTime == existingGlobal.updateTime)
            #expect(try await store.findBranches(gid: "new0").map(\.withoutID) == sampleBranches("new0"))
        }
    }

    @Test func readsOnCallersThreadsSeeEveryAnsweredWrite() async throws {
        try await withSQLiteStore { store, _ throws in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<300 {
                    group.addTask {
                        let gid = "read\(index)"
                        #expect(try await store.findGlobal(gid: gid) == nil)
                        #expect(try await store.saveNew(sampleGlobal(gid), branches: sampleBranches(gid)))
                        #expect(try await store.findGlobal(gid: gid)?.gid == gid)
                        #expect(try await store.findBranches(gid: gid).map(\.withoutID) == sampleBranches(gid))
                        try await store.changeStatus(gid: gid, from: .prepared, to: .submitted,
                                                     update: GlobalUpdate(), now: at(2))
                        #expect(try await store.findGlobal(gid: gid)?.status == .submitted)
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test func walStaysBoundedUnderSustainedWrites() async throws {
        try await withSQLiteStore { store, file throws in
            // One commit per call, several pages each: far more WAL frames than the 10 000 at
            // which the writer finishes a checkpoint so that the WAL restarts from its start.
            for index in 0..<3000 {
                _ = try await store.saveNew(sampleGlobal("g\(index)"), branches: sampleBranches("g\(index)"))
            }
            #expect(store.statistics.commits == 3000)
            let wal = try FileManager.default.attributesOfItem(atPath: file.path + "-wal")[.size] as? Int ?? 0
            let database = try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int ?? 0
            #expect(wal <= 10_500 * (4096 + 24), "WAL of \(wal) bytes")
            #expect(database > 1_000_000, "checkpoints copied pages into the database file")
            #expect(try await store.scanGlobals(GlobalQuery(limit: 5000)).count == 3000)
        }
    }

    @Test func acknowledgedWritesAreInTheFilesWithoutClose() async throws {
        let file = TemporaryDatabase()
        let copy = TemporaryDatabase("crash-copy")
        defer {
            file.remove()
            copy.remove()
        }
        let store = try openSQLiteStore(file.path)
        defer { store.close() }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<500 {
                group.addTask { try await store.saveNew(sampleGlobal("g\(index)"), branches: sampleBranches("g\(index)")) }
            }
            for try await saved in group { #expect(saved) }
        }
        // What a crash leaves behind: the database and its WAL as they are, no checkpoint, no close.
        for suffix in ["", "-wal"] {
            try FileManager.default.copyItem(atPath: file.path + suffix, toPath: copy.path + suffix)
        }
        let recovered = try openSQLiteStore(copy.path)
        defer { recovered.close() }
        #expect(try await recovered.scanGlobals(GlobalQuery(limit: 1000)).count == 500)
        #expect(try await recovered.findBranches(gid: "g499").count == 2)
    }

    @Test func droppingTheStoreWithoutCloseKeepsWrites() async throws {
        let file = TemporaryDatabase()
        defer { file.remove() }
        do {
            let store = try openSQLiteStore(file.path)
            for index in 0..<20 {
                _ = try await store.saveNew(sampleGlobal("g\(index)"), branches: [])
            }
        }
        let reopened = try openSQLiteStore(file.path)
        defer { reopened.close() }
        #expect(try await reopened.scanGlobals(GlobalQuery()).count == 20)
    }

    @Test func twoStoresOnOneFileNeverClaimTheSameRow() async throws {
        let file = TemporaryDatabase()
        defer { file.remove() }
        let first = try openSQLiteStore(file.path)
        let second = try openSQLiteStore(file.path)
        defer {
            first.close()
            second.close()
        }
        let rows = 400
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<rows {
                let store = index.isMultiple(of: 2) ? first : second
                group.addTask { try await store.saveNew(sampleGlobal("g\(index)", nextCron: at(-1)), branches: []) }
            }
            for try await saved in group { #expect(saved) }
        }
        let claims = try await withThrowingTaskGroup(of: [String].self) { group in
            for claimer in 0..<80 {
                let store = claimer.isMultiple(of: 2) ? first : second
                group.addTask {
                    try await store.claimDue(now: at(0), leaseUntil: at(10), owner: "c\(claimer)", limit: 6).map(\.gid)
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(claims.count == rows)
        #expect(Set(claims).count == rows)
    }
}
