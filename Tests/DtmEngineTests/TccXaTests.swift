import Foundation
import Testing
@testable import DtmEngine

private let p = BranchStatus.prepared
private let s = BranchStatus.succeed

extension Harness {
    /// prepare + registerBranch for `count` tcc branches ("01", "02", …).
    func prepareTcc(_ gid: String, branches count: Int, options: TransOptions = TransOptions()) async throws {
        try await coordinator.prepare(TransRequest(gid: gid, transType: "tcc", options: options))
        for index in 1..<(count + 1) {
            try await coordinator.registerBranch(BranchRegistration(
                gid: gid, transType: "tcc", branchID: stepBranchID(index),
                data: ["confirm": "http://busi/confirm\(index)", "cancel": "http://busi/cancel\(index)",
                       "data": "{\"amount\":\(index)}"]))
        }
    }

    /// prepare + registerBranch for `count` xa branches.
    func prepareXa(_ gid: String, branches count: Int, options: TransOptions = TransOptions()) async throws {
        try await coordinator.prepare(TransRequest(gid: gid, transType: "xa", options: options))
        for index in 1..<(count + 1) {
            try await coordinator.registerBranch(BranchRegistration(
                gid: gid, transType: "xa", branchID: stepBranchID(index), data: ["url": "http://busi/xa\(index)"]))
        }
    }
}

@Suite("TCC and XA processing (spec 3.6, 3.8, DTM tcc/xa tests)")
struct TccXaTests {
    @Test("registerBranch rows: tcc cancel then confirm, xa rollback then commit")
    func registrationRows() async throws {
        let h = Harness()
        try await h.prepareTcc("rows-tcc", branches: 1)
        let tcc = await h.store.findBranches(gid: "rows-tcc")
        #expect(tcc.map(\.op) == [.cancel, .confirm])
        #expect(tcc.map(\.url) == ["http://busi/cancel1", "http://busi/confirm1"])
        #expect(tcc.allSatisfy { $0.binData == Array("{\"amount\":1}".utf8) && $0.status == .prepared })
        try await h.prepareXa("rows-xa", branches: 1)
        let xa = await h.store.findBranches(gid: "rows-xa")
        #expect(xa.map(\.op) == [.rollback, .commit])
        #expect(xa.map(\.url) == ["http://busi/xa1", "http://busi/xa1"])
        // gRPC: BusiPayload wins over data["data"].
        try await h.coordinator.registerBranch(BranchRegistration(
            gid: "rows-xa", transType: "xa", branchID: "02", data: ["url": "http://busi/u", "data": "ignored"], payload: [7]))
        #expect(await h.store.findBranches(gid: "rows-xa").last?.binData == [7])
    }

    @Test("TestTccNormal: confirms from the last registered to the first")
    func tccNormal() async throws {
        let h = Harness()
        await h.start()
        try await h.prepareTcc("tcc-ok", branches: 2)
        try await h.coordinator.submit(TransRequest(gid: "tcc-ok", transType: "tcc"))
        #expect(launched(await h.process()) == ["02/confirm", "01/confirm"])
        #expect(await h.global("tcc-ok").status == .succeed)
        #expect(await h.statuses("tcc-ok") == [p, s, p, s])
        #expect(await h.violations() == [])
    }

    @Test("TestTccRollback: abort stores the reason, cancels last to first, ONGOING waits for the cron")
    func tccRollback() async throws {
        let h = Harness()
        await h.start()
        try await h.prepareTcc("tcc-rb", branches: 2)
        await h.caller.script("01", .cancel, .ongoing)
        try await h.coordinator.abort(TransRequest(gid: "tcc-rb", transType: "tcc",
                                                   rollbackReason: "reason:Insufficient balance FAILURE"))
        #expect(launched(await h.process()) == ["02/cancel", "01/cancel"])
        #expect(await h.global("tcc-rb").status == .aborting)
        #expect(launched(await h.cronWhenDue("tcc-rb")) == ["01/cancel"])
        #expect(await h.global("tcc-rb").status == .failed)
        #expect(await h.statuses("tcc-rb") == [s, p, s, p])
        #expect(await h.global("tcc-rb").rollbackReason.contains("FAILURE"))
        #expect(await h.violations() == [])
    }

    @Test("TestTccTimeout: the cron aborts a prepared tcc after 35 s; later registration is refused")
    func tccTimeout() async throws {
        let h = Harness()
        await h.start()
        try await h.prepareTcc("tcc-to", branches: 1)
        #expect(launched(await h.cron(after: 20)) == [])
        #expect(await h.global("tcc-to").status == .prepared)
        #expect(launched(await h.cron(after: 280)) == ["01/cancel"])
        #expect(await h.global("tcc-to").status == .failed)
        #expect(await h.global("tcc-to").rollbackReason == "Timeout after 35 seconds")
        #expect(await h.statuses("tcc-to") == [s, p])
        await expectError(.failure("no trans with gid: tcc-to status: prepared found FAILURE")) {
            try await h.coordinator.registerBranch(BranchRegistration(
                gid: "tcc-to", transType: "tcc", branchID: "02", data: ["confirm": "http://busi/c", "cancel": "http://busi/x"]))
        }
    }

    @Test("confirm FAILURE is retried, and stops the sequence")
    func confirmFailureRetried() async throws {
        let h = Harness()
        await h.start()
        try await h.prepareTcc("tcc-cf", branches: 3)
        await h.caller.script("02", .confirm, .failure(message: "no"))
        try await h.coordinator.submit(TransRequest(gid: "tcc-cf", transType: "tcc"))
        #expect(launched(await h.process()) == ["03/confirm", "02/confirm"])
        #expect(await h.global("tcc-cf").status == .submitted)
        #expect(await h.global("tcc-cf").nextCronInterval == 20)
        #expect(launched(await h.cronWhenDue("tcc-cf")) == ["02/confirm", "01/confirm"])
        #expect(await h.global("tcc-cf").status == .succeed)
    }

    @Test("TestXaNormal: commits first to last")
    func xaNormal() async throws {
        let h = Harness()
        await h.start()
        try await h.prepareXa("xa-ok", branches: 2)
        try await h.coordinator.submit(TransRequest(gid: "xa-ok", transType: "xa"))
        #expect(launched(await h.process()) == ["01/commit", "02/commit"])
        #expect(await h.statuses("xa-ok") == [p, s, p, s])
        #expect(await h.global("xa-ok").status == .succeed)
    }

    @Test("TestXaRollback: abort rolls back the registered branch")
    func xaRollback() async throws {
        let h = Harness()
        await h.start()
        try await h.prepareXa("xa-rb", branches: 1)
        try await h.coordinator.abort(TransRequest(gid: "xa-rb", transType: "xa"))
        #expect(launched(await h.process()) == ["01/rollback"])
        #expect(await h.statuses("xa-rb") == [s, p])
        #expect(await h.global("xa-rb").status == .failed)
    }

    @Test("TestXaTimeout: no branches, aborted by the cron, no calls")
    func xaTimeout() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(TransRequest(gid: "xa-to", transType: "xa"))
        await h.cron(after: 300)
        #expect(await h.global("xa-to").status == .failed)
        #expect(await h.statuses("xa-to") == [])
        #expect(await h.global("xa-to").rollbackReason.wholeMatch(of: /Timeout after \d+ seconds/) != nil)
        #expect(await h.caller.seen.isEmpty)
    }

    @Test("TestXaNotTimeout: early cron does nothing; commit ONGOING then the cron finishes")
    func xaNotTimeout() async throws {
        let h = Harness()
        await h.start()
        try await h.coordinator.prepare(TransRequest(gid: "xa-nt", transType: "xa"))
        await h.cron(after: 10)
        #expect(await h.global("xa-nt").status == .prepared)
        try await h.coordinator.registerBranch(BranchRegistration(
            gid: "xa-nt", transType: "xa", branchID: "01", data: ["url": "http://busi/xa"]))
        await h.caller.script("01", .commit, .ongoing)
        try await h.coordinator.submit(TransRequest(gid: "xa-nt", transType: "xa"))
        await h.process()
        #expect(await h.global("xa-nt").status == .submitted)
        #expect(await h.global("xa-nt").nextCronInterval == 10)
        await h.cronWhenDue("xa-nt")
        #expect(await h.global("xa-nt").status == .succeed)
        #expect(await h.statuses("xa-nt") == [p, s])
    }

    @Test("a short timeout_to_fail becomes the retry interval and aborts on time")
    func shortTimeout() async throws {
        let h = Harness()
        await h.start()
        try await h.prepareTcc("tcc-short", branches: 1, options: TransOptions(timeoutToFail: 5))
        #expect(await h.global("tcc-short").nextCronInterval == 5)
        await h.cronWhenDue("tcc-short")
        #expect(await h.global("tcc-short").status == .failed)
        #expect(await h.global("tcc-short").rollbackReason == "Timeout after 5 seconds")
    }
}
