import Foundation

/// How one processing pass ended.
public struct PassReport: Sendable {
    /// The transaction as this pass last wrote it (or as it was given, if nothing was written).
    public var global: GlobalTransaction
    public var branches: [BranchRecord]
    /// Every call started, in launch order (calls of one launch are concurrent).
    public var calls: [BranchCall] = []
    /// The last non-success answer of a branch row's call (not the back-check or a resume).
    public var lastUnsuccessful: BranchResult?
    /// Branch answers that backed the schedule off, for the alert webhook (spec 5.2).
    public var branchErrors: [BranchErrorNote] = []
    /// Every answer this pass recorded, in arrival order (for logs and metrics).
    public var answers: [BranchAnswer] = []
    /// A write or read that failed; `.notFound` means another party moved the transaction
    /// (lost compare-and-set) and this pass stopped quietly.
    public var storeError: StoreError?
    /// The pass reached its deadline with calls still running and abandoned them.
    public var deadlineExceeded = false

    public init(global: GlobalTransaction, branches: [BranchRecord]) {
        self.global = global
        self.branches = branches
    }

    /// Another request or coordinator changed the status under this pass.
    public var lostRace: Bool {
        if case .notFound = storeError { return true }
        return false
    }
}

/// One branch call's answer.
public struct BranchAnswer: Sendable, Equatable {
    public var call: BranchCall
    public var result: BranchResult
}

/// A branch answer that doubled the retry interval.
public struct BranchErrorNote: Sendable, Equatable {
    public var call: BranchCall
    public var message: String
    /// floor(log2(interval / reset interval)) after the doubling; DTM alerts when this
    /// reaches AlertRetryLimit (3).
    public var retryCount: Int64
}

/// Applies processor decisions to one transaction: persist transitions, make calls
/// concurrently, record results (CAS on the current status), decide again; then move the
/// retry schedule once. Never calls anything the stored state does not call for: every
/// decision is taken from the state this pass has durably written.
public struct TransactionDriver: Sendable {
    public let store: any TransactionStore
    public let caller: any BranchCaller
    public let clock: any DtmClock
    public let config: EngineConfig
    /// This coordinator's name in the `owner` column. A pass drives a transaction only while
    /// the row's owner is the one it found at its start (this coordinator's, or none): every
    /// write checks it, so a coordinator whose lease was taken over stops at its next write.
    public let owner: String
    /// Transactions requests just created, whose first pass may skip reading them back.
    public let fresh = FreshTransactions()

    /// Guards against a processor that never ends a pass.
    static let maxDecisions = 100_000
    /// A lease that ends sooner than this is not trusted to keep other coordinators out (their
    /// clocks may run ahead of ours), as when a pass renews it before calling branches.
    static let leaseMargin: TimeInterval = 1

    public init(store: any TransactionStore, caller: any BranchCaller, clock: any DtmClock = SystemClock(),
                config: EngineConfig = EngineConfig(), owner: String = UUID().uuidString) {
        self.store = store
        self.caller = caller
        self.clock = clock
        self.config = config
        self.owner = owner
    }

    /// Wall-clock bound of one pass: the longest call it may wait for plus 2 s, and at least
    /// `maxPassDuration`. Calls still running then are abandoned (their branches are asked
    /// again by a later pass), so no branch can hold a pass slot forever.
    public func passDeadline(for global: GlobalTransaction) -> Duration {
        .seconds(max(config.maxPassDuration, global.requestTimeout(config) + 2))
    }

    /// How long a call run in the pass's task may take at most: its request timeout (callers
    /// use at least 1 s) and a second to notice it. The pass runs a call in its own task only
    /// while the pass deadline is at least that far off, so the deadline still holds.
    static func inlineCallBound(_ call: BranchCall) -> Duration {
        .seconds(max(call.requestTimeout, 1) + 1)
    }

    /// Makes one call, timed; a call with an empty URL succeeds without reaching the caller.
    static func make(_ call: BranchCall, of global: GlobalTransaction, caller: any BranchCaller,
                     clock: any DtmClock) async -> (BranchResult, CallTiming) {
        let start = clock.now(), began = ContinuousClock.now
        let result = call.url.isEmpty ? BranchResult.success : await caller.call(call, of: global)
        return (result, CallTiming(start: start, duration: .now - began))
    }

    /// Loads the transaction and runs one pass; nil when the gid is unknown.
    public func process(gid: String) async throws(StoreError) -> PassReport? {
        guard let global = try await store.findGlobal(gid: gid) else { return nil }
        return await process(global)
    }

    /// Runs one pass over `global` as stored now. `branches` saves a read when the caller just
    /// wrote them; they are used only if the stored status is still the one of `global`.
    /// `created`: the request that inserted `global` and `branches` handed them over; the pass
    /// reads them back only if that copy may be stale (see `FreshTransactions`).
    public func process(_ global: GlobalTransaction, branches known: [BranchRecord]? = nil,
                        created: Bool = false) async -> PassReport {
        var report = PassReport(global: global, branches: known ?? [])
        // Every pass start takes the mark: only a transaction's first pass can find it.
        let untouched = fresh.take(global.gid)
        let trusted = created && untouched && known != nil
            && global.nextCronTime.timeIntervalSince(clock.now()) > Self.leaseMargin
        // Otherwise the given copy may be stale: another pass of this gid may have run since it
        // was read (a pass queued behind a running one, a new transaction overtaken by the cron).
        if !trusted {
            do {
                let stored = try await store.findGlobal(gid: global.gid)
                if let stored { report.global = stored }
                if known == nil || (stored.map { $0.status != global.status } ?? false) {
                    report.branches = try await store.findBranches(gid: global.gid)
                }
            } catch {
                report.storeError = error
                return report
            }
        }
        if report.global.isQuarantined {
            report.storeError = .database("transaction \(global.gid) is quarantined: \(report.global.quarantine)")
            return report
        }
        if !report.global.owner.isEmpty && report.global.owner != owner {
            report.storeError = .notFound("transaction \(global.gid) is leased by \(report.global.owner)")
            return report
        }
        var pass = Pass(driver: self, report: report, now: clock.now())
        var processor = DtmEngine.processor(for: pass.state)
        let (caller, clock) = (self.caller, self.clock)
        let inbox = PassInbox()
        // Registered with the deadline sweeper when the pass first waits for a call.
        var deadline: Int?
        let passEnd = ContinuousClock.now + passDeadline(for: pass.state.global)

        await withDiscardingTaskGroup { group in
            var decisions = 0
            loop: while decisions < Self.maxDecisions && !Task.isCancelled {
                decisions += 1
                pass.state.now = clock.now()
                var decision = processor.decide(pass.state)
                // Fan-out bound: a launch beyond `maxCallsInFlight` starts what fits; the rest is
                // decided again once calls end (the processor never relaunches a running call).
                if case .launch(let calls) = decision {
                    let room = config.maxCallsInFlight - pass.state.memory.callsInFlight
                    if room <= 0 {
                        decision = .awaitResult
                    } else if calls.count > room {
                        decision = .launch(Array(calls.prefix(room)))
                    }
                }
                switch decision {
                case .launch(let calls):
                    guard !calls.isEmpty, await pass.flush(), await pass.holdLease() else { break loop }
                    let current = pass.state.global
                    pass.reserveForCalls()
                    // A lone call (a sequential saga's next step, a back-check) runs in this task
                    // when its caller ends it within its timeout and that falls well inside the
                    // pass deadline: no child task, no hop back through the inbox.
                    if calls.count == 1, let call = calls.first, !pass.state.memory.hasCallsInFlight,
                       call.url.isEmpty || caller.endsCallsWithinTimeout,
                       ContinuousClock.now + Self.inlineCallBound(call) <= passEnd {
                        pass.state.memory.launched(call.key)
                        pass.report.calls.append(call)
                        let (result, timing) = await Self.make(call, of: current, caller: caller, clock: clock)
                        // Cancelled by shutdown: the answer is dropped, as for a call in a child task.
                        guard !Task.isCancelled else { break loop }
                        guard await pass.record(result, of: call, timing: timing) else { break loop }
                        continue loop
                    }
                    for call in calls {
                        pass.state.memory.launched(call.key)
                        pass.report.calls.append(call)
                        // Started at once in this task up to its first wait (no hop to start
                        // it); its answer comes back through the inbox.
                        group.addCall {
                            let (result, timing) = await Self.make(call, of: current, caller: caller, clock: clock)
                            inbox.post(.answer(call, result, timing))
                        }
                    }
                case .awaitResult:
                    guard pass.state.memory.hasCallsInFlight else { break loop }
                    if deadline == nil { deadline = PassDeadlines.shared.add(inbox, deadline: passEnd) }
                    // A pass cancelled by shutdown drops the answer it was waiting for: a call cut
                    // short is not the branch's error and must not double the retry interval.
                    guard case .answer(let call, let result, let timing) = await inbox.next(), !Task.isCancelled else {
                        if !Task.isCancelled { pass.report.deadlineExceeded = true }
                        break loop
                    }
                    guard await pass.record(result, of: call, timing: timing) else { break loop }
                case .transition(let status, let reason):
                    guard await pass.transition(to: status, reason: reason) else { break loop }
                    if pass.rowsReloaded {
                        pass.rowsReloaded = false
                        processor = DtmEngine.processor(for: pass.state)
                    }
                case .postpone(let time):
                    pass.schedule.postpone(until: time, now: clock.now())
                    break loop
                case .done:
                    break loop
                }
            }
            // Calls still running after a lost race, the deadline or a cancellation: their
            // answers no longer matter.
            group.cancelAll()
        }
        if let deadline { PassDeadlines.shared.remove(deadline) }
        await pass.touchCron()
        pass.report.global = pass.state.global
        pass.report.branches = pass.state.branches
        return pass.report
    }

    static func retryCount(_ interval: Int64, reset: Int64) -> Int64 {
        let ratio = reset > 0 ? interval / reset : 0
        return ratio > 0 ? Int64(log2(Double(ratio)).rounded(.down)) : 0
    }
}

/// The mutable side of one pass: what it knows, its schedule and its report. Every write is
/// compare-and-set on the status this pass last stored; a failed write ends the pass.
private struct Pass {
    let driver: TransactionDriver
    var state: PassState
    var schedule: CronSchedule
    var report: PassReport
    /// Branch results recorded in `state` but not stored yet.
    var pending: [BranchUpdate] = []
    /// Attempt records not stored yet. They ride along with the pass's next write that carries
    /// branch results, a status change or the schedule (never a write of their own), so they
    /// add no commit; a write that loses its race drops them with it.
    var attempts: [BranchAttempt] = []
    /// Until when this pass's lease is known to hold: from the row at the pass start (a claim or
    /// a request leased it), then from its own renewals. The cron renews leases of running passes
    /// too, without telling the pass: this is a lower bound.
    var leaseUntil: Date
    /// The owner found at the pass start; every write requires it unchanged.
    private let fence: String
    /// Set when `transition` replaced `state.branches` with a fresh read (the processor's view
    /// of the rows must be derived again).
    var rowsReloaded = false

    init(driver: TransactionDriver, report: PassReport, now: Date) {
        let global = report.global
        self.driver = driver
        self.report = report
        fence = global.owner
        leaseUntil = global.nextCronTime
        state = PassState(global: global, branches: report.branches, memory: PassMemory(startedAt: now),
                          now: now, config: driver.config)
        // The report gets the rows back at the end; sharing them meanwhile would copy every row
        // at the first branch result.
        self.report.branches = []
        schedule = CronSchedule(
            interval: global.nextCronInterval > 0 ? global.nextCronInterval : global.resetInterval(driver.config),
            passStart: now)
    }

    private var gid: String { state.global.gid }
    private var config: EngineConfig { driver.config }

    /// Before the first call: room in the per-call arrays for a call per branch row (at most
    /// 16), so that a saga's calls and answers do not grow them one reallocation at a time.
    mutating func reserveForCalls() {
        guard report.calls.capacity == 0 else { return }
        let expected = min(max(state.branches.count, 2), 16)
        report.calls.reserveCapacity(expected)
        report.answers.reserveCapacity(expected)
        attempts.reserveCapacity(expected)
        pending.reserveCapacity(expected)
    }

    /// Applies a call's answer (spec 4.2); false when the branch write lost its race or failed.
    mutating func record(_ result: BranchResult, of call: BranchCall, timing: CallTiming) async -> Bool {
        state.memory.finished(call.key, with: result)
        attempts.append(BranchAttempt(gid: gid, call: call, result: result, startTime: timing.start,
                                      duration: timing.duration, owner: driver.owner))
        if attempts.count > AttemptRetention.limit { attempts = AttemptRetention.trimmed(attempts) }
        report.answers.append(BranchAnswer(call: call, result: result))
        if call.kind == .branch && !result.isSuccess { report.lastUnsuccessful = result }
        let now = driver.clock.now()
        let effect = CallEffect.of(result, call: call, transType: state.global.transType)
        if let cron = effect.cron { schedule.apply(cron, for: state.global, config: config, now: now) }
        if effect.cron == .backoff {
            let retries = TransactionDriver.retryCount(schedule.interval, reset: state.global.resetInterval(config))
            report.branchErrors.append(BranchErrorNote(call: call, message: result.message, retryCount: retries))
        }
        if let reason = effect.rollbackReason { state.memory.rollbackReason = reason }
        guard let status = effect.branchStatus else { return true }
        // Kept in memory and stored with the pass's next write: before any further call is
        // launched (that write's compare-and-set is what stops a pass whose transaction was
        // moved by someone else), or together with the status change or the schedule. The
        // last result of a pass thus shares its commit with the final status.
        let update = BranchUpdate(branchID: call.branchID, op: call.op, status: status, finishTime: now)
        pending.append(update)
        for index in state.branches.indices
        where state.branches[index].branchID == update.branchID && state.branches[index].op == update.op {
            state.branches[index].apply(update, now: now)
        }
        return true
    }

    /// Stores the branch results still in memory; false when the write failed or lost its race.
    /// Attempts alone make no write, unless `attempts` is set (the pass ends and nothing else
    /// will carry them: a workflow resume, which changes neither a branch nor the schedule).
    mutating func flush(attempts force: Bool = false) async -> Bool {
        guard !pending.isEmpty || (force && !attempts.isEmpty) else { return true }
        let (store, gid, expecting, updates, now) = (driver.store, gid, state.global.status, pending, driver.clock.now())
        let (fence, attempts) = (self.fence, self.attempts)
        guard await write({ () async throws(StoreError) in
            try await store.updateBranches(gid: gid, expecting: expecting, owner: fence, updates: updates,
                                           attempts: attempts, now: now)
        }) else { return false }
        pending = []
        self.attempts = []
        return true
    }

    /// Before branch calls start: the lease must outlast them, or another coordinator could
    /// claim the transaction and call the same branch while these calls still run (a lease that
    /// the cron could not renew while the store was unreachable lapses). When less than the call
    /// timeout is left, the lease is renewed with an owner-checked write first; false, and no
    /// call, when that fails. Rows without an owner (not written by a leasing coordinator) keep
    /// the old behaviour.
    mutating func holdLease() async -> Bool {
        guard !fence.isEmpty else { return true }
        let now = driver.clock.now()
        let calls = Double(state.global.requestTimeout(config))
        guard leaseUntil.timeIntervalSince(now) <= calls + 1 else { return true }
        let until = now.addingTimeInterval(max(config.leaseSeconds, calls + 2))
        let update = GlobalUpdate(nextCronTime: until, expectedOwner: fence)
        let (store, gid, status, attempts) = (driver.store, gid, state.global.status, self.attempts)
        guard await write({ () async throws(StoreError) in
            try await store.changeStatus(gid: gid, from: status, to: status, update: update, branchUpdates: [],
                                         attempts: attempts, now: now)
        }) else { return false }
        self.attempts = []
        leaseUntil = until
        return true
    }

    /// Stores a status change; false when it lost its race or failed.
    mutating func transition(to status: GlobalStatus, reason: String?) async -> Bool {
        let now = driver.clock.now()
        var update = GlobalUpdate.transition(to: status, reason: reason, now: now)
        update.expectedOwner = fence
        update.transType = state.global.transType
        let (store, gid, from, updates, attempts) = (driver.store, gid, state.global.status, pending, self.attempts)
        guard await write({ () async throws(StoreError) in
            try await store.changeStatus(gid: gid, from: from, to: status, update: update, branchUpdates: updates,
                                         attempts: attempts, now: now)
        }) else { return false }
        pending = []
        self.attempts = []
        state.global.apply(status: status, update, now: now)
        // While the transaction was `prepared`, RegisterBranch could add rows after this pass read
        // them (another request, another coordinator). The status change just stored ends that:
        // appends require `prepared` and serialize with this compare-and-set, so the rows read
        // now are all there will be. Deciding from the older list would finish the transaction
        // without calling the new rows' cancel/rollback (or confirm/commit).
        if from == .prepared {
            var rows: [BranchRecord] = []
            guard await write({ () async throws(StoreError) in rows = try await store.findBranches(gid: gid) })
            else { return false }
            state.branches = rows
            rowsReloaded = true
        }
        return true
    }

    /// Writes the schedule once, if the pass moved it and the transaction is still running.
    /// Also stores branch results still in memory.
    mutating func touchCron() async {
        guard report.storeError == nil, !state.global.status.isFinished else { return }
        guard let next = schedule.nextTime else {
            _ = await flush(attempts: true)
            return
        }
        let now = driver.clock.now()
        let (store, gid, status, interval, updates) = (driver.store, gid, state.global.status, schedule.interval, pending)
        let (fence, attempts) = (self.fence, self.attempts)
        guard await write({ () async throws(StoreError) in
            try await store.touchCron(gid: gid, status: status, owner: fence, nextCronInterval: interval,
                                      nextCronTime: next, branchUpdates: updates, attempts: attempts, now: now)
        }) else { return }
        pending = []
        self.attempts = []
        state.global.nextCronInterval = interval
        state.global.nextCronTime = next
        state.global.updateTime = now
    }

    private mutating func write(_ body: () async throws(StoreError) -> Void) async -> Bool {
        do {
            try await body()
            return true
        } catch {
            report.storeError = error
            return false
        }
    }
}

extension DiscardingTaskGroup {
    /// Adds a branch call that starts running at once in the calling task, up to its first
    /// suspension (where the runtime allows it), instead of being enqueued to start later.
    mutating func addCall(_ operation: sending @escaping @Sendable () async -> Void) {
        if #available(macOS 26.0, *) {
            addImmediateTask(operation: operation)
        } else {
            addTask(operation: operation)
        }
    }
}
