import DtmSync

/// An XA global transaction in progress (spec 3.8): each `callBranch` calls a branch's action,
/// which runs its local XA transaction up to PREPARE and registers itself
/// (`DtmClient.registerXABranch`); the coordinator then calls the same URL with op `commit` or
/// `rollback`.
public final class XA: Sendable {
    public let client: DtmClient
    public let gid: String
    private let ids = Locked(BranchIDGenerator())

    init(client: DtmClient, gid: String) {
        self.client = client
        self.gid = gid
    }

    /// Calls the branch at `url` (op `action`, with `phase2_url` = `url`); returns its response.
    @discardableResult
    public func callBranch(_ payload: some BranchPayload, url: String) async throws(DtmClientError) -> [UInt8] {
        let branchID = try ids.withLock { generator throws(DtmClientError) in try generator.next() }
        let info = try TransInfo(transType: TransType.xa.rawValue, gid: gid, branchID: branchID, op: BranchOp.action,
                                 dtm: client.coordinatorAddress, phase2URL: url)
        return try await client.callBranch(url, payload: payload.payloadBytes, info: info)
    }
}

extension DtmClient {
    /// Runs an XA global transaction: prepares it, runs `body` (which calls `xa.callBranch` for
    /// each branch), then submits (the coordinator commits every registered branch) or, when
    /// `body` throws, aborts with the error as reason (it rolls them back) and rethrows.
    public func xaGlobalTransaction<T: Sendable>(gid: String, options: TransOptions = TransOptions(),
                                                 _ body: (XA) async throws -> T) async throws -> T {
        let request = DtmRequest(gid: gid, transType: TransType.xa.rawValue, transOptions: options.proto)
        try await prepare(request)
        let result: T
        do {
            result = try await body(XA(client: self, gid: gid))
        } catch {
            var abort = request
            abort.rollbackReason = "\(error)"
            try await self.abort(abort)
            throw error
        }
        try await submit(request)
        return result
    }

    /// Branch side of XA: registers the branch named by an incoming XA action call, so that the
    /// coordinator calls its `phase2_url` with op `commit` or `rollback`. A handler calls it in
    /// its local XA transaction, before preparing it (DTM's order: a branch that cannot register
    /// never prepares). On PostgreSQL, `PostgresBarrierDatabase.xaLocalTransaction` (in
    /// DtmClientPostgres) does all of it: the local transaction, this registration, PREPARE
    /// TRANSACTION and the phase-two calls.
    public func registerXABranch(_ info: TransInfo) async throws(DtmClientError) {
        guard !info.phase2URL.isEmpty else {
            throw .invalidArgument("XA action call of \(info.gid) carries no phase2_url; was it made by xaGlobalTransaction?")
        }
        try await registerBranch(DtmBranchRequest(gid: info.gid, transType: TransType.xa.rawValue, branchID: info.branchID,
                                                  op: "", data: ["url": info.phase2URL]))
    }
}
