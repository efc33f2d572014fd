import Foundation

/// What one processing pass remembers beyond the stored state: which calls it started,
/// which are still running and how they ended. Forgotten when the pass ends, so that a
/// crash loses nothing the processors need (they recompute from the store).
public struct PassMemory: Sendable, Equatable {
    public var startedAt: Date
    /// Saga: rollback reason of an action that returned FAILURE in this pass.
    public var rollbackReason: String?
    /// Each call launched in this pass, in the order of its first launch. A pass makes a few
    /// calls: they are found by a scan, and through `index` once there are more.
    private var calls: [CallMemory] = []
    private var index: [CallKey: Int] = [:]
    /// Calls launched and not finished.
    public private(set) var callsInFlight = 0

    private struct CallMemory: Sendable, Equatable {
        var key: CallKey
        /// How many times the call was launched in this pass.
        var launches: Int
        var running: Bool
        /// The latest result, once it finished.
        var result: BranchResult?
    }

    /// Calls beyond which `index` is kept.
    private static let scanned = 8

    public init(startedAt: Date) {
        self.startedAt = startedAt
    }

    private func position(_ key: CallKey) -> Int? {
        calls.count <= Self.scanned ? calls.firstIndex { $0.key == key } : index[key]
    }

    public func wasLaunched(_ key: CallKey) -> Bool { position(key) != nil }

    /// Whether any call launched in this pass has not finished.
    public var hasCallsInFlight: Bool { callsInFlight > 0 }

    /// The latest result of a finished call of this pass.
    public func result(of key: CallKey) -> BranchResult? {
        position(key).flatMap { calls[$0].result }
    }

    /// Launched, finished and not successful (ONGOING, error, or a retried FAILURE).
    public func endedUnsuccessfully(_ key: CallKey) -> Bool {
        guard let position = position(key), !calls[position].running, let result = calls[position].result else {
            return false
        }
        return !result.isSuccess
    }

    /// Launches beyond the first of each call: saga retry_limit spends these.
    public var relaunches: Int { calls.reduce(0) { $0 + max(0, $1.launches - 1) } }

    public mutating func launched(_ key: CallKey) {
        if let position = position(key) {
            calls[position].launches += 1
            if !calls[position].running { callsInFlight += 1 }
            calls[position].running = true
            return
        }
        if calls.isEmpty { calls.reserveCapacity(4) }
        calls.append(CallMemory(key: key, launches: 1, running: true))
        callsInFlight += 1
        if calls.count == Self.scanned + 1 {
            for (position, call) in calls.enumerated() { index[call.key] = position }
        } else if calls.count > Self.scanned + 1 {
            index[key] = calls.count - 1
        }
    }

    public mutating func finished(_ key: CallKey, with result: BranchResult) {
        guard let position = position(key) else { return }
        if calls[position].running { callsInFlight -= 1 }
        calls[position].running = false
        calls[position].result = result
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

/// The processor of a pass over `state`'s rows: what it can derive once (a saga's steps and
/// custom data) is derived here, not at each decision.
public func processor(for state: PassState) -> any TransactionProcessor {
    state.global.transType == .saga ? SagaProcessor(for: state) : processor(for: state.global.transType)
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
        if memory.hasCallsInFlight { return .awaitResult }
        guard let row = pending.first else { return .transition(to: finished) }
        if memory.wasLaunched(CallKey(row.branchID, row.op)) { return .done }
        return .launch([call(for: row)])
    }
}
