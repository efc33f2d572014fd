import DtmSync
import Foundation
import Testing
@testable import DtmEngine

/// A pass runs a lone call in its own task when the caller ends its calls on its own and the
/// pass deadline is far enough off; otherwise each call gets a child task the deadline can
/// abandon (`TransactionDriver.process`).
@Suite struct InlineCallTests {
    /// Notes the task each call ran in (by its hash: a live task's address is its own).
    struct TaskNotingCaller: BranchCaller {
        let endsCallsWithinTimeout: Bool
        /// How long the call of a branch id takes.
        var delays: [String: Duration] = [:]
        let tasks = Locked<[String: Int]>([:])

        func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
            let here = withUnsafeCurrentTask { $0?.hashValue ?? 0 }
            tasks.withLock { $0["\(call.branchID)/\(call.op)"] = here }
            if let delay = delays[call.branchID] { try? await Task.sleep(for: delay) }
            return .success
        }

        func task(of call: String) -> Int? { tasks.withLock { $0[call] } }
    }

    /// Submits `request` and runs its first pass in this task; returns this task's hash.
    func firstPass(_ request: TransRequest, caller: TaskNotingCaller,
                   config: EngineConfig = EngineConfig()) async throws -> (task: Int, report: PassReport) {
        let store = InMemoryStore()
        let driver = TransactionDriver(store: store, caller: caller, config: config, owner: "inline-test")
        try await Coordinator(driver: driver, schedule: { _ in }).submit(request)
        let here = withUnsafeCurrentTask { $0?.hashValue ?? 0 }
        let report = try #require(try await driver.process(gid: request.gid))
        return (here, report)
    }

    @Test func aSequentialSagasCallsRunInThePassTask() async throws {
        let caller = TaskNotingCaller(endsCallsWithinTimeout: true)
        let (pass, report) = try await firstPass(sagaRequest("inline"), caller: caller)
        #expect(report.global.status == .succeed)
        #expect(report.answers.map(\.result) == [.success, .success])
        #expect(report.branches.filter { $0.op == .action }.allSatisfy { $0.status == .succeed })
        #expect(caller.task(of: "01/action") == pass)
        #expect(caller.task(of: "02/action") == pass)
    }

    /// A caller that does not say its calls end on their own (a test double that may hang) gets
    /// a child task per call, which the pass deadline can abandon.
    @Test func anUndeclaredCallerGetsAChildTaskPerCall() async throws {
        let caller = TaskNotingCaller(endsCallsWithinTimeout: false)
        let (pass, report) = try await firstPass(sagaRequest("child"), caller: caller)
        #expect(report.global.status == .succeed)
        let first = try #require(caller.task(of: "01/action"))
        let second = try #require(caller.task(of: "02/action"))
        #expect(first != pass && second != pass)
    }

    @Test func concurrentCallsRunInChildTasks() async throws {
        let caller = TaskNotingCaller(endsCallsWithinTimeout: true)
        let (pass, report) = try await firstPass(sagaRequest("concurrent", customData: #"{"concurrent":true}"#),
                                                 caller: caller)
        #expect(report.global.status == .succeed)
        let first = try #require(caller.task(of: "01/action"))
        let second = try #require(caller.task(of: "02/action"))
        // (A finished child's address may be reused by the next: only the pass's task is unique.)
        #expect(first != pass && second != pass)
    }

    /// The transaction's request timeout is 1 s, so a call may take 2 s (timeout + 1 s); the pass
    /// deadline is 4 s (`maxPassDuration`). The first call starts with about 4 s left and runs
    /// in the pass's task; it takes 2.3 s, so the second starts with less than 2 s left and
    /// goes to a child task, which the deadline can abandon. (DTM's rule that a saga pass starts
    /// no call after the configured request timeout + 2 s is kept out of the way: 22 s.)
    @Test func aCallNearThePassDeadlineGetsAChildTask() async throws {
        let caller = TaskNotingCaller(endsCallsWithinTimeout: true, delays: ["01": .milliseconds(2300)])
        let config = EngineConfig(requestTimeout: 20, maxPassDuration: 4)
        var options = TransOptions()
        options.requestTimeout = 1
        let (pass, report) = try await firstPass(sagaRequest("late", options: options), caller: caller, config: config)
        #expect(caller.task(of: "01/action") == pass)
        let second = try #require(caller.task(of: "02/action"))
        #expect(second != pass)
        // On a starved machine the second answer may come after the deadline: the pass then
        // leaves it to the next one.
        #expect(report.global.status == .succeed || report.deadlineExceeded)
    }
}
