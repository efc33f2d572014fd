import DtmEngine
import Foundation
import Testing

/// The `TransactionStore` contract, run against every store in `storeFactories`.
/// Written against the protocol only: no test here knows which store it has.
@Suite("TransactionStore conformance")
struct StoreConformanceTests {
    // MARK: saveNew / find

    @Test(arguments: storeFactories)
    func saveNewRoundTripsEveryField(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let global = GlobalTransaction(
                gid: "gid-ünï-💥", transType: .workflow, status: .submitted,
                queryPrepared: "http://busi/query?a=1&b=ü", transProtocol: .grpc, createTime: t0,
                updateTime: at(1), finishTime: at(2), rollbackTime: at(3),
                options: TransOptions(waitResult: true, timeoutToFail: 35, retryInterval: 7,
                                      branchHeaders: ["x-trace": "abc", "ключ": "значение"], requestTimeout: 8,
                                      retryLimit: 3, concurrent: true),
                customData: #"{"orders":{"1":["0"]},"concurrent":true}"#, nextCronInterval: 20,
                nextCronTime: at(4), owner: "owner-1", extData: #"{"headers":{"a":"b"}}"#,
                result: "cmVzdWx0", rollbackReason: "reason: 余额不足")
            let branches = [
                BranchRecord(gid: global.gid, url: "grpc://busi/Step1", binData: [0, 1, 0, 0, 255, 0],
                             branchID: "01", op: .action, status: .succeed, createTime: t0, updateTime: at(5),
                             finishTime: at(6), rollbackTime: at(7)),
                BranchRecord(gid: global.gid, url: "", binData: [], branchID: "01", op: .compensate,
                             createTime: at(1)),
                BranchRecord(gid: global.gid, url: "http://busi/ü", binData: Array("\0text\0".utf8),
                             branchID: "02", op: BranchOp("wf-name"), status: .failed, createTime: at(2)),
            ]
            #expect(try await store.saveNew(global, branches: branches))

            let found = try #require(try await store.findGlobal(gid: global.gid))
            #expect(found.id != nil)
            #expect(found.withoutID == global)
            let foundBranches = try await store.findBranches(gid: global.gid)
            #expect(foundBranches.map(\.withoutID) == branches)
            #expect(foundBranches.allSatisfy { $0.id != nil })

            #expect(try await store.findGlobal(gid: "missing") == nil)
            #expect(try await store.findBranches(gid: "missing").isEmpty)
        }
    }

    @Test(arguments: storeFactories)
    func saveNewOfExistingGidReturnsFalseAndWritesNothing(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let original = sampleGlobal("g1")
            #expect(try await store.saveNew(original, branches: sampleBranches("g1")))

            var other = sampleGlobal("g1", status: .submitted, type: .tcc)
            other.customData = "changed"
            let otherBranches = sampleBranches("g1", count: 3, op: .try)
            #expect(try await store.saveNew(other, branches: otherBranches) == false)

            #expect(try await store.findGlobal(gid: "g1")?.withoutID == original)
            #expect(try await store.findBranches(gid: "g1").map(\.withoutID) == sampleBranches("g1"))
        }
    }

    @Test(arguments: storeFactories)
    func saveNewWithDuplicateBranchesWritesNothing(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let branches = sampleBranches("g1") + sampleBranches("g1").prefix(1)
            let result = await outcome { () async throws(StoreError) in
                try await store.saveNew(sampleGlobal("g1"), branches: branches)
            }
            #expect(result.error?.isUniqueConflict == true)
            #expect(try await store.findGlobal(gid: "g1") == nil)
            #expect(try await store.findBranches(gid: "g1").isEmpty)
        }
    }

    // MARK: changeStatus

    @Test(arguments: storeFactories)
    func changeStatusIsCompareAndSet(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            var global = sampleGlobal("g1", status: .submitted)
            global.rollbackReason = "kept"
            _ = try await store.saveNew(global, branches: [])

            try await store.changeStatus(gid: "g1", from: .submitted, to: .succeed,
                                         update: GlobalUpdate(result: "done", finishTime: at(30)), now: at(30))
            var expected = global
            expected.status = .succeed
            expected.result = "done"
            expected.finishTime = at(30)
            expected.updateTime = at(30)
            #expect(try await store.findGlobal(gid: "g1")?.withoutID == expected)

            let wrongOld = await outcome { () async throws(StoreError) in
                try await store.changeStatus(gid: "g1", from: .submitted, to: .failed,
                                             update: GlobalUpdate(rollbackReason: "x"), now: at(40))
            }
            #expect(wrongOld.error?.isNotFound == true)
            #expect(try await store.findGlobal(gid: "g1")?.withoutID == expected)

            let unknown = await outcome { () async throws(StoreError) in
                try await store.changeStatus(gid: "nope", from: .prepared, to: .submitted, update: GlobalUpdate(),
                                             now: at(40))
            }
            #expect(unknown.error?.isNotFound == true)
        }
    }

    @Test(arguments: storeFactories)
    func changeStatusSetsEveryUpdateField(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let global = sampleGlobal("g1", status: .submitted)
            _ = try await store.saveNew(global, branches: [])
            let update = GlobalUpdate(rollbackReason: "why", result: "res", finishTime: at(1), rollbackTime: at(2),
                                      nextCronInterval: 40, nextCronTime: at(3))
            try await store.changeStatus(gid: "g1", from: .submitted, to: .aborting, update: update, now: at(4))
            let found = try #require(try await store.findGlobal(gid: "g1"))
            #expect(found.status == .aborting)
            #expect(found.rollbackReason == "why")
            #expect(found.result == "res")
            #expect(found.finishTime == at(1))
            #expect(found.rollbackTime == at(2))
            #expect(found.nextCronInterval == 40)
            #expect(found.nextCronTime == at(3))
            #expect(found.updateTime == at(4))
            #expect(found.createTime == global.createTime)
        }
    }

    // MARK: appendBranches / updateBranches

    @Test(arguments: storeFactories)
    func appendBranchesWhileExpectedStatus(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", type: .tcc), branches: [])
            let first = sampleBranches("g1", count: 1, op: .try)
            let more = sampleBranches("g1", count: 1, op: .confirm) + sampleBranches("g1", count: 1, op: .cancel)
            try await store.appendBranches(gid: "g1", expecting: .prepared, branches: first, now: at(1))
            try await store.appendBranches(gid: "g1", expecting: .prepared, branches: more, now: at(2))
            #expect(try await store.findBranches(gid: "g1").map(\.withoutID) == first + more)
            #expect(try await store.findGlobal(gid: "g1")?.status == .prepared)
        }
    }

    @Test(arguments: storeFactories)
    func appendBranchesRefusesOtherStatusOrUnknownGid(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .submitted), branches: [])
            let branches = sampleBranches("g1", op: .try)
            let wrongStatus = await outcome { () async throws(StoreError) in
                try await store.appendBranches(gid: "g1", expecting: .prepared, branches: branches, now: at(1))
            }
            #expect(wrongStatus.error?.isNotFound == true)
            #expect(try await store.findBranches(gid: "g1").isEmpty)

            let unknown = await outcome { () async throws(StoreError) in
                try await store.appendBranches(gid: "nope", expecting: .prepared,
                                               branches: sampleBranches("nope"), now: at(1))
            }
            #expect(unknown.error?.isNotFound == true)
            #expect(try await store.findBranches(gid: "nope").isEmpty)
        }
    }

    /// What a pass that aborts a timed-out tcc relies on (several coordinators on one store): once
    /// its prepared → aborting compare-and-set has returned, a RegisterBranch racing it has either
    /// been refused or committed before it, so a read after the change sees every row there is.
    @Test(arguments: storeFactories)
    func appendRacingStatusChangeIsRefusedOrSeenAfterIt(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            for round in 0..<20 {
                let gid = "race-\(round)"
                _ = try await store.saveNew(sampleGlobal(gid, type: .tcc), branches: sampleBranches(gid, count: 1))
                let rows = sampleBranches(gid, count: 2, op: .cancel)
                async let appended = outcome { () async throws(StoreError) in
                    try await store.appendBranches(gid: gid, expecting: .prepared, branches: rows, now: at(1))
                }
                try await store.changeStatus(gid: gid, from: .prepared, to: .aborting,
                                             update: GlobalUpdate(nextCronTime: at(9)), now: at(2))
                let seen = try await store.findBranches(gid: gid)
                switch await appended {
                case .success:
                    #expect(seen.filter { $0.op == .cancel }.count == 2, "round \(round): appended after the change")
                case .failure(let error):
                    #expect(error.isNotFound, "round \(round): \(error)")
                    #expect(try await store.findBranches(gid: gid) == seen)
                }
            }
        }
    }

    @Test(arguments: storeFactories)
    func appendDuplicateBranchIsUniqueConflictAndChangesNothing(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let existing = sampleBranches("g1", count: 1, op: .try)
            _ = try await store.saveNew(sampleGlobal("g1", type: .workflow), branches: existing)
            let before = try await store.findBranches(gid: "g1")

            // A new row first, then the duplicate: the request must be all or nothing.
            var duplicate = existing[0]
            duplicate.binData = [9, 9]
            duplicate.status = .succeed
            let batch = sampleBranches("g1", count: 1, op: .confirm) + [duplicate]
            let result = await outcome { () async throws(StoreError) in
                try await store.appendBranches(gid: "g1", expecting: .prepared, branches: batch, now: at(1))
            }
            #expect(result.error?.isUniqueConflict == true)
            #expect(try await store.findBranches(gid: "g1") == before)
        }
    }

    @Test(arguments: storeFactories)
    func updateBranchesRecordsResults(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let branches = sampleBranches("g1")
            _ = try await store.saveNew(sampleGlobal("g1", status: .submitted), branches: branches)
            try await store.updateBranches(
                gid: "g1", expecting: .submitted,
                updates: [BranchUpdate(branchID: "01", op: .action, status: .succeed, finishTime: at(5)),
                          BranchUpdate(branchID: "02", op: .action, status: .failed, finishTime: at(6))],
                now: at(7))
            let found = try await store.findBranches(gid: "g1")
            #expect(found.map(\.status) == [.succeed, .failed])
            #expect(found.map(\.finishTime) == [at(5), at(6)])
            #expect(found.map(\.updateTime) == [at(7), at(7)])
            #expect(found.map(\.createTime) == branches.map(\.createTime))
            #expect(found.map(\.binData) == branches.map(\.binData))
        }
    }

    @Test(arguments: storeFactories)
    func updateBranchesRefusesOtherStatusOrUnknownBranch(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .aborting), branches: sampleBranches("g1"))
            let before = try await store.findBranches(gid: "g1")
            let succeed = BranchUpdate(branchID: "01", op: .action, status: .succeed, finishTime: at(5))

            let wrongStatus = await outcome { () async throws(StoreError) in
                try await store.updateBranches(gid: "g1", expecting: .submitted, updates: [succeed], now: at(7))
            }
            #expect(wrongStatus.error?.isNotFound == true)

            let unknownBranch = BranchUpdate(branchID: "99", op: .action, status: .succeed, finishTime: at(5))
            let missing = await outcome { () async throws(StoreError) in
                try await store.updateBranches(gid: "g1", expecting: .aborting, updates: [succeed, unknownBranch],
                                               now: at(7))
            }
            #expect(missing.error?.isNotFound == true)
            #expect(try await store.findBranches(gid: "g1") == before)
        }
    }

    // MARK: cron

    @Test(arguments: storeFactories)
    func touchCronOnlyWhileStatusHolds(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .submitted), branches: [])
            try await store.touchCron(gid: "g1", status: .submitted, nextCronInterval: 20, nextCronTime: at(100),
                                      now: at(80))
            var found = try #require(try await store.findGlobal(gid: "g1"))
            #expect(found.nextCronInterval == 20)
            #expect(found.nextCronTime == at(100))
            #expect(found.updateTime == at(80))

            // Status moved on: silently ignored.
            try await store.touchCron(gid: "g1", status: .aborting, nextCronInterval: 40, nextCronTime: at(500),
                                      now: at(90))
            try await store.touchCron(gid: "nope", status: .submitted, nextCronInterval: 40, nextCronTime: at(500),
                                      now: at(90))
            found = try #require(try await store.findGlobal(gid: "g1"))
            #expect(found.nextCronInterval == 20)
            #expect(found.nextCronTime == at(100))
            #expect(found.updateTime == at(80))
        }
    }

    @Test(arguments: storeFactories)
    func changeStatusRecordsBranchResultsAtomically(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .submitted), branches: sampleBranches("g1"))
            let done = BranchUpdate(branchID: "02", op: .action, status: .succeed, finishTime: at(5))
            try await store.changeStatus(gid: "g1", from: .submitted, to: .succeed, update: GlobalUpdate(finishTime: at(6)),
                                         branchUpdates: [done], now: at(6))
            #expect(try await store.findGlobal(gid: "g1")?.status == .succeed)
            #expect(try await store.findBranches(gid: "g1").map(\.status) == [.prepared, .succeed])

            // A branch row that does not exist fails the whole write: the status stays.
            _ = try await store.saveNew(sampleGlobal("g2", status: .submitted), branches: sampleBranches("g2"))
            let missing = BranchUpdate(branchID: "09", op: .action, status: .succeed, finishTime: at(5))
            await #expect(throws: StoreError.self) {
                try await store.changeStatus(gid: "g2", from: .submitted, to: .succeed, update: GlobalUpdate(),
                                             branchUpdates: [done, missing], now: at(6))
            }
            #expect(try await store.findGlobal(gid: "g2")?.status == .submitted)
            #expect(try await store.findBranches(gid: "g2").map(\.status) == [.prepared, .prepared])
        }
    }

    @Test(arguments: storeFactories)
    func touchCronRecordsBranchResultsOnlyWhileStatusHolds(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .submitted), branches: sampleBranches("g1"))
            let first = BranchUpdate(branchID: "01", op: .action, status: .succeed, finishTime: at(5))
            try await store.touchCron(gid: "g1", status: .submitted, nextCronInterval: 20, nextCronTime: at(100),
                                      branchUpdates: [first], now: at(6))
            #expect(try await store.findBranches(gid: "g1").map(\.status) == [.succeed, .prepared])
            #expect(try await store.findGlobal(gid: "g1")?.nextCronTime == at(100))

            let second = BranchUpdate(branchID: "02", op: .action, status: .succeed, finishTime: at(7))
            try await store.touchCron(gid: "g1", status: .aborting, nextCronInterval: 40, nextCronTime: at(500),
                                      branchUpdates: [second], now: at(8))
            #expect(try await store.findBranches(gid: "g1").map(\.status) == [.succeed, .prepared])
            #expect(try await store.findGlobal(gid: "g1")?.nextCronTime == at(100))
        }
    }

    @Test(arguments: storeFactories)
    func extendLeasesMovesOnlyEarlierLeasesOfUnfinishedRows(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            for (gid, status, due) in [("short", GlobalStatus.submitted, 5), ("long", .submitted, 50),
                                       ("done", .succeed, 5)] {
                _ = try await store.saveNew(sampleGlobal(gid, status: status, nextCron: at(due)), branches: [])
            }
            try await store.extendLeases(gids: ["short", "long", "done", "unknown"], until: at(20), now: at(3))
            #expect(try await store.findGlobal(gid: "short")?.nextCronTime == at(20))
            #expect(try await store.findGlobal(gid: "short")?.updateTime == at(3))
            #expect(try await store.findGlobal(gid: "long")?.nextCronTime == at(50))
            #expect(try await store.findGlobal(gid: "done")?.nextCronTime == at(5))
            try await store.extendLeases(gids: [], until: at(99), now: at(4))
        }
    }

    /// Fencing (issue 8): every write that drives a transaction names the lease owner it
    /// expects; after another coordinator took the row, those writes change nothing.
    @Test(arguments: storeFactories)
    func drivingWritesCheckTheLeaseOwner(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .submitted, nextCron: at(0)),
                                        branches: sampleBranches("g1"))
            _ = try await store.claimDue(now: at(0), leaseUntil: at(10), owner: "A", limit: 10)
            let result = BranchUpdate(branchID: "01", op: .action, status: .succeed, finishTime: at(1))

            let staleBranches = await outcome { () async throws(StoreError) in
                try await store.updateBranches(gid: "g1", expecting: .submitted, owner: "B", updates: [result], now: at(1))
            }
            #expect(staleBranches.error?.isNotFound == true)
            try await store.touchCron(gid: "g1", status: .submitted, owner: "B", nextCronInterval: 99,
                                      nextCronTime: at(99), branchUpdates: [result], now: at(1))
            var stale = GlobalUpdate(finishTime: at(1))
            stale.expectedOwner = "B"
            let staleStatus = await outcome { () async throws(StoreError) in
                try await store.changeStatus(gid: "g1", from: .submitted, to: .succeed, update: stale, now: at(1))
            }
            #expect(staleStatus.error?.isNotFound == true)
            try await store.extendLeases(gids: ["g1"], owner: "B", until: at(50), now: at(1))
            var stored = try #require(try await store.findGlobal(gid: "g1"))
            #expect(stored.status == .submitted && stored.nextCronTime == at(10) && stored.nextCronInterval == 10)
            #expect(try await store.findBranches(gid: "g1").map(\.status) == [.prepared, .prepared])

            // The owner's own writes go through, and a lease handed over by a request names its new owner.
            try await store.updateBranches(gid: "g1", expecting: .submitted, owner: "A", updates: [result], now: at(2))
            try await store.extendLeases(gids: ["g1"], owner: "A", until: at(50), now: at(2))
            var handover = GlobalUpdate(nextCronTime: at(60), owner: "C")
            handover.expectedOwner = "A"
            try await store.changeStatus(gid: "g1", from: .submitted, to: .aborting, update: handover, now: at(3))
            stored = try #require(try await store.findGlobal(gid: "g1"))
            #expect(stored.status == .aborting && stored.owner == "C" && stored.nextCronTime == at(60))
            #expect(try await store.findBranches(gid: "g1").first?.status == .succeed)
        }
    }

    @Test(arguments: storeFactories)
    func forceFailEndsAnyUnfinishedRow(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .aborting), branches: [])
            _ = try await store.saveNew(sampleGlobal("done", status: .succeed), branches: [])
            try await store.forceFail(gid: "g1", reason: "stop", now: at(5))
            let stored = try #require(try await store.findGlobal(gid: "g1"))
            #expect(stored.status == .failed && stored.rollbackReason == "stop" && stored.rollbackTime == at(5))
            for gid in ["g1", "done", "unknown"] {
                let again = await outcome { () async throws(StoreError) in
                    try await store.forceFail(gid: gid, reason: "x", now: at(6))
                }
                #expect(again.error?.isNotFound == true)
            }
        }
    }

    @Test(arguments: storeFactories)
    func claimDueLeasesDueUnfinishedRows(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            for (gid, status, due) in [("prepared", GlobalStatus.prepared, 0), ("submitted", .submitted, -5),
                                       ("aborting", .aborting, 0), ("future", .submitted, 1),
                                       ("succeed", .succeed, -5), ("failed", .failed, -5)] {
                _ = try await store.saveNew(sampleGlobal(gid, status: status, nextCron: at(due)), branches: [])
            }
            let claimed = try await store.claimDue(now: at(0), leaseUntil: at(10), owner: "A", limit: 10)
            #expect(Set(claimed.map(\.gid)) == ["prepared", "submitted", "aborting"])
            #expect(claimed.allSatisfy { $0.owner == "A" && $0.nextCronTime == at(10) })
            for gid in ["prepared", "submitted", "aborting"] {
                let stored = try #require(try await store.findGlobal(gid: gid))
                #expect(stored.owner == "A")
                #expect(stored.nextCronTime == at(10))
            }
            #expect(try await store.findGlobal(gid: "future")?.owner == "")

            // Leased rows are not due again until the lease expires.
            #expect(try await store.claimDue(now: at(0), leaseUntil: at(10), owner: "B", limit: 10).isEmpty)
            let later = try await store.claimDue(now: at(10), leaseUntil: at(20), owner: "B", limit: 10)
            #expect(Set(later.map(\.gid)) == ["prepared", "submitted", "aborting", "future"])
            #expect(later.allSatisfy { $0.owner == "B" })
        }
    }

    @Test(arguments: storeFactories)
    func claimDueRespectsLimit(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            for index in 0..<5 {
                _ = try await store.saveNew(sampleGlobal("g\(index)", nextCron: at(-index)), branches: [])
            }
            #expect(try await store.claimDue(now: at(0), leaseUntil: at(10), owner: "A", limit: 0).isEmpty)
            let first = try await store.claimDue(now: at(0), leaseUntil: at(10), owner: "A", limit: 2)
            #expect(first.count == 2)
            let rest = try await store.claimDue(now: at(0), leaseUntil: at(10), owner: "A", limit: 10)
            #expect(rest.count == 3)
            #expect(Set(first.map(\.gid) + rest.map(\.gid)).count == 5)
        }
    }

    @Test(arguments: storeFactories)
    func concurrentClaimersNeverShareARow(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let rows = 300
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<rows {
                    group.addTask { try await store.saveNew(sampleGlobal("g\(index)", nextCron: at(-1)), branches: []) }
                }
                for try await saved in group { #expect(saved) }
            }
            let claims = try await withThrowingTaskGroup(of: [String].self) { group in
                for claimer in 0..<60 {
                    group.addTask {
                        try await store.claimDue(now: at(0), leaseUntil: at(10), owner: "c\(claimer)", limit: 7)
                            .map(\.gid)
                    }
                }
                return try await group.reduce(into: [String]()) { $0 += $1 }
            }
            #expect(claims.count == rows)
            #expect(Set(claims).count == claims.count)
        }
    }

    @Test(arguments: storeFactories)
    func resetCronTimeMovesUpToLimitUnfinishedRows(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            for index in 0..<5 {
                _ = try await store.saveNew(sampleGlobal("late\(index)", status: .submitted, nextCron: at(1000)),
                                            branches: [])
            }
            _ = try await store.saveNew(sampleGlobal("soon", status: .submitted, nextCron: at(50)), branches: [])
            _ = try await store.saveNew(sampleGlobal("done", status: .succeed, nextCron: at(1000)), branches: [])

            #expect(try await store.resetCronTime(after: at(100), limit: 3, now: at(1)) == 3)
            #expect(try await store.resetCronTime(after: at(100), limit: 3, now: at(1)) == 2)
            #expect(try await store.resetCronTime(after: at(100), limit: 3, now: at(1)) == 0)
            for index in 0..<5 {
                #expect(try await store.findGlobal(gid: "late\(index)")?.nextCronTime == at(1))
            }
            #expect(try await store.findGlobal(gid: "soon")?.nextCronTime == at(50))
            #expect(try await store.findGlobal(gid: "done")?.nextCronTime == at(1000))
        }
    }

    @Test(arguments: storeFactories)
    func resetNextCronTimeOfOneGid(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("g1", status: .succeed, nextCron: at(1000)), branches: [])
            try await store.resetNextCronTime(gid: "g1", now: at(5))
            let found = try #require(try await store.findGlobal(gid: "g1"))
            #expect(found.nextCronTime == at(5))
            #expect(found.updateTime == at(5))

            let unknown = await outcome { () async throws(StoreError) in
                try await store.resetNextCronTime(gid: "nope", now: at(5))
            }
            #expect(unknown.error?.isNotFound == true)
        }
    }

    // MARK: retention and due count

    @Test(arguments: storeFactories)
    func deleteFinishedRemovesOnlyOldFinishedRowsAndTheirBranches(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            // Old and finished: 3 succeed + 2 failed, all updated at t0 + 10 (via changeStatus).
            var expired: [String] = []
            for index in 0..<5 {
                let gid = "old\(index)"
                _ = try await store.saveNew(sampleGlobal(gid, status: .submitted), branches: sampleBranches(gid))
                try await store.changeStatus(gid: gid, from: .submitted, to: index < 3 ? .succeed : .failed,
                                             update: GlobalUpdate(finishTime: at(10)), now: at(10))
                expired.append(gid)
            }
            // Finished but recent; and unfinished rows of every status, however old.
            _ = try await store.saveNew(sampleGlobal("recent", status: .submitted), branches: sampleBranches("recent"))
            try await store.changeStatus(gid: "recent", from: .submitted, to: .succeed, update: GlobalUpdate(),
                                         now: at(500))
            for status in [GlobalStatus.prepared, .submitted, .aborting] {
                _ = try await store.saveNew(sampleGlobal("open-\(status.rawValue)", status: status),
                                            branches: sampleBranches("open-\(status.rawValue)"))
            }

            #expect(try await store.deleteFinished(before: at(100), limit: 2) == 2)
            #expect(try await store.deleteFinished(before: at(100), limit: 2) == 2)
            #expect(try await store.deleteFinished(before: at(100), limit: 2) == 1)
            #expect(try await store.deleteFinished(before: at(100), limit: 2) == 0)
            #expect(try await store.deleteFinished(before: at(100), limit: 0) == 0)
            for gid in expired {
                #expect(try await store.findGlobal(gid: gid) == nil)
                #expect(try await store.findBranches(gid: gid).isEmpty)
            }
            for gid in ["recent", "open-prepared", "open-submitted", "open-aborting"] {
                #expect(try await store.findGlobal(gid: gid) != nil, "\(gid) must stay")
                #expect(try await store.findBranches(gid: gid).count == 2, "\(gid)'s branches must stay")
            }
            // Unfinished rows are never deleted, even with a cutoff in the far future.
            #expect(try await store.deleteFinished(before: at(1_000_000), limit: 100) == 1)
            #expect(try await store.findGlobal(gid: "recent") == nil)
            for status in ["prepared", "submitted", "aborting"] {
                #expect(try await store.findGlobal(gid: "open-\(status)") != nil)
            }
        }
    }

    @Test(arguments: storeFactories)
    func countDueCountsUnfinishedRowsPastTheirCronTime(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            _ = try await store.saveNew(sampleGlobal("due1", status: .submitted, nextCron: at(5)), branches: [])
            _ = try await store.saveNew(sampleGlobal("due2", status: .aborting, nextCron: at(20)), branches: [])
            _ = try await store.saveNew(sampleGlobal("later", status: .submitted, nextCron: at(50)), branches: [])
            _ = try await store.saveNew(sampleGlobal("done", status: .succeed, nextCron: at(5)), branches: [])
            #expect(try await store.countDue(now: at(20)) == 2)
            #expect(try await store.countDue(now: at(1)) == 0)
            #expect(try await store.countDue(now: at(60)) == 3)
        }
    }

    // MARK: scanGlobals

    @Test(arguments: storeFactories)
    func scanGlobalsPagesByDescendingID(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            for index in 0..<7 {
                _ = try await store.saveNew(sampleGlobal("g\(index)"), branches: [])
            }
            var pages: [[String]] = []
            var position: Int64?
            while true {
                let page = try await store.scanGlobals(GlobalQuery(position: position, limit: 3))
                if page.isEmpty { break }
                pages.append(page.map(\.gid))
                position = page.last?.id
            }
            #expect(pages == [["g6", "g5", "g4"], ["g3", "g2", "g1"], ["g0"]])
            #expect(try await store.scanGlobals(GlobalQuery(limit: 0)).isEmpty)
        }
    }

    @Test(arguments: storeFactories)
    func scanGlobalsFilters(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let rows: [(String, GlobalStatus, TransType, Int)] = [
                ("a", .succeed, .saga, 0), ("b", .failed, .saga, 10), ("c", .succeed, .tcc, 20),
                ("d", .succeed, .saga, 30), ("e", .prepared, .msg, 40),
            ]
            for (gid, status, type, created) in rows {
                _ = try await store.saveNew(sampleGlobal(gid, status: status, type: type, created: at(created)),
                                            branches: [])
            }
            func gids(_ query: GlobalQuery) async throws -> [String] {
                try await store.scanGlobals(query).map(\.gid)
            }
            #expect(try await gids(GlobalQuery()) == ["e", "d", "c", "b", "a"])
            #expect(try await gids(GlobalQuery(status: .succeed)) == ["d", "c", "a"])
            #expect(try await gids(GlobalQuery(transType: .saga)) == ["d", "b", "a"])
            #expect(try await gids(GlobalQuery(status: .succeed, transType: .saga)) == ["d", "a"])
            #expect(try await gids(GlobalQuery(createdFrom: at(10), createdTo: at(30))) == ["d", "c", "b"])
            #expect(try await gids(GlobalQuery(status: .succeed, createdFrom: at(10), limit: 1)) == ["d"])
            let d = try #require(try await store.findGlobal(gid: "d")?.id)
            #expect(try await gids(GlobalQuery(status: .succeed, position: d)) == ["c", "a"])
        }
    }

    // MARK: KV

    @Test(arguments: storeFactories)
    func kvCreateUpdateDelete(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            let value = #"[{"url":"http://busi/TransOut","remark":"ünï"}]"#
            try await store.createKV(cat: "topics", key: "t1", value: value, now: at(1))
            let created = try #require(try await store.findKV(cat: "topics", key: "t1").first)
            #expect(created.withoutID == KVRecord(cat: "topics", key: "t1", value: value, version: 1,
                                                    createTime: at(1)))
            let duplicate = await outcome { () async throws(StoreError) in
                try await store.createKV(cat: "topics", key: "t1", value: "[]", now: at(2))
            }
            #expect(duplicate.error?.isUniqueConflict == true)

            try await store.updateKV(cat: "topics", key: "t1", value: "[]", expectedVersion: 1, now: at(3))
            let stale = await outcome { () async throws(StoreError) in
                try await store.updateKV(cat: "topics", key: "t1", value: "stale", expectedVersion: 1, now: at(4))
            }
            #expect(stale.error?.isNotFound == true)
            let updated = try #require(try await store.findKV(cat: "topics", key: "t1").first)
            #expect(updated.value == "[]")
            #expect(updated.version == 2)
            #expect(updated.createTime == at(1))
            #expect(updated.updateTime == at(3))
            #expect(updated.id == created.id)

            let missing = await outcome { () async throws(StoreError) in
                try await store.updateKV(cat: "topics", key: "nope", value: "x", expectedVersion: 1, now: at(4))
            }
            #expect(missing.error?.isNotFound == true)

            try await store.deleteKV(cat: "topics", key: "t1")
            #expect(try await store.findKV(cat: "topics", key: "t1").isEmpty)
            let deletedTwice = await outcome { () async throws(StoreError) in
                try await store.deleteKV(cat: "topics", key: "t1")
            }
            #expect(deletedTwice.error?.isNotFound == true)
        }
    }

    @Test(arguments: storeFactories)
    func kvFindAndScan(_ factory: StoreFactory) async throws {
        try await withStore(factory) { store throws in
            for (cat, key) in [("topics", "a"), ("topics", "b"), ("other", "a"), ("topics", "c"), ("topics", "d")] {
                try await store.createKV(cat: cat, key: key, value: "\(cat)/\(key)", now: at(0))
            }
            func keys(_ records: [KVRecord]) -> [String] { records.map { "\($0.cat)/\($0.key)" } }
            #expect(keys(try await store.findKV(cat: "topics", key: "a")) == ["topics/a"])
            #expect(keys(try await store.findKV(cat: "", key: "a")) == ["topics/a", "other/a"])
            #expect(keys(try await store.findKV(cat: "other", key: "")) == ["other/a"])
            #expect(try await store.findKV(cat: "", key: "").count == 5)
            #expect(try await store.findKV(cat: "topics", key: "zz").isEmpty)

            let first = try await store.scanKV(cat: "topics", position: nil, limit: 3)
            #expect(keys(first) == ["topics/d", "topics/c", "topics/b"])
            let second = try await store.scanKV(cat: "topics", position: first.last?.id, limit: 3)
            #expect(keys(second) == ["topics/a"])
            #expect(try await store.scanKV(cat: "topics", position: second.last?.id, limit: 3).isEmpty)
            #expect(try await store.scanKV(cat: "topics", position: nil, limit: 0).isEmpty)
            #expect(first.allSatisfy { $0.value == "\($0.cat)/\($0.key)" })
        }
    }
}
