import Foundation

/// What one processing pass remembers beyond the stored state: which calls it started,
/// which are still running and how they ended. Forgotten when the pass ends, so that a
/// crash loses nothing the processors need (they recompute from the store).
public struct PassMemory: Sendable, Equatable {
    public var startedAt: Date
    /// How many times each call was launched in this pass.
    public var launches: [CallKey: Int] = [:]
    public var inFlight: Set<CallKey> = []
    /// The latest result of each finished call.
    public var results: [CallKey: BranchResult] = [:]
    /// Saga: rollback reason of an action that returned FAILURE in this pass.
    public var rollbackReason: String?

    public init(startedAt: Date) {
        self.startedAt = startedAt
    }

    public func wasLaunched(_ key: CallKey) -> Bool { launches[key] != nil }

    /// Launched, finished and not successful (ONGOING, error, or a retried FAILURE).
    public func endedUnsuccessfully(_ key: CallKey) -> Bool {
        guard !inFlight.contains(key), let result = results[key] else { return false }
        return !result.isSuccess
    }

    /// Launches beyond the first of each call: saga retry_limit spends these.
    public var relaunches: Int { launches.values.reduce(0) { $0 + max(0, $1 - 1) } }

    public mutating func launched(_ key: CallKey) {
        launches[key, default: 0] += 1
        inFlight.insert(key)
    }

    public mutating func finished(_ key: CallKey, with result: BranchResult) {
        inFlight.remove(key)
        results[key] = result
    }
}

/// Everything a processor may look at: the stored state as this pass last wrote it, the
/// pass memory, the time and the server settings.
public struct PassState: Sendable {
    public var global: GlobalTransaction
    public var branches: [BranchRecord]
    public var memory: PassMemory
    public var now: Date
    public var config: EngineConfig

    public init(global: GlobalTransaction, branches: [BranchRecord], memory: PassMemory,
                now: Date, config: EngineConfig) {
        self.global = global
        self.branches = branches
        self.memory = memory
        self.now = now
        self.config = config
    }

    /// Spec 5.5: a saga pass starts no new call after RequestTimeout + 2 s; the cron goes on.
    public var passTimeUp: Bool {
        now >= memory.startedAt.addingTimeInterval(Double(config.requestTimeout + 2))
    }

    /// A call for a stored row, with the transaction's request timeout.
    public func call(for row: BranchRecord) -> BranchCall {
        BranchCall(branchID: row.branchID, op: row.op, url: row.url, payload: row.binData,
                   requestTimeout: global.requestTimeout(config))
    }
}

/// The next thing a pass should do.
public enum PassDecision: Sendable, Equatable {
    /// Start these calls now, concurrently with anything still in flight.
    case launch([BranchCall])
    /// Nothing new to start: wait for the next in-flight call to finish.
    case awaitResult
    /// Store this status change (CAS on the current status), then decide again.
    /// Only decided while nothing is in flight.
    case transition(to: GlobalStatus, reason: String? = nil)
    /// msg delay: look again at this time, keeping the interval; the pass ends.
    case postpone(until: Date)
    /// Nothing more this pass.
    case done
}

/// Per-mode answer to "given this transaction, its branches and this pass so far, what next?".
/// Implementations are pure.
public protocol TransactionProcessor: Sendable {
    func decide(_ state: PassState) -> PassDecision
}

/// The processor of each mode.
public func processor(for transType: TransType) -> any TransactionProcessor {
    switch transType {
    case .saga: SagaProcessor()
    case .msg: MsgProcessor()
    case .tcc: PhaseTwoProcessor.tcc
    case .xa: PhaseTwoProcessor.xa
    case .workflow: WorkflowProcessor()
    }
}

extension PassState {
    /// Shared tail of the sequential modes (tcc, xa, msg): wait for what runs, stop at the
    /// first row that already failed in this pass, otherwise call the next pending row, and
    /// once none is left take `finished`.
    func nextInSequence(_ pending: [BranchRecord], finished: GlobalStatus) -> PassDecision {
        if !memory.inFlight.isEmpty { return .awaitResult }
        guard let row = pending.first else { return .transition(to: finished) }
        if memory.wasLaunched(CallKey(row.branchID, row.op)) { return .done }
        return .launch([call(for: row)])
    }
}
