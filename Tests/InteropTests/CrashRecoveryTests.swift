import DtmTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct CrashRecoveryTests {
    /// 30 slow sagas (half meant to roll back), 4 held in flight and a stream of fast ones are
    /// under way when the coordinator gets SIGKILL; restarted on the same SQLite file it finishes every transaction
    /// correctly: right final states and branch rows, every needed branch call made, no saga
    /// action after its compensation began, and no acknowledged Submit lost.
    @Test func sigkillMidFlightThenRestartFinishesEverything() async throws {
        let binary = try #require(Peers.dtmBinary, "build the dtm executable first")
        let busi = try await BusiPeer.shared()
        let dir = try makeTempDir("dtm-e2e-crash")
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("dtm.sqlite").path
        let prefix = uniqueGid("crash")

        // Batch A: slow sagas, delays staggered so that the kill finds them in different phases.
        let count = 30
        let slow = (0..<count).map { "\(prefix)-a\($0)" }
        for (index, gid) in slow.enumerated() {
            try busi.control(gid, ["delay": 0.3 + Double(index % 5) * 0.15])
        }
        // Batch H: sagas whose TransIn answers ONGOING until after the kill, so that the kill
        // finds work in flight however fast or slow this run is.
        let held = (0..<4).map { "\(prefix)-h\($0)" }
        for gid in held { try busi.control(gid, ["TransIn": "ONGOING"]) }
        let gids = slow + held
        let rollsBack = { (index: Int) in index % 2 == 1 }
        let first = try await DtmProcess.start(binary: binary, store: db, logURL: dir.appendingPathComponent("dtm-1.log"))
        var firstStopped = false
        defer { if !firstStopped { kill(first.process.processIdentifier, SIGKILL) } }

        let submitted = try await runClient(first.target, gids.enumerated().map { index, gid in
            Op.submit(transferSaga(gid, busi, .grpc, transIn: rollsBack(index) ? "FAILURE" : ""))
        })
        #expect(submitted.map(\.code) == Array(repeating: "OK", count: gids.count), "\(submitted)")

        // Batch B: fast sagas submitted one after the other until the coordinator is gone.
        let streamPrefix = "\(prefix)-b"
        let template = transferSaga("", busi, .grpc)
        async let streamed = runClient(first.target, [["submit_until_down": [
            "req": template, "prefix": streamPrefix, "count": 2000, "interval": 0.02, "timeout": 10,
        ]]])

        // Kill once the slow sagas are well under way, the held ones wait in TransIn and the
        // stream is flowing.
        try await waitUntil("sagas under way before the kill", poll: .milliseconds(20)) {
            let calls = busi.calls(prefix: prefix)
            return slow.reduce(0) { $0 + (calls[$1]?.count ?? 0) } >= 60
                && held.allSatisfy { calls[$0]?.contains { $0.method == "TransIn" } ?? false }
                && busi.calls(prefix: streamPrefix).count >= 3
        }
        try await first.stop(SIGKILL)
        firstStopped = true
        let killedAt = Date().timeIntervalSince1970
        for gid in held { try busi.control(gid, [:]) }  // TransIn answers as its request says
        #expect(first.process.terminationReason == .uncaughtSignal)
        #expect(first.process.terminationStatus == SIGKILL)

        let stream = try #require(try await streamed.first)
        let acked = stream.acked ?? []
        #expect(acked.count >= 3, "\(stream)")
        #expect(!(stream.refused ?? []).isEmpty, "the stream ended by the kill: \(stream)")

        let atKill = try await dumpDatabase(db)
        let unfinished = gids.filter { !["succeed", "failed"].contains(atKill.globals[$0]?.status ?? "") }
        #expect(!unfinished.isEmpty, "the kill should find sagas in flight")
        let phases = Dictionary(grouping: unfinished) { atKill.globals[$0]?.status ?? "missing" }.mapValues(\.count)
        for gid in gids + acked {
            #expect(atKill.globals[gid] != nil, "acknowledged \(gid) is missing from the store after the kill")
        }

        // Restart on the same file: everything finishes.
        let second = try await DtmProcess.start(binary: binary, store: db, logURL: dir.appendingPathComponent("dtm-2.log"))
        var dump = atKill
        do {
            try await waitUntil("every transaction final after the restart", timeout: .seconds(45), poll: .milliseconds(300)) {
                dump = try await dumpDatabase(db)
                return dump.globals.values.allSatisfy { $0.status == "succeed" || $0.status == "failed" }
            }
        } catch {
            try await second.stop(SIGKILL)
            Issue.record("restarted dtm log:\n\(second.log.suffix(4000))")
            throw error
        }
        try await second.stop(SIGTERM)
        #expect(second.process.terminationStatus == 0, "\(second.log.suffix(2000))")
        dump = try await dumpDatabase(db)  // what the file holds once no coordinator runs

        // Final states and branch rows, as stored.
        #expect(dump.orphanBranches == 0)
        for (index, gid) in gids.enumerated() {
            let trans = try #require(dump.globals[gid], "\(gid) lost")
            if rollsBack(index) {
                #expect(trans.status == "failed", "\(gid)")
                #expect(trans.branchStatuses == ["succeed", "succeed", "succeed", "failed"], "\(gid)")
                // As DTM: killed between storing the failed action and storing `aborting`, the
                // busi's message is gone and the restarted pass says "fail message lost".
                #expect(trans.rollbackReason.contains("reason:TransIn insufficient balance")
                        || trans.rollbackReason == "fail message lost", "\(gid): \(trans.rollbackReason)")
            } else {
                #expect(trans.status == "succeed", "\(gid)")
                #expect(trans.branchStatuses == ["prepared", "succeed", "prepared", "succeed"], "\(gid)")
            }
        }
        for gid in acked {
            #expect(dump.globals[gid]?.status == "succeed", "acknowledged \(gid): \(String(describing: dump.globals[gid]))")
        }

        // Branch calls: every needed one made (at least once), no action after compensation began.
        let calls = busi.calls(prefix: prefix)
        var resumedAfterRestart = 0
        for (index, gid) in gids.enumerated() {
            let mine = calls[gid] ?? []
            let methods = Set(mine.map(\.method))
            if mine.contains(where: { $0.t > killedAt }) { resumedAfterRestart += 1 }
            if rollsBack(index) {
                #expect(methods == ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"], "\(gid): \(mine)")
                let lastAction = mine.filter { $0.op == "action" }.map(\.t).max() ?? 0
                let firstCompensation = mine.filter { $0.op == "compensate" }.map(\.t).min() ?? 0
                #expect(lastAction < firstCompensation, "\(gid): an action after compensation began: \(mine)")
                let firstIn = mine.first { $0.method == "TransInRevert" }?.t ?? .infinity
                let firstOut = mine.first { $0.method == "TransOutRevert" }?.t ?? 0
                #expect(firstIn < firstOut, "\(gid): compensations out of order: \(mine)")
            } else {
                #expect(methods == ["TransOut", "TransIn"], "\(gid): \(mine)")
            }
            let firstIn = mine.first { $0.method == "TransIn" && $0.op == "action" }?.t ?? 0
            let lastOut = mine.filter { $0.method == "TransOut" }.map(\.t).max() ?? .infinity
            #expect(lastOut < firstIn, "\(gid): step 2 started before step 1 was done: \(mine)")
        }
        #expect(resumedAfterRestart >= 1, "the restarted coordinator resumed no saga")
        print("crash test: \(unfinished.count) of \(gids.count) slow and held sagas unfinished at the kill \(phases), \(resumedAfterRestart) "
              + "called again after it; \(acked.count) streamed sagas acknowledged, \(dump.globals.count) transactions stored")
        for gid in acked {
            #expect(Set((calls[gid] ?? []).map(\.method)) == ["TransOut", "TransIn"], "\(gid)")
        }
    }
}
