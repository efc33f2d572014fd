import DtmEngine
import DtmStore
import Foundation
import Testing

/// Text and blobs are bound from the connection's arena (SQLITE_STATIC) up to 4 KiB each, and
/// copied by SQLite above that: whatever the sizes, what is read back is what was written.
@Suite("SQLite parameter binding")
struct BindingTests {
    /// `count` bytes of varied UTF-8 (multi-byte characters, an embedded NUL), distinct per seed.
    private func text(_ count: Int, seed: Int) -> String {
        let pieces = ["é", "日本", "\u{0}", "x", "🙂", "\(seed)"]
        var result = ""
        var index = seed
        while result.utf8.count < count {
            result += pieces[index % pieces.count]
            index += 1
        }
        return result
    }

    @Test(arguments: [0, 1, 4095, 4096, 4097, 40_000])
    func oneStatementWithManyLargeValuesReadsBack(size: Int) async throws {
        try await withSQLiteStore { store, _ throws in
            // Five text columns of `size` bytes in one INSERT: several values per 16 KiB chunk,
            // values that span into a new chunk, and values left to SQLite's own copy.
            var global = sampleGlobal("bind-\(size)")
            global.customData = text(size, seed: 1)
            global.extData = text(size, seed: 2)
            global.result = text(size, seed: 3)
            global.rollbackReason = text(size, seed: 4)
            global.queryPrepared = text(size, seed: 5)
            let branches = (0..<6).map { index in
                BranchRecord(gid: global.gid, url: text(size, seed: 10 + index),
                             binData: (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) },
                             branchID: "0\(index + 1)", op: .action, createTime: t0)
            }
            #expect(try await store.saveNew(global, branches: branches))

            let read = try #require(try await store.findGlobal(gid: global.gid))
            #expect(read.customData == global.customData)
            #expect(read.extData == global.extData)
            #expect(read.result == global.result)
            #expect(read.rollbackReason == global.rollbackReason)
            #expect(read.queryPrepared == global.queryPrepared)
            let readBranches = try await store.findBranches(gid: global.gid)
            #expect(readBranches.map(\.url) == branches.map(\.url))
            #expect(readBranches.map(\.binData) == branches.map(\.binData))
        }
    }

    @Test func manyStatementsInOneBatchKeepTheirOwnValues() async throws {
        try await withSQLiteStore { store, _ throws in
            // Concurrent requests share one commit: each statement's values must be its own.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<200 {
                    group.addTask { () async throws in
                        var global = sampleGlobal("batch-\(index)")
                        global.customData = self.text(100 + index * 37 % 5000, seed: index)
                        #expect(try await store.saveNew(global, branches: sampleBranches(global.gid)))
                    }
                }
                try await group.waitForAll()
            }
            for index in 0..<200 {
                let read = try await store.findGlobal(gid: "batch-\(index)")
                #expect(read?.customData == text(100 + index * 37 % 5000, seed: index))
            }
        }
    }
}
