import DtmEngine
import Foundation
import Testing

extension BranchAttempt: StoreAssignedID {}

/// An attempt of `gid` numbered `n` (its branch, duration and text tell which it is).
func sampleAttempt(_ gid: String, _ n: Int, result: AttemptResult = .error) -> BranchAttempt {
    BranchAttempt(gid: gid, branchID: "0\(n % 2 + 1)", op: n % 3 == 0 ? .compensate : .action,
                  url: "http://busi/ü/\(n)", startTime: at(n), durationMs: Int64(n * 7), result: result,
                  message: result == .success ? "" : "HTTP 503: attempt \(n) „busy“", owner: "coordinator-\(n % 2)")
}

/// The attempt history and the gid-prefix filter, against every store (see `StoreConformanceTests`).
@Suite("TransactionStore conformance: attempts")
struct AttemptConformanceTests {
    @Test(arguments: storeFactories)
    func attemptsAreWrittenWithTheWriteThatCarriesThem(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .submitted), branches: sampleBranches("g1"))
            _ = try await store.saveNew(sampleGlobal("g2", status: .submitted), branches: sampleBranches("g2"))
            let (a1, a2, a3, a4) = (sampleAttempt("g1", 1, result: .success), sampleAttempt("g1", 2),
                                    sampleAttempt("g1", 3, result: .ongoing), sampleAttempt("g1", 4, result: .failure))
            let done = BranchUpdate(branchID: "01", op: .action, status: .succeed, finishTime: at(5))
            try await store.updateBranches(gid: "g1", expecting: .submitted, owner: nil, updates: [done],
                                           attempts: [a1], now: at(5))
            // Attempts alone ride on a schedule change or a status change as well.
            try await store.touchCron(gid: "g1", status: .submitted, owner: nil, nextCronInterval: 20,
                                      nextCronTime: at(50), branchUpdates: [], attempts: [a2, a3], now: at(6))
            try await store.changeStatus(gid: "g1", from: .submitted, to: .aborting, update: GlobalUpdate(),
                                         branchUpdates: [], attempts: [a4], now: at(7))
            let found = try await store.findAttempts(gid: "g1")
            #expect(found.map(\.withoutID) == [a1, a2, a3, a4])
            let ids = found.compactMap(\.id)
            #expect(ids.count == 4 && ids == ids.sorted() && Set(ids).count == 4)
            #expect(try await store.findAttempts(gid: "g2").isEmpty)
            #expect(try await store.findAttempts(gid: "unknown").isEmpty)
            // The old entry points (no attempts) still work and add none.
            try await store.touchCron(gid: "g1", status: .aborting, nextCronInterval: 20, nextCronTime: at(60), now: at(8))
            #expect(try await store.findAttempts(gid: "g1").count == 4)
        }
    }

    @Test(arguments: storeFactories)
    func aWriteThatDoesNotHappenStoresNoAttempts(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            var leased = sampleGlobal("g1", status: .submitted)
            leased.owner = "me"
            _ = try await store.saveNew(leased, branches: sampleBranches("g1"))
            let attempt = sampleAttempt("g1", 1)
            // Lost compare-and-set on the status, then on the owner.
            let wrongStatus = await outcome { () async throws(StoreError) in
                try await store.changeStatus(gid: "g1", from: .prepared, to: .aborting, update: GlobalUpdate(),
                                             branchUpdates: [], attempts: [attempt], now: at(5))
            }
            #expect(wrongStatus.error?.isNotFound == true)
            let wrongOwner = await outcome { () async throws(StoreError) in
                try await store.updateBranches(gid: "g1", expecting: .submitted, owner: "other", updates: [],
                                               attempts: [attempt], now: at(5))
            }
            #expect(wrongOwner.error?.isNotFound == true)
            // touchCron of a pass that lost its race is silently dropped, attempts with it.
            try await store.touchCron(gid: "g1", status: .aborting, owner: nil, nextCronInterval: 20,
                                      nextCronTime: at(50), branchUpdates: [], attempts: [attempt], now: at(5))
            try await store.touchCron(gid: "g1", status: .submitted, owner: "other", nextCronInterval: 20,
                                      nextCronTime: at(50), branchUpdates: [], attempts: [attempt], now: at(5))
            // A missing branch row fails the whole write: no attempt either.
            let missing = BranchUpdate(branchID: "09", op: .action, status: .succeed, finishTime: at(5))
            let partial = await outcome { () async throws(StoreError) in
                try await store.changeStatus(gid: "g1", from: .submitted, to: .succeed, update: GlobalUpdate(),
                                             branchUpdates: [missing], attempts: [attempt], now: at(5))
            }
            #expect(partial.error != nil)
            #expect(try await store.findAttempts(gid: "g1").isEmpty)
            #expect(try await store.findGlobal(gid: "g1")?.status == .submitted)
        }
    }

    /// A transaction retried for months keeps its first and its latest attempts only.
    @Test(arguments: storeFactories)
    func historyKeepsTheFirstAndTheLatestAttempts(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .submitted), branches: sampleBranches("g1"))
            _ = try await store.saveNew(sampleGlobal("g2", status: .submitted), branches: sampleBranches("g2"))
            let all = (1...137).map { sampleAttempt("g1", $0) }
            var written = 0
            for size in [1, 5, 3, 9, 20, 2] + Array(repeating: 7, count: 14) where written < all.count {
                let batch = Array(all[written..<min(all.count, written + size)])
                try await store.touchCron(gid: "g1", status: .submitted, owner: nil, nextCronInterval: 20,
                                          nextCronTime: at(50), branchUpdates: [], attempts: batch, now: at(5))
                written += batch.count
                let kept = try await store.findAttempts(gid: "g1").map(\.withoutID)
                #expect(kept == AttemptRetention.trimmed(all.prefix(written)), "after \(written) attempts")
            }
            #expect(written == all.count)
            let kept = try await store.findAttempts(gid: "g1").map(\.withoutID)
            #expect(kept.count == AttemptRetention.limit)
            #expect(kept.prefix(AttemptRetention.first) == all.prefix(AttemptRetention.first))
            #expect(kept.suffix(AttemptRetention.latest) == all.suffix(AttemptRetention.latest))
            // One write with more than the limit keeps what a series of writes would.
            let burst = (1...250).map { sampleAttempt("g2", $0) }
            try await store.updateBranches(gid: "g2", expecting: .submitted, owner: nil, updates: [],
                                           attempts: burst, now: at(5))
            #expect(try await store.findAttempts(gid: "g2").map(\.withoutID) == AttemptRetention.trimmed(burst))
        }
    }

    @Test(arguments: storeFactories)
    func retentionDeletesATransactionsAttemptsWithIt(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            for gid in ["old", "running"] {
                _ = try await store.saveNew(sampleGlobal(gid, status: .submitted), branches: sampleBranches(gid))
                try await store.touchCron(gid: gid, status: .submitted, owner: nil, nextCronInterval: 20,
                                          nextCronTime: at(50), branchUpdates: [],
                                          attempts: [sampleAttempt(gid, 1), sampleAttempt(gid, 2)], now: at(5))
            }
            try await store.changeStatus(gid: "old", from: .submitted, to: .succeed, update: GlobalUpdate(),
                                         branchUpdates: [], attempts: [sampleAttempt("old", 3, result: .success)],
                                         now: at(6))
            #expect(try await store.findAttempts(gid: "old").count == 3)
            #expect(try await store.deleteFinished(before: at(100), limit: 10) == 1)
            #expect(try await store.findAttempts(gid: "old").isEmpty)
            #expect(try await store.findAttempts(gid: "running").count == 2)
        }
    }

    /// `%` and `_` in a prefix are plain characters, and the match is case-sensitive.
    @Test(arguments: storeFactories)
    func gidPrefixFilterIsLiteral(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let gids = ["a%b-1", "a%c", "axb", "a_b", "aXb", "ab", "A%b", "b", "a%b-2ü"]
            for gid in gids { _ = try await store.saveNew(sampleGlobal(gid), branches: []) }
            func listed(_ prefix: String, status: GlobalStatus? = nil) async throws -> Set<String> {
                Set(try await store.scanGlobals(GlobalQuery(status: status, gidPrefix: prefix, limit: 100)).map(\.gid))
            }
            #expect(try await listed("a%") == ["a%b-1", "a%c", "a%b-2ü"])
            #expect(try await listed("a%b") == ["a%b-1", "a%b-2ü"])
            #expect(try await listed("a_") == ["a_b"])
            #expect(try await listed("ax") == ["axb"])
            #expect(try await listed("a%b-2ü") == ["a%b-2ü"])
            #expect(try await listed("") == Set(gids))
            #expect(try await listed("zz").isEmpty)
            #expect(try await listed("a%", status: .submitted).isEmpty)
            // Paging goes on within the filter.
            let first = try await store.scanGlobals(GlobalQuery(gidPrefix: "a%", limit: 2))
            #expect(first.count == 2)
            let rest = try await store.scanGlobals(GlobalQuery(gidPrefix: "a%", position: first.last?.id, limit: 2))
            #expect(Set((first + rest).map(\.gid)) == ["a%b-1", "a%c", "a%b-2ü"])
        }
    }
}
