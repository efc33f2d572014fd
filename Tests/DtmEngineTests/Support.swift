import Foundation
import Testing
@testable import DtmEngine
import DtmTestSupport

/// A clock tests move by hand; passes never sleep.
final class FakeClock: DtmClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date

    init(_ start: Date = Date(timeIntervalSince1970: 1_700_000_000)) {
        current = start
    }

    func now() -> Date {
        lock.withLock { current }
    }

    func advance(_ seconds: Double) {
        lock.withLock { current = current.addingTimeInterval(seconds) }
    }

    func set(_ date: Date) {
        lock.withLock { current = max(current, date) }
    }
}

/// One call as the fake transport saw it.
struct SeenCall: Sendable, Equatable, CustomStringConvertible {
    var gid: String
    var kind: BranchCall.Kind
    var branchID: String
    var op: String
    var url: String
    var payload: [UInt8]
    var description: String { "\(branchID)/\(op)" }
}

/// A BranchCaller that answers from per-(branch, op) scripts (then success), records every
/// call, and checks at each call that the stored status calls for it. It declares that its calls
/// end on their own (as the server's caller does), so lone calls run in the pass's task; with
/// `endsCalls: false` every call runs in a child task.
actor ScriptedCaller: BranchCaller {
    nonisolated let endsCallsWithinTimeout: Bool
    private var scripts: [CallKey: [BranchResult]] = [:]
    private(set) var seen: [SeenCall] = []
    /// Calls the stored state did not call for (should stay empty).
    private(set) var violations: [String] = []
    private var inFlightGids: [String: Int] = [:]
    /// Two calls of one transaction running at once from different passes would show here.
    private(set) var maxConcurrentPerGid = 0
    private var store: InMemoryStore?
    private var hook: (@Sendable (BranchCall, GlobalTransaction) async -> Void)?
    /// Calls wait for each other so concurrent launches really overlap.
    private var holdEachCall = false

    init(endsCalls: Bool = true) { endsCallsWithinTimeout = endsCalls }

    func attach(_ store: InMemoryStore) { self.store = store }

    func script(_ branchID: String, _ op: BranchOp, _ results: BranchResult...) {
        scripts[CallKey(branchID, op), default: []] += results
    }

    func onCall(_ hook: @escaping @Sendable (BranchCall, GlobalTransaction) async -> Void) {
        self.hook = hook
    }

    func yieldInsideCalls() { holdEachCall = true }

    var log: [String] { seen.map(\.description) }

    nonisolated func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        await begin(call, global)
        if await holdEachCall { await Task.yield() }
        if let hook = await hook { await hook(call, global) }
        return await end(call, global)
    }

    private func begin(_ call: BranchCall, _ global: GlobalTransaction) async {
        seen.append(SeenCall(gid: global.gid, kind: call.kind, branchID: call.branchID, op: call.op.rawValue,
                             url: call.url, payload: call.payload))
        inFlightGids[global.gid, default: 0] += 1
        maxConcurrentPerGid = max(maxConcurrentPerGid, inFlightGids[global.gid] ?? 0)
        if let store, let stored = await store.findGlobal(gid: global.gid),
           !Self.allowed(call, transType: stored.transType).contains(stored.status) {
            violations.append("\(global.gid) \(call.branchID)/\(call.op) while \(stored.status)")
        }
    }

    private func end(_ call: BranchCall, _ global: GlobalTransaction) -> BranchResult {
        inFlightGids[global.gid, default: 1] -= 1
        let key = call.key
        guard var queue = scripts[key], !queue.isEmpty else { return .success }
        let result = queue.removeFirst()
        scripts[key] = queue
        return result
    }

    /// The stored statuses under which each kind of call may be made.
    static func allowed(_ call: BranchCall, transType: TransType) -> Set<GlobalStatus> {
        switch call.kind {
        case .backCheck, .workflowResume: return [.prepared]
        case .branch:
            switch call.op {
            case .action, .confirm, .commit: return [.submitted]
            case .compensate, .cancel, .rollback: return [.aborting]
            default: return []
            }
        }
    }
}

/// Collects values from concurrent code.
actor Recorder<Value: Sendable> {
    private(set) var values: [Value] = []
    func append(_ value: Value) { values.append(value) }
    func clear() { values.removeAll() }
}

/// Store + clock + fake transport + coordinator + cron, wired as the server will.
struct Harness {
    let store = InMemoryStore()
    let clock = FakeClock()
    let caller: ScriptedCaller
    let config: EngineConfig
    let driver: TransactionDriver
    let cron: CronLoop
    let coordinator: Coordinator

    init(config: EngineConfig = EngineConfig(), owner: String = "test-owner", endsCalls: Bool = true) {
        self.config = config
        caller = ScriptedCaller(endsCalls: endsCalls)
        driver = TransactionDriver(store: store, caller: caller, clock: clock, config: config, owner: owner)
        let cron = CronLoop(driver: driver)
        self.cron = cron
        coordinator = Coordinator(driver: driver, schedule: { cron.enqueue($0) })
    }

    func start() async { await caller.attach(store) }

    /// Runs what requests handed over plus whatever is due now.
    @discardableResult
    func process() async -> [PassReport] { await cron.runOnce() }

    /// Moves the clock forward, then runs one cron round.
    @discardableResult
    func cron(after seconds: Double) async -> [PassReport] {
        clock.advance(seconds)
        return await cron.runOnce()
    }

    /// Moves the clock to the transaction's next_cron_time, then runs one cron round.
    @discardableResult
    func cronWhenDue(_ gid: String) async -> [PassReport] {
        if let global = await store.findGlobal(gid: gid) { clock.set(global.nextCronTime) }
        return await cron.runOnce()
    }

    func global(_ gid: String) async -> GlobalTransaction {
        await store.findGlobal(gid: gid)!
    }

    func statuses(_ gid: String) async -> [BranchStatus] {
        await store.findBranches(gid: gid).map(\.status)
    }

    func log() async -> [String] { await caller.log }

    /// Another coordinator over the same store, clock and caller.
    func coordinator(named owner: String, maxConcurrent: Int = 16) -> CronLoop {
        CronLoop(driver: TransactionDriver(store: store, caller: caller, clock: clock, config: config, owner: owner),
                 maxConcurrent: maxConcurrent)
    }

    func violations() async -> [String] { await caller.violations }

    /// Elapsed seconds from the transaction's creation to its next cron time.
    func nextCronOffset(_ gid: String) async -> Double {
        let global = await global(gid)
        return global.nextCronTime.timeIntervalSince(clock.now())
    }
}

/// `n` saga steps: action `http://busi/a<i>`, compensate `http://busi/c<i>`, payload `p<i>`.
func sagaRequest(_ gid: String, steps: Int = 2, customData: String = "",
                 options: TransOptions = TransOptions()) -> TransRequest {
    TransRequest(gid: gid, transType: "saga",
                 steps: (1..<(steps + 1)).map { ["action": "http://busi/a\($0)", "compensate": "http://busi/c\($0)"] },
                 payloads: (1..<(steps + 1)).map { Array("p\($0)".utf8) },
                 customData: customData, options: options)
}

/// `n` msg steps: action `http://busi/m<i>`, back-check `http://busi/query`.
func msgRequest(_ gid: String, steps: Int = 2, customData: String = "",
                options: TransOptions = TransOptions()) -> TransRequest {
    TransRequest(gid: gid, transType: "msg",
                 steps: (1..<(steps + 1)).map { ["action": "http://busi/m\($0)"] },
                 payloads: (1..<(steps + 1)).map { Array("m\($0)".utf8) },
                 queryPrepared: "http://busi/query", customData: customData, options: options)
}

/// Branch ids and ops of the launched calls, in launch order.
func launched(_ reports: [PassReport]) -> [String] {
    reports.flatMap { $0.calls.map { "\($0.branchID)/\($0.op)" } }
}

/// Expects `body` to throw exactly `expected`.
func expectError(_ expected: DtmError, sourceLocation: SourceLocation = #_sourceLocation,
                 _ body: () async throws -> Void) async {
    let error = await caught(body)
    #expect(error == expected, sourceLocation: sourceLocation)
}
