import Foundation

/// Saga (spec 3.4): actions forward while `submitted`, compensations backward once
/// `aborting` is stored.
public struct SagaProcessor: TransactionProcessor {
    /// What a pass derives once from its rows and custom_data; nil derives it at each decision.
    private let plan: SagaPlan?

    public init() { plan = nil }

    /// A processor for one pass: custom_data is parsed and the rows are paired into steps once,
    /// not at every decision. Within a pass rows change their status, never their order;
    /// decisions over another set of rows derive their own plan.
    public init(for state: PassState) {
        plan = SagaPlan(state.global, state.branches)
    }

    public func decide(_ state: PassState) -> PassDecision {
        let status = state.global.status
        guard status == .submitted || status == .aborting else { return .done }
        if let plan, plan.rowCount == state.branches.count {
            return status == .submitted ? plan.forward(state) : plan.backward(state)
        }
        let fresh = SagaPlan(state.global, state.branches)
        return status == .submitted ? fresh.forward(state) : fresh.backward(state)
    }
}

/// One saga step: indexes of its compensate row (nil when there is none: nothing to undo) and
/// of its action row in the pass's branches.
struct SagaStep: Equatable {
    var compensate: Int?
    var action: Int
}

/// A saga's steps and ordering constraints, as indexes into the rows it was made from: a
/// decision reads the rows' current statuses through them without copying a row.
struct SagaPlan: Sendable {
    let steps: [SagaStep]
    let rowCount: Int
    let custom: SagaCustomData
    /// Step → steps that listed it as a predecessor (they compensate first).
    let successors: [Int: [Int]]

    init(_ global: GlobalTransaction, _ branches: [BranchRecord]) {
        steps = sagaSteps(branches)
        rowCount = branches.count
        // Checked at submit; a stored value that no longer parses runs sequentially.
        custom = (try? SagaCustomData.parse(global.customData)) ?? SagaCustomData()
        var successors = [Int: [Int]]()
        for (step, preds) in custom.orders {
            for pred in preds { successors[pred, default: []].append(step) }
        }
        self.successors = successors
    }

    /// Whether step `k` may start given action statuses `status(i)`: in a sequential saga the
    /// previous action succeeded; in any saga every ordered predecessor's action succeeded.
    private func mayRun(_ k: Int, _ status: (Int) -> BranchStatus) -> Bool {
        if !custom.concurrent && k > 0 && status(k - 1) != .succeed { return false }
        guard let preds = custom.orders[k] else { return true }
        return preds.allSatisfy { steps.indices.contains($0) && status($0) == .succeed }
    }

    func forward(_ state: PassState) -> PassDecision {
        let rows = state.branches
        let memory = state.memory
        func actionStatus(_ k: Int) -> BranchStatus { rows[steps[k].action].status }
        /// Whether the action's last call in this pass was not a success (retry_limit may relaunch it).
        func unsuccessful(_ k: Int) -> Bool {
            actionStatus(k) == .prepared && memory.endedUnsuccessfully(rows[steps[k].action].key)
        }
        let limit = state.global.options.retryLimit
        var anyFailed = false, allSucceeded = true, unsuccessfulCount = 0
        for k in steps.indices {
            switch actionStatus(k) {
            case .failed: anyFailed = true; allSucceeded = false
            case .prepared: allSucceeded = false; if unsuccessful(k) { unsuccessfulCount += 1 }
            case .succeed: break
            }
        }
        let timedOut = state.global.isTimedOut(at: state.now, state.config)
        var budget = limit > 0 ? Int(clamping: limit) - memory.relaunches : 0
        let retriesExhausted = limit > 0 && budget < unsuccessfulCount

        if !anyFailed && !timedOut && !retriesExhausted && !state.passTimeUp {
            var calls = [BranchCall]()
            for k in steps.indices where actionStatus(k) == .prepared && mayRun(k, actionStatus) {
                let row = rows[steps[k].action]
                if !memory.wasLaunched(row.key) {
                    calls.append(state.call(for: row))
                } else if budget > 0 && unsuccessful(k) {
                    budget -= 1
                    calls.append(state.call(for: row))
                }
            }
            if !calls.isEmpty { return .launch(calls) }
        }
        if memory.hasCallsInFlight { return .awaitResult }

        if allSucceeded { return .transition(to: .succeed) }
        if anyFailed { return .transition(to: .aborting, reason: memory.rollbackReason ?? "fail message lost") }
        if retriesExhausted {
            return .transition(to: .aborting, reason: "RetryCount is greater than RetryLimit, RetryLimit: \(limit)")
        }
        if timedOut { return .transition(to: .aborting, reason: state.global.timeoutReason(state.config)) }
        return .done
    }

    func backward(_ state: PassState) -> PassDecision {
        let rows = state.branches
        let memory = state.memory
        func actionStatus(_ k: Int) -> BranchStatus { rows[steps[k].action].status }
        // An action that was started in this pass, or that could start right now, may have
        // run already (ONGOING, error, lost answer): compensate it as if it had succeeded.
        let presumed: [BranchStatus] = steps.indices.map { k in
            let action = rows[steps[k].action]
            guard action.status == .prepared else { return action.status }
            return memory.wasLaunched(action.key) || mayRun(k, actionStatus) ? .succeed : .prepared
        }
        let compensated = { (k: Int) in
            presumed[k] == .prepared || steps[k].compensate.map { rows[$0].status == .succeed } ?? true
        }
        let mayCompensate = { (k: Int) -> Bool in
            if !custom.concurrent && k + 1 < steps.count && !compensated(k + 1) { return false }
            return (successors[k] ?? []).allSatisfy { !steps.indices.contains($0) || compensated($0) }
        }

        var calls = [BranchCall]()
        if !state.passTimeUp {
            for k in steps.indices.reversed() where !compensated(k) {
                // Not compensated means the step has a compensate row.
                guard let index = steps[k].compensate else { continue }
                if !memory.wasLaunched(rows[index].key) && mayCompensate(k) { calls.append(state.call(for: rows[index])) }
            }
        }
        if !calls.isEmpty { return .launch(calls) }
        if memory.hasCallsInFlight { return .awaitResult }
        return steps.indices.allSatisfy(compensated) ? .transition(to: .failed) : .done
    }
}

/// Pairs the stored rows by branch id, in stored order: (compensate, action) per step, as
/// indexes into `branches`.
func sagaSteps(_ branches: [BranchRecord]) -> [SagaStep] {
    // Rows as Submit stores them: (compensate, action) pairs in step order. Paired once per
    // pass, so the common layout is paired without dictionaries.
    if branches.count % 2 == 0 {
        var steps = [SagaStep]()
        steps.reserveCapacity(branches.count / 2)
        for index in stride(from: 0, to: branches.count, by: 2) {
            let (compensate, action) = (branches[index], branches[index + 1])
            guard compensate.op == .compensate, action.op == .action, compensate.branchID == action.branchID,
                  steps.last.map({ branches[$0.action].branchID != action.branchID }) ?? true else { break }
            steps.append(SagaStep(compensate: index, action: index + 1))
        }
        if steps.count * 2 == branches.count { return steps }
    }
    var order = [String]()
    var compensates = [String: Int]()
    var actions = [String: Int]()
    for (index, row) in branches.enumerated() {
        if compensates[row.branchID] == nil && actions[row.branchID] == nil { order.append(row.branchID) }
        if row.op == .compensate { compensates[row.branchID] = index }
        if row.op == .action { actions[row.branchID] = index }
    }
    return order.compactMap { id in
        guard let action = actions[id] else { return nil }
        return SagaStep(compensate: compensates[id], action: action)
    }
}

extension BranchRecord {
    public var key: CallKey { CallKey(branchID, op) }
}
