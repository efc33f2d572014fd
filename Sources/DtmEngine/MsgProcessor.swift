import Foundation

/// Msg (spec 3.5): a timed-out `prepared` msg is back-checked at query_prepared; a
/// `submitted` one calls its actions (in order, or all at once with the `concurrent` option)
/// until all succeeded. Action FAILURE is retried like an error.
public struct MsgProcessor: TransactionProcessor {
    public init() {}

    /// The back-check call: branch "00", op `msg`, no body.
    public static func backCheck(_ state: PassState) -> BranchCall {
        BranchCall(kind: .backCheck, branchID: "00", op: .msg, url: state.global.queryPrepared,
                   requestTimeout: state.global.requestTimeout(state.config))
    }

    public func decide(_ state: PassState) -> PassDecision {
        switch state.global.status {
        case .prepared: return backCheck(state)
        case .submitted: return deliver(state)
        default: return .done
        }
    }

    private func backCheck(_ state: PassState) -> PassDecision {
        guard state.global.isTimedOut(at: state.now, state.config) else { return .done }
        let call = Self.backCheck(state)
        guard state.memory.wasLaunched(call.key) else { return .launch([call]) }
        switch state.memory.result(of: call.key) {
        case nil: return .awaitResult
        case .success: return .transition(to: .submitted)
        case .failure: return .transition(to: .failed)
        case .ongoing, .error: return .done
        }
    }

    private func deliver(_ state: PassState) -> PassDecision {
        let delay = (try? MsgCustomData.parse(state.global.customData))?.delay ?? 0
        if delay > 0 && state.now.timeIntervalSince(state.global.createTime) < Double(delay) {
            // As DTM: the next look is `now + delay`, not create_time + delay.
            return .postpone(until: state.now.addingTimeInterval(Double(delay)))
        }
        let pending = state.branches.filter { $0.op == .action && $0.status != .succeed }
        guard state.global.options.concurrent else {
            return state.nextInSequence(pending, finished: .succeed)
        }
        let calls = pending.filter { !state.memory.wasLaunched($0.key) }.map(state.call(for:))
        if !calls.isEmpty { return .launch(calls) }
        if state.memory.hasCallsInFlight { return .awaitResult }
        return pending.isEmpty ? .transition(to: .succeed) : .done
    }
}
