import DtmSync

/// A TCC global transaction in progress: each `callBranch` registers a branch's confirm and
/// cancel with the coordinator, then calls its try directly.
public final class TCC: Sendable {
    public let client: DtmClient
    public let gid: String
    private let ids: Locked<BranchIDGenerator>

    init(client: DtmClient, gid: String, parentBranchID: String = "") {
        self.client = client
        self.gid = gid
        self.ids = Locked(BranchIDGenerator(parent: parentBranchID))
    }

    /// Registers a branch (`confirm`, `cancel`) and calls its `try` with `payload`; returns the
    /// try's response. A FAILURE from the try is thrown as `.failure`, which makes the global
    /// transaction abort (the coordinator then calls every registered cancel).
    @discardableResult
    public func callBranch(_ payload: some BranchPayload, try tryURL: String, confirm: String,
                           cancel: String) async throws(DtmClientError) -> [UInt8] {
        let branchID = try ids.withLock { generator throws(DtmClientError) in try generator.next() }
        let bytes = payload.payloadBytes
        try await client.registerBranch(DtmBranchRequest(
            gid: gid, transType: TransType.tcc.rawValue, branchID: branchID, op: "",
            data: ["confirm": confirm, "cancel": cancel], busiPayload: bytes))
        let info = try TransInfo(transType: TransType.tcc.rawValue, gid: gid, branchID: branchID, op: BranchOp.try,
                                 dtm: client.coordinatorAddress)
        return try await client.callBranch(tryURL, payload: bytes, info: info)
    }
}

extension DtmClient {
    /// Runs a TCC global transaction (spec 3.6): prepares it, runs `body` — which calls
    /// `tcc.callBranch` for each branch — then submits (the coordinator confirms every branch) or,
    /// when `body` throws, aborts with the error as reason (the coordinator cancels them) and
    /// rethrows.
    public func tccGlobalTransaction<T: Sendable>(gid: String, options: TransOptions = TransOptions(),
                                                  _ body: (TCC) async throws -> T) async throws -> T {
        let request = DtmRequest(gid: gid, transType: TransType.tcc.rawValue, transOptions: options.proto)
        try await prepare(request)
        let tcc = TCC(client: self, gid: gid)
        let result: T
        do {
            result = try await body(tcc)
        } catch {
            var abort = request
            abort.rollbackReason = "\(error)"
            try await self.abort(abort)
            throw error
        }
        try await submit(request)
        return result
    }
}
