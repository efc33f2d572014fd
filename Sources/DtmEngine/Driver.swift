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
    /// A write or read that failed; `.notFound` means another party moved the transaction
    /// (lost compare-and-set) and this pass stopped quietly.
    public var storeError: StoreError?

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

    /// Guards against a processor that never ends a pass.
    static let maxDecisions = 100_000

    public init(store: any TransactionStore, caller: any BranchCaller, clock: any DtmClock = SystemClock(),
                config: EngineConfig = EngineConfig()) {
        self.store = store
        self.caller = caller
        self.clock = clock
        self.config = config
    }

    /// Loads the transaction and runs one pass; nil when the gid is unknown.
    public func process(gid: String) async throws(StoreError) -> PassReport? {
        guard let global = try await store.findGlobal(gid: gid) else { return nil }
        return await process(global)
    }

    /// Runs one pass over `global`. `branches` saves a read when the caller just wrote them.
    public func process(_ global: GlobalTransaction, branches known: [BranchRecord]? = nil) async -> PassReport {
        var report = PassReport(global: global, branches: known ?? [])
        if known == nil {
            do { report.branches = try await store.findBranches(gid: global.gid) } catch {
                report.storeError = error
                return report
            }
        }
        let start = clock.now()
        var state = PassState(global: global, branches: report.branches, memory: PassMemory(startedAt: start),
                              now: start, config: config)
        var schedule = CronSchedule(
            interval: global.nextCronInterval > 0 ? global.nextCronInterval : global.resetInterval(config),
            passStart: start)
        let processor = DtmEngine.processor(for: global.transType)

        await withTaskGroup(of: (BranchCall, BranchResult).self) { group in
            var decisions = 0
            loop: while decisions < Self.maxDecisions && !Task.isCancelled {
                decisions += 1
                state.now = clock.now()
                let decision = processor.decide(state)
                switch decision {
                case .launch(let calls):
                    guard !calls.isEmpty else { break loop }
                    let current = state.global
                    for call in calls {
                        state.memory.launched(call.key)
                        report.calls.append(call)
                        group.addTask { (call, await self.invoke(call, of: current)) }
                    }
                case .awaitResult:
                    guard let (call, result) = await group.next() else { break loop }
                    state.memory.finished(call.key, with: result)
                    if call.kind == .branch && !result.isSuccess { report.lastUnsuccessful = result }
                    let now = clock.now()
                    let effect = CallEffect.of(result, call: call, transType: state.global.transType)
                    if let cron = effect.cron { schedule.apply(cron, for: state.global, config: config, now: now) }
                    if effect.cron == .backoff {
                        report.branchErrors.append(BranchErrorNote(
                            call: call, message: result.message,
                            retryCount: Self.retryCount(schedule.interval, reset: state.global.resetInterval(config))))
                    }
                    if let reason = effect.rollbackReason { state.memory.rollbackReason = reason }
                    guard let status = effect.branchStatus else { continue }
                    let update = BranchUpdate(branchID: call.branchID, op: call.op, status: status, finishTime: now)
                    do throws(StoreError) {
                        try await store.updateBranches(gid: state.global.gid, expecting: state.global.status,
                                                       updates: [update], now: now)
                    } catch {
                        report.storeError = error
                        break loop
                    }
                    state.branches.apply([update], now: now)
                case .transition(let status, let reason):
                    let now = clock.now()
                    let update = GlobalUpdate.transition(to: status, reason: reason, now: now)
                    do throws(StoreError) {
                        try await store.changeStatus(gid: state.global.gid, from: state.global.status, to: status,
                                                     update: update, now: now)
                    } catch {
                        report.storeError = error
                        break loop
                    }
                    state.global.apply(status: status, update, now: now)
                case .postpone(let time):
                    schedule.postpone(until: time, now: clock.now())
                    break loop
                case .done:
                    break loop
                }
            }
            // Calls still running after a lost race or a cancellation: their answers no longer matter.
            group.cancelAll()
        }

        if report.storeError == nil, let next = schedule.nextTime, !state.global.status.isFinished {
            let now = clock.now()
            do throws(StoreError) {
                try await store.touchCron(gid: state.global.gid, status: state.global.status,
                                          nextCronInterval: schedule.interval, nextCronTime: next, now: now)
                state.global.nextCronInterval = schedule.interval
                state.global.nextCronTime = next
                state.global.updateTime = now
            } catch {
                report.storeError = error
            }
        }
        report.global = state.global
        report.branches = state.branches
        return report
    }

    static func retryCount(_ interval: Int64, reset: Int64) -> Int64 {
        let ratio = reset > 0 ? interval / reset : 0
        return ratio > 0 ? Int64(log2(Double(ratio)).rounded(.down)) : 0
    }

    /// An empty URL succeeds without a call (spec 3.4 / 4.1).
    private func invoke(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        if call.url.isEmpty { return .success }
        return await caller.call(call, of: global)
    }
}
