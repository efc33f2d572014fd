import Foundation

/// Workflow (spec 3.9): the server only calls the client back to resume; the client
/// records progress and the final status itself.
public struct WorkflowProcessor: TransactionProcessor {
    public init() {}

    public func decide(_ state: PassState) -> PassDecision {
        guard !state.global.status.isFinished,
              let custom = try? WorkflowCustomData.parse(state.global.customData) else { return .done }
        let call = BranchCall(kind: .workflowResume, branchID: "00", op: BranchOp(custom.name),
                              url: state.global.queryPrepared,
                              payload: custom.resumePayload(for: state.global.transProtocol),
                              requestTimeout: state.global.requestTimeout(state.config))
        if !state.memory.wasLaunched(call.key) { return .launch([call]) }
        return state.memory.hasCallsInFlight ? .awaitResult : .done
    }
}
