import DtmGRPC
import DtmSync
import Foundation

/// A workflow's body: runs its branches through `Workflow` and returns the workflow's result.
public typealias WorkflowHandler = @Sendable (Workflow, [UInt8]) async throws -> [UInt8]

/// What a workflow does beyond its body.
public struct WorkflowOptions: Sendable {
    /// Also run the rollback of the branch whose action answered FAILURE (DTM's
    /// CompensateErrorBranch); by default only branches that succeeded are rolled back.
    public var compensateErrorBranch: Bool
    public var trans: TransOptions

    public init(compensateErrorBranch: Bool = false, trans: TransOptions = TransOptions()) {
        self.compensateErrorBranch = compensateErrorBranch
        self.trans = trans
    }
}

/// The workflows a process can run and resume (DTM's workflow package): register each by name
/// at start-up, serve the callback the coordinator calls to resume unfinished ones, then
/// `execute` them.
///
/// A workflow's steps are recorded with the coordinator as they finish; running the same gid
/// again (after a crash, or when the coordinator calls the callback) replays recorded steps
/// from their records instead of calling them again, and carries on from the first step with no
/// record. A FAILURE rolls back the branches that succeeded, in reverse order.
public final class Workflows: Sendable {
    public let client: DtmClient
    private let handlers = Locked<[String: (WorkflowHandler, WorkflowOptions)]>([:])
    private let callbackURL: Locked<String>

    /// - Parameter callback: the URL the coordinator calls to resume a workflow: for gRPC
    ///   `host:port/workflow.Workflow/Execute` of the server where `serve(on:)` registered it,
    ///   for HTTP the route that hands its requests to `resume(query:body:)`. May be set later.
    public init(client: DtmClient, callback: String = "") {
        self.client = client
        self.callbackURL = Locked(callback)
    }

    /// The resume URL sent with every workflow this process starts.
    public var callback: String {
        get { callbackURL.withLock { $0 } }
        set { callbackURL.withLock { $0 = newValue } }
    }

    /// Registers a workflow under `name`; each name once.
    public func register(_ name: String, options: WorkflowOptions = WorkflowOptions(),
                         _ handler: @escaping WorkflowHandler) throws(DtmClientError) {
        try handlers.withLock { handlers throws(DtmClientError) in
            guard handlers[name] == nil else { throw .invalidArgument("a workflow named '\(name)' is already registered") }
            handlers[name] = (handler, options)
        }
    }

    /// Runs (or resumes) the workflow `name` as global transaction `gid` with input `data`.
    /// Returns its result; throws `.failure` when it rolled back (now or in an earlier run), or
    /// any other error that left it unfinished (the coordinator resumes it through the callback).
    @discardableResult
    public func execute(_ name: String, gid: String, data: [UInt8] = []) async throws -> [UInt8] {
        guard let (handler, options) = handlers.withLock({ $0[name] }) else {
            throw DtmClientError.invalidArgument("workflow '\(name)' is not registered; register it at start-up")
        }
        let workflow = Workflow(client: client, name: name, gid: gid, options: options)
        return try await workflow.process(handler, data: data, callback: callback)
    }

    /// Registers `/workflow.Workflow/Execute`, the gRPC callback through which the coordinator
    /// resumes unfinished workflows (its metadata names the gid and, as op, the workflow).
    public func serve(on router: inout GRPCRouter) {
        router.registerBranch("/workflow.Workflow/Execute", WorkflowData.self) { [self] data, request in
            try await execute(request.info.op, gid: request.info.gid, data: data.data)
            return Empty()
        }
    }

    /// Resumes a workflow from the coordinator's HTTP callback (query `gid`, and the workflow's
    /// name as `op`; the body is its input).
    public func resume(query: [String: String], body: [UInt8]) async throws {
        guard let gid = query["gid"], let name = query["op"], !gid.isEmpty, !name.isEmpty else {
            throw DtmClientError.invalidArgument("a workflow callback needs the query parameters gid and op")
        }
        try await execute(name, gid: gid, data: body)
    }
}

/// One run of a workflow, handed to its body. Not shared between tasks: the body uses it in
/// order, one branch after another.
public final class Workflow {
    public let client: DtmClient
    public let name: String
    public let gid: String
    public let options: WorkflowOptions

    private struct StepResult {
        /// Non-nil: the step did not succeed (FAILURE is recorded, other errors are not).
        var error: (any Error)?
        /// `succeed`, `failed`, or empty when nothing is recorded.
        var status: String
        var data: [UInt8]
    }

    private struct PhaseTwo {
        var branchID: String
        var body: (BranchBarrier) async throws -> Void
    }

    private var ids = BranchIDGenerator()
    /// The branch steps are recorded under; set by `newBranch()`.
    public private(set) var currentBranch = ""
    private var currentOp = BranchOp.action
    private var actionAdded = false
    private var commitAdded = false
    private var rollbackAdded = false
    private var progresses: [String: StepResult] = [:]
    private var commits: [PhaseTwo] = []
    private var rollbacks: [PhaseTwo] = []

    init(client: DtmClient, name: String, gid: String, options: WorkflowOptions) {
        self.client = client
        self.name = name
        self.gid = gid
        self.options = options
    }

    /// Starts the next branch (ids `01`, `02`, …). Call it before each branch's `onRollback`,
    /// `onCommit` and `do`.
    @discardableResult
    public func newBranch() throws(DtmClientError) -> Workflow {
        guard currentOp == BranchOp.action else {
            throw .invalidArgument("newBranch() called from a commit or rollback callback")
        }
        currentBranch = try ids.next()
        actionAdded = false
        commitAdded = false
        rollbackAdded = false
        return self
    }

    /// What undoes the current branch when the workflow fails (run in reverse branch order).
    @discardableResult
    public func onRollback(_ body: @escaping (BranchBarrier) async throws -> Void) throws(DtmClientError) -> Workflow {
        guard !rollbackAdded else { throw .invalidArgument("branch \(currentBranch) already has a rollback") }
        rollbackAdded = true
        rollbacks.append(PhaseTwo(branchID: currentBranch, body: body))
        return self
    }

    /// What completes the current branch when the workflow succeeds (run in reverse branch order).
    @discardableResult
    public func onCommit(_ body: @escaping (BranchBarrier) async throws -> Void) throws(DtmClientError) -> Workflow {
        guard !commitAdded else { throw .invalidArgument("branch \(currentBranch) already has a commit") }
        commitAdded = true
        commits.append(PhaseTwo(branchID: currentBranch, body: body))
        return self
    }

    /// Runs the current branch's action once per workflow: its result (or FAILURE) is recorded
    /// with the coordinator, and a later run of this workflow gets the record instead of running
    /// `body` again. Other errors are not recorded: the step runs again on resume.
    @discardableResult
    public func `do`(_ body: (BranchBarrier) async throws -> [UInt8]) async throws -> [UInt8] {
        let result = try await recorded { barrier in
            do {
                return Self.result(data: try await body(barrier), error: nil)
            } catch {
                return Self.result(data: [], error: error)
            }
        }
        if let error = result.error { throw error }
        return result.data
    }

    /// Calls a branch service (gRPC or HTTP URL) as the current branch's recorded action, with
    /// DTM's transaction information for this workflow, branch and op.
    @discardableResult
    public func callBranch(_ url: String, payload: some BranchPayload) async throws -> [UInt8] {
        let bytes = payload.payloadBytes
        return try await self.do { barrier in
            try await self.client.callBranch(url, payload: bytes, info: barrier.info)
        }
    }

    // MARK: - Running

    private static func result(data: [UInt8], error: (any Error)?) -> StepResult {
        let error = error.map(normalised)
        switch error {
        case nil: return StepResult(error: nil, status: "succeed", data: data)
        case let failure as DtmClientError where failure.isFailure:
            if case .failure(let reason) = failure { return StepResult(error: failure, status: "failed", data: Array(reason.utf8)) }
            return StepResult(error: failure, status: "failed", data: [])
        case let error?: return StepResult(error: error, status: "", data: [])
        }
    }

    /// gRPC statuses as DTM outcomes (ABORTED is FAILURE, FAILED_PRECONDITION is ONGOING).
    private static func normalised(_ error: any Error) -> any Error {
        if let error = error as? RPCError { return DtmClientError(error) }
        return error
    }

    private func recorded(_ body: (BranchBarrier) async throws -> StepResult) async throws -> StepResult {
        var result = try await recordedInner(body)
        if !options.compensateErrorBranch && result.status == "failed",
           let last = rollbacks.last, last.branchID == currentBranch {
            rollbacks.removeLast()
            result.error = result.error ?? DtmClientError.failure("")
        }
        return result
    }

    private func recordedInner(_ body: (BranchBarrier) async throws -> StepResult) async throws -> StepResult {
        guard !currentBranch.isEmpty else { throw DtmClientError.invalidArgument("call newBranch() before do()") }
        if currentOp == BranchOp.action {
            guard !actionAdded else { throw DtmClientError.invalidArgument("branch \(currentBranch) already has an action") }
            actionAdded = true
        }
        if let stored = progresses["\(currentBranch)-\(currentOp)"] { return stored }
        let info = try TransInfo(transType: TransType.workflow.rawValue, gid: gid, branchID: currentBranch,
                                 op: currentOp, dtm: client.coordinatorAddress)
        var result = try await body(BranchBarrier(info))
        if !result.status.isEmpty {
            do {
                try await client.registerBranch(DtmBranchRequest(
                    gid: gid, transType: TransType.workflow.rawValue, branchID: currentBranch, op: "",
                    data: ["status": result.status, "op": currentOp], busiPayload: result.data))
            } catch {
                result = StepResult(error: error, status: "", data: [])
            }
        }
        return result
    }

    func process(_ handler: WorkflowHandler, data: [UInt8], callback: String) async throws -> [UInt8] {
        let custom = JSON.text(["name": name, "data": Data(data).base64EncodedString()])
        let reply = try await client.prepareWorkflow(DtmRequest(
            gid: gid, transType: TransType.workflow.rawValue, transOptions: options.trans.proto,
            customedData: custom, queryPrepared: callback))
        switch reply.transaction?.status {
        case "succeed"?:
            return Data(base64Encoded: reply.transaction?.result ?? "").map { [UInt8]($0) } ?? []
        case "failed"?:
            throw DtmClientError.failure(reply.transaction?.rollbackReason ?? "")
        default:
            break
        }
        for progress in reply.progresses {
            progresses["\(progress.branchID)-\(progress.op)"] = progress.status == "failed"
                ? StepResult(error: DtmClientError.failure(String(decoding: progress.binData, as: UTF8.self)),
                             status: progress.status, data: progress.binData)
                : StepResult(error: nil, status: progress.status, data: progress.binData)
        }

        var output: [UInt8] = []
        var failure: DtmClientError?
        do {
            output = try await handler(self, data)
        } catch {
            // Anything but FAILURE leaves the workflow unfinished, to be resumed.
            guard let error = Self.normalised(error) as? DtmClientError, error.isFailure else { throw Self.normalised(error) }
            failure = error
        }
        try await runPhaseTwo(failed: failure != nil)
        var extra = ["status": failure == nil ? "succeed" : "failed", "rollback_reason": "",
                     "result": Data(output).base64EncodedString()]
        if case .failure(let reason)? = failure { extra["rollback_reason"] = reason }
        try await client.submit(DtmRequest(gid: gid, transType: TransType.workflow.rawValue,
                                           transOptions: options.trans.proto, reqExtra: extra))
        if let failure { throw failure }
        return output
    }

    /// Commits (success) or rolls back (FAILURE) the branches, last first. A commit or rollback
    /// must not answer FAILURE: it is an error, retried when the workflow resumes.
    private func runPhaseTwo(failed: Bool) async throws {
        currentOp = failed ? BranchOp.rollback : BranchOp.commit
        for item in (failed ? rollbacks : commits).reversed() {
            currentBranch = item.branchID
            let result = try await recordedInner { barrier in
                do {
                    try await item.body(barrier)
                    return StepResult(error: nil, status: "succeed", data: [])
                } catch {
                    let error = Self.normalised(error)
                    if (error as? DtmClientError)?.isFailure == true {
                        return StepResult(error: DtmClientError.invalidArgument(
                            "a \(currentOp) of branch \(item.branchID) answered FAILURE, which a commit or rollback must not"),
                            status: "", data: [])
                    }
                    return StepResult(error: error, status: "", data: [])
                }
            }
            if let error = result.error { throw error }
        }
    }
}
