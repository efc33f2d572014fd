import Foundation

/// Saga (spec 3.4): actions forward while `submitted`, compensations backward once
/// `aborting` is stored.
public struct SagaProcessor: TransactionProcessor {
    public init() {}

    public func decide(_ state: PassState) -> PassDecision {
        let saga = SagaView(state)
        switch state.global.status {
        case .submitted: return saga.forward()
        case .aborting: return saga.backward()
        default: return .done
        }
    }
}

/// One saga step: its compensate row and its action row.
struct SagaStep {
    var compensate: BranchRecord
    var action: BranchRecord
}

private struct SagaView {
    let state: PassState
    let steps: [SagaStep]
    let custom: SagaCustomData
    /// Step → steps that listed it as a predecessor (they compensate first).
    let successors: [Int: [Int]]

    init(_ state: PassState) {
        self.state = state
        steps = sagaSteps(state.branches)
        // Checked at submit; a stored value that no longer parses runs sequentially.
        custom = (try? SagaCustomData.parse(state.global.customData)) ?? SagaCustomData()
        var successors = [Int: [Int]]()
        for (step, preds) in custom.orders {
            for pred in preds { successors[pred, default: []].append(step) }
        }
        self.successors = successors
    }

    private var memory: PassMemory { state.memory }

    /// Whether step `k` may start given action statuses `status(i)`: in a sequential saga the
    /// previous action succeeded; in any saga every ordered predecessor's action succeeded.
    private func mayRun(_ k: Int, _ status: (Int) -> BranchStatus) -> Bool {
        if !custom.concurrent && k > 0 && status(k - 1) != .succeed { return false }
        return (custom.orders[k] ?? []).allSatisfy { steps.indices.contains($0) && status($0) == .succeed }
    }

    private func actionStatus(_ k: Int) -> BranchStatus { steps[k].action.status }

    func forward() -> PassDecision {
        let limit = state.global.options.retryLimit
        let anyFailed = steps.contains { $0.action.status == .failed }
        let timedOut = state.global.isTimedOut(at: state.now, state.config)
        // Actions whose last call in this pass was not a success and that retry_limit may relaunch.
        let unsuccessful = steps.indices.filter {
            actionStatus($0) == .prepared && memory.endedUnsuccessfully(steps[$0].action.key)
        }
        var budget = limit > 0 ? Int(clamping: limit) - memory.relaunches : 0
        let retriesExhausted = limit > 0 && budget < unsuccessful.count

        if !anyFailed && !timedOut && !retriesExhausted && !state.passTimeUp {
            var calls = [BranchCall]()
            for k in steps.indices where actionStatus(k) == .prepared && mayRun(k, actionStatus) {
                let key = steps[k].action.key
                if !memory.wasLaunched(key) {
                    calls.append(state.call(for: steps[k].action))
                } else if unsuccessful.contains(k) && budget > 0 {
                    budget -= 1
                    calls.append(state.call(for: steps[k].action))
                }
            }
            if !calls.isEmpty { return .launch(calls) }
        }
        if !memory.inFlight.isEmpty { return .awaitResult }

        if steps.allSatisfy({ $0.action.status == .succeed }) { return .transition(to: .succeed) }
        if anyFailed { return .transition(to: .aborting, reason: memory.rollbackReason ?? "fail message lost") }
        if retriesExhausted {
            return .transition(to: .aborting, reason: "RetryCount is greater than RetryLimit, RetryLimit: \(limit)")
        }
        if timedOut { return .transition(to: .aborting, reason: state.global.timeoutReason(state.config)) }
        return .done
    }

    func backward() -> PassDecision {
        // An action that was started in this pass, or that could start right now, may have
        // run already (ONGOING, error, lost answer): compensate it as if it had succeeded.
        let presumed: [BranchStatus] = steps.indices.map { k in
            let action = steps[k].action
            guard action.status == .prepared else { return action.status }
            return memory.wasLaunched(action.key) || mayRun(k, actionStatus) ? .succeed : .prepared
        }
        let compensated = { (k: Int) in steps[k].compensate.status == .succeed || presumed[k] == .prepared }
        let mayCompensate = { (k: Int) -> Bool in
            if !custom.concurrent && k + 1 < steps.count && !compensated(k + 1) { return false }
            return (successors[k] ?? []).allSatisfy { !steps.indices.contains($0) || compensated($0) }
        }

        let calls = state.passTimeUp ? [] : steps.indices.reversed()
            .filter { !compensated($0) && !memory.wasLaunched(steps[$0].compensate.key) && mayCompensate($0) }
            .map { state.call(for: steps[$0].compensate) }
        if !calls.isEmpty { return .launch(calls) }
        if !memory.inFlight.isEmpty { return .awaitResult }
        return steps.indices.allSatisfy(compensated) ? .transition(to: .failed) : .done
    }
}

/// Pairs the stored rows by branch id, in stored order: (compensate, action) per step.
func sagaSteps(_ branches: [BranchRecord]) -> [SagaStep] {
    // Rows as Submit stores them: (compensate, action) pairs in step order. Decided on every
    // branch result, so the common layout is paired without dictionaries.
    if branches.count % 2 == 0 {
        var steps = [SagaStep]()
        steps.reserveCapacity(branches.count / 2)
        for index in stride(from: 0, to: branches.count, by: 2) {
            let (compensate, action) = (branches[index], branches[index + 1])
            guard compensate.op == .compensate, action.op == .action, compensate.branchID == action.branchID,
                  steps.last?.action.branchID != action.branchID else { break }
            steps.append(SagaStep(compensate: compensate, action: action))
        }
        if steps.count * 2 == branches.count { return steps }
    }
    var order = [String]()
    var compensates = [String: BranchRecord]()
    var actions = [String: BranchRecord]()
    for row in branches {
        if compensates[row.branchID] == nil && actions[row.branchID] == nil { order.append(row.branchID) }
        if row.op == .compensate { compensates[row.branchID] = row }
        if row.op == .action { actions[row.branchID] = row }
    }
    return order.compactMap { id in
        guard let action = actions[id] else { return nil }
        let compensate = compensates[id]
            ?? BranchRecord(gid: action.gid, url: "", branchID: id, op: .compensate, status: .succeed,
                            createTime: action.createTime)
        return SagaStep(compensate: compensate, action: action)
    }
}

extension BranchRecord {
    public var key: CallKey { CallKey(branchID, op) }
}
