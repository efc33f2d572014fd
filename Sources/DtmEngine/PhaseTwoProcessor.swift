import Foundation

/// TCC and XA (spec 3.6, 3.8): a timed-out `prepared` transaction is aborted; `submitted`
/// calls the commit-side op of every row, `aborting` the rollback-side op, one at a time,
/// stopping at the first row that does not succeed.
public struct PhaseTwoProcessor: TransactionProcessor {
    public var commitOp: BranchOp
    public var rollbackOp: BranchOp
    /// TCC walks the rows from the last registered to the first, XA from the first.
    public var lastFirst: Bool

    public static let tcc = PhaseTwoProcessor(commitOp: .confirm, rollbackOp: .cancel, lastFirst: true)
    public static let xa = PhaseTwoProcessor(commitOp: .commit, rollbackOp: .rollback, lastFirst: false)

    public func decide(_ state: PassState) -> PassDecision {
        let global = state.global
        switch global.status {
        case .prepared:
            guard global.isTimedOut(at: state.now, state.config) else { return .done }
            return .transition(to: .aborting, reason: global.timeoutReason(state.config))
        case .submitted, .aborting:
            let committing = global.status == .submitted
            let op = committing ? commitOp : rollbackOp
            let rows = state.branches.filter { $0.op == op && $0.status != .succeed }
            return state.nextInSequence(lastFirst ? rows.reversed() : rows,
                                        finished: committing ? .succeed : .failed)
        default:
            return .done
        }
    }
}
