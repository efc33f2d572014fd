import DtmClient
import DtmTestSupport
import Foundation
import Testing

/// Every SDK call against an in-process coordinator, with the bank's branches written with the
/// SDK, once over gRPC and once over HTTP (coordinator API and branch calls alike).
@Suite struct TransactionTests {
    @Test(arguments: Transport.allCases)
    func newGidIsFresh(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let first = try await f.client.newGid()
            let second = try await f.client.newGid()
            #expect(!first.isEmpty && first != second)
        }
    }

    /// Both actions succeed; with wait_result, submit returns once the saga has finished.
    @Test(arguments: Transport.allCases)
    func sagaSucceeds(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("saga-ok")
            var saga = Saga(f.client, gid: gid, options: TransOptions(waitResult: true))
            saga.add(action: f.url("TransOut"), compensate: f.url("TransOutRevert"), payload: f.payload())
            saga.add(action: f.url("TransIn"), compensate: f.url("TransInRevert"), payload: f.payload())
            try await saga.submit()
            #expect(try await f.global(gid)?.status == "succeed")
            #expect(try await f.bank.balances() == [70, 130])
            #expect(f.bank.calls(gid) == ["TransOut/action", "TransIn/action"])
        }
    }

    /// TransIn answers FAILURE: the coordinator compensates both steps; TransIn's compensation
    /// (called although its action failed) is a null compensation for the barrier, so the
    /// balances end where they started. With wait_result, submit throws the FAILURE.
    @Test(arguments: Transport.allCases)
    func sagaFailureIsCompensated(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("saga-fail")
            var saga = Saga(f.client, gid: gid, options: TransOptions(waitResult: true))
            saga.add(action: f.url("TransOut"), compensate: f.url("TransOutRevert"), payload: f.payload())
            saga.add(action: f.url("TransIn"), compensate: f.url("TransInRevert"),
                     payload: f.payload(Transfer(transInResult: "FAILURE")))
            await #expect(throws: DtmClientError.self) { try await saga.submit() }
            let final = try await f.waitFinal(gid)
            #expect(final.status == "failed")
            #expect(final.rollbackReason.contains("insufficient balance"), "\(final.rollbackReason)")
            #expect(try await f.bank.balances() == [100, 100])
            // A compensation may run twice (DTM calls at least once: an answer lost under load is
            // retried); the barrier makes the second a no-op, as the balances show. The order holds.
            #expect(f.bank.calls(gid).collapsingRepeats == ["TransOut/action", "TransIn/action",
                                                             "TransInRevert/compensate", "TransOutRevert/compensate"])
        }
    }

    /// A concurrent saga with orders: step 2 waits for steps 0 and 1; options travel with it.
    @Test(arguments: Transport.allCases)
    func concurrentSagaWithOrders(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("saga-conc")
            var saga = Saga(f.client, gid: gid, options: TransOptions(
                timeoutToFail: 60, retryInterval: 2, requestTimeout: 20, retryLimit: 3,
                branchHeaders: ["x-test": "sdk"]))
            saga.concurrent = true
            saga.add(action: f.url("TransOut"), compensate: f.url("TransOutRevert"), payload: f.payload(Transfer(amount: 10)))
            saga.add(action: f.url("TransOut"), compensate: f.url("TransOutRevert"), payload: f.payload(Transfer(amount: 20)))
            saga.add(action: f.url("TransIn"), compensate: f.url("TransInRevert"), payload: f.payload(Transfer(amount: 30)))
            saga.addBranchOrder(2, after: [0, 1])
            try await saga.submit()
            #expect(try await f.waitFinal(gid).status == "succeed")
            let global = try #require(try await f.global(gid))
            #expect(global.retryLimit == 3 && global.timeoutToFail == 60)
            #expect(global.branchHeaders == ["x-test": "sdk"])
            #expect(try await f.bank.balances() == [70, 130])
            #expect(f.bank.calls(gid).last == "TransIn/action", "step 2 runs after steps 0 and 1")
        }
    }

    /// doAndSubmit: the local debit and the msg commit together; the coordinator then credits.
    @Test(arguments: Transport.allCases)
    func msgDoAndSubmit(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("msg-ok")
            var msg = Msg(f.client, gid: gid)
            msg.add(action: f.url("TransIn"), payload: f.payload())
            let debited = try await msg.doAndSubmit(queryPrepared: f.url("QueryPrepared"), database: f.bank.database) { transaction in
                try transaction.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
            }
            #expect(debited == 1)
            #expect(try await f.waitFinal(gid).status == "succeed")
            #expect(try await f.bank.balances() == [70, 130])
        }
    }

    /// A local transaction that answers FAILURE rolls back and aborts the msg: nothing moves.
    @Test(arguments: Transport.allCases)
    func msgDoAndSubmitFailureAborts(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("msg-fail")
            var msg = Msg(f.client, gid: gid)
            msg.add(action: f.url("TransIn"), payload: f.payload())
            await #expect(throws: DtmClientError.failure("no money")) {
                try await msg.doAndSubmit(queryPrepared: f.url("QueryPrepared"), database: f.bank.database) { transaction in
                    try transaction.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
                    throw DtmClientError.failure("no money")
                }
            }
            let stored = try await f.global(gid)
            #expect(stored?.status == "failed")
            #expect(try await f.bank.balances() == [100, 100])
            #expect(f.bank.calls(gid).isEmpty)
        }
    }

    /// The process dies between its local commit and submit: the coordinator's back-check finds
    /// the committed barrier and delivers the msg. A msg whose local transaction never ran is
    /// failed by the back-check, and the barrier row it leaves stops a late local transaction.
    @Test(arguments: Transport.allCases)
    func msgBackCheckDecides(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let committed = uniqueGid("msg-committed")
            var msg = Msg(f.client, gid: committed, options: TransOptions(timeoutToFail: 1))
            msg.add(action: f.url("TransIn"), payload: f.payload())
            try await msg.prepare(queryPrepared: f.url("QueryPrepared"))
            var barrier = BranchBarrier(try TransInfo(transType: "msg", gid: committed, branchID: "00", op: "msg"))
            try await barrier.call(f.bank.database) { transaction in
                try transaction.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
            }
            #expect(try await f.waitFinal(committed).status == "succeed")
            #expect(try await f.bank.balances() == [70, 130])

            let abandoned = uniqueGid("msg-abandoned")
            var lost = Msg(f.client, gid: abandoned, options: TransOptions(timeoutToFail: 1))
            lost.add(action: f.url("TransIn"), payload: f.payload())
            try await lost.prepare(queryPrepared: f.url("QueryPrepared"))
            #expect(try await f.waitFinal(abandoned).status == "failed")
            var late = BranchBarrier(try TransInfo(transType: "msg", gid: abandoned, branchID: "00", op: "msg"))
            await #expect(throws: DtmClientError.duplicated) {
                try await late.call(f.bank.database) { transaction in
                    try transaction.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
                }
            }
            #expect(try await f.bank.balances() == [70, 130])
        }
    }

    /// doAndSubmit after an error that is not FAILURE asks the back-check, as DTM's DoAndSubmit
    /// does, and acts on its answer before returning. Here the local commit went through but its
    /// answer was lost: the back-check finds the barrier committed and the msg is submitted at
    /// once. The coordinator's own back-check waits for timeout_to_fail (600 s here), so the
    /// status seen right after doAndSubmit is the SDK's doing.
    @Test(arguments: Transport.allCases)
    func msgDoAndSubmitSubmitsWhenTheBackCheckFindsTheCommit(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let committed = uniqueGid("msg-lost-answer")
            var msg = Msg(f.client, gid: committed)
            msg.add(action: f.url("TransIn"), payload: f.payload())
            await #expect(throws: DtmClientError.transport("the commit's answer was lost")) {
                try await msg.doAndSubmit(queryPrepared: f.url("QueryPrepared"),
                                          database: CommitThenLoseAnswer(inner: f.bank.database)) { transaction in
                    try transaction.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
                }
            }
            let submitted = try await f.global(committed)?.status
            #expect(submitted == "submitted" || submitted == "succeed", "\(submitted ?? "missing")")
            #expect(try await f.waitFinal(committed).status == "succeed")
            #expect(try await f.bank.balances() == [70, 130])
            #expect(f.bank.calls(committed) == ["QueryPrepared/msg", "TransIn/action"])
        }
    }

    /// As above, but the local transaction failed with a database error: the back-check rolls
    /// the barrier back and the msg is aborted before doAndSubmit returns.
    @Test(arguments: Transport.allCases)
    func msgDoAndSubmitAbortsWhenTheBackCheckFindsNoCommit(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let failed = uniqueGid("msg-db-error")
            var broken = Msg(f.client, gid: failed)
            broken.add(action: f.url("TransIn"), payload: f.payload())
            await #expect(throws: DtmClientError.database("disk I/O error")) {
                try await broken.doAndSubmit(queryPrepared: f.url("QueryPrepared"), database: f.bank.database) { transaction in
                    try transaction.execute("UPDATE account SET balance = balance - 30 WHERE id = 1")
                    throw DtmClientError.database("disk I/O error")
                }
            }
            let stored = try await f.global(failed)
            #expect(stored?.status == "failed")
            #expect(try await f.bank.balances() == [100, 100])
            #expect(f.bank.calls(failed) == ["QueryPrepared/msg"])
        }
    }

    /// TCC: both tries succeed, the coordinator confirms both.
    @Test(arguments: Transport.allCases)
    func tccConfirms(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("tcc-ok")
            try await f.client.tccGlobalTransaction(gid: gid) { tcc in
                try await tcc.callBranch(f.payload(), try: f.url("TransOut"), confirm: f.url("Confirm"),
                                         cancel: f.url("TransOutRevert"))
                try await tcc.callBranch(f.payload(), try: f.url("TransIn"), confirm: f.url("Confirm"),
                                         cancel: f.url("TransInRevert"))
            }
            #expect(try await f.waitFinal(gid).status == "succeed")
            #expect(try await f.branchStatuses(gid) == ["prepared", "succeed", "prepared", "succeed"])
            #expect(try await f.bank.balances() == [70, 130])
        }
    }

    /// TCC: the second try answers FAILURE; the scope aborts and the coordinator cancels both —
    /// the second cancel is a null compensation for the barrier.
    @Test(arguments: Transport.allCases)
    func tccTryFailureCancels(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("tcc-fail")
            await #expect(throws: DtmClientError.self) {
                try await f.client.tccGlobalTransaction(gid: gid) { tcc in
                    try await tcc.callBranch(f.payload(), try: f.url("TransOut"), confirm: f.url("Confirm"),
                                             cancel: f.url("TransOutRevert"))
                    try await tcc.callBranch(f.payload(Transfer(transInResult: "FAILURE")), try: f.url("TransIn"),
                                             confirm: f.url("Confirm"), cancel: f.url("TransInRevert"))
                }
            }
            let final = try await f.waitFinal(gid)
            #expect(final.status == "failed")
            #expect(try await f.branchStatuses(gid) == ["succeed", "prepared", "succeed", "prepared"])
            #expect(try await f.bank.balances() == [100, 100])
        }
    }

    /// XA: both actions prepare and register; the coordinator commits both at their phase2_url.
    @Test(arguments: Transport.allCases)
    func xaCommits(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("xa-ok")
            try await f.client.xaGlobalTransaction(gid: gid) { xa in
                try await xa.callBranch(f.payload(), url: f.url("Xa"))
                try await xa.callBranch(f.payload(), url: f.url("Xa"))
            }
            let final = try await f.waitFinal(gid)
            #expect(final.status == "succeed")
            #expect(try await f.branchStatuses(gid) == ["prepared", "succeed", "prepared", "succeed"])
            #expect(f.bank.calls(gid) == ["Xa/action", "Xa/action", "Xa/commit", "Xa/commit"])
        }
    }

    /// XA: the second action refuses before registering; the scope aborts and the coordinator
    /// rolls back the first branch only.
    @Test(arguments: Transport.allCases)
    func xaRollsBack(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("xa-fail")
            await #expect(throws: DtmClientError.failure("Xa refused")) {
                try await f.client.xaGlobalTransaction(gid: gid) { xa in
                    try await xa.callBranch(f.payload(), url: f.url("Xa"))
                    try await xa.callBranch(f.payload(Transfer(transInResult: "FAILURE")), url: f.url("Xa"))
                }
            }
            let final = try await f.waitFinal(gid)
            #expect(final.status == "failed")
            #expect(try await f.branchStatuses(gid) == ["succeed", "prepared"])
            #expect(f.bank.calls(gid) == ["Xa/action", "Xa/action", "Xa/rollback"])
        }
    }

    /// Coordinator refusals come back typed: aborting a finished saga is a FAILURE.
    @Test(arguments: Transport.allCases)
    func coordinatorFailureIsTyped(_ transport: Transport) async throws {
        try await Fixture.with(transport) { f in
            let gid = uniqueGid("refused")
            var saga = Saga(f.client, gid: gid, options: TransOptions(waitResult: true))
            saga.add(action: f.url("TransOut"), compensate: f.url("TransOutRevert"), payload: f.payload())
            try await saga.submit()
            await #expect {
                try await f.client.abort(DtmRequest(gid: gid, transType: "saga"))
            } throws: { error in
                (error as? DtmClientError)?.isFailure == true
            }
        }
    }
}

/// A database whose commits go through but whose answer is lost on the way back (a connection
/// cut right after COMMIT): the caller sees an error although the transaction committed.
struct CommitThenLoseAnswer<Inner: BarrierDatabase>: BarrierDatabase {
    typealias Transaction = Inner.Transaction
    let inner: Inner

    func withTransaction<T: Sendable>(_ body: (Inner.Transaction) async throws -> T) async throws -> T {
        _ = try await inner.withTransaction(body)
        throw DtmClientError.transport("the commit's answer was lost")
    }
}

extension Array where Element: Equatable {
    /// Runs of the same element as one: `[a, b, b, c]` → `[a, b, c]`.
    var collapsingRepeats: [Element] {
        reduce(into: []) { result, element in if result.last != element { result.append(element) } }
    }
}
