/// A two-phase message (spec 3.5): actions the coordinator calls until each succeeds, once the
/// message is submitted. `doAndSubmit` ties the submit to a local database transaction.
public struct Msg: Sendable {
    public let client: DtmClient
    public let gid: String
    public var options: TransOptions
    /// Seconds to wait after submit before the first action is called.
    public var delay: Int64 = 0
    private(set) var actions: [String] = []
    private(set) var payloads: [[UInt8]] = []

    public init(_ client: DtmClient, gid: String, options: TransOptions = TransOptions()) {
        self.client = client
        self.gid = gid
        self.options = options
    }

    @discardableResult
    public mutating func add(action: String, payload: some BranchPayload) -> Self {
        actions.append(action)
        payloads.append(payload.payloadBytes)
        return self
    }

    /// The `DtmRequest` of this message; `queryPrepared` is the back-check URL.
    public func request(queryPrepared: String = "") -> DtmRequest {
        DtmRequest(gid: gid, transType: TransType.msg.rawValue, transOptions: options.proto,
                   customedData: delay > 0 ? JSON.text(["delay": delay]) : "", binPayloads: payloads,
                   queryPrepared: queryPrepared, steps: JSON.text(actions.map { ["action": $0] }))
    }

    /// Phase one: the coordinator keeps the message and back-checks `queryPrepared` if no submit
    /// comes before the timeout.
    public func prepare(queryPrepared: String) async throws(DtmClientError) {
        try await client.prepare(request(queryPrepared: queryPrepared))
    }

    /// Phase two (or the only call, for a message without a local transaction).
    public func submit() async throws(DtmClientError) {
        try await client.submit(request())
    }

    /// Prepares, runs `body` inside a local transaction on `database` guarded by the barrier
    /// (branch `00`, op `msg`), and submits when it committed. When `body` throws FAILURE the
    /// message is aborted; on any other error the back-check decides (DTM's DoAndSubmit): the
    /// message is submitted when the local transaction committed after all, aborted when it did
    /// not, and left to the coordinator's back-check when that cannot be reached. The error is
    /// rethrown in every case. `queryPrepared` must be served by
    /// `BranchBarrier.queryPrepared(on:)` on the same database.
    public func doAndSubmit<Database: BarrierDatabase, T: Sendable>(
        queryPrepared: String, database: Database,
        _ body: (Database.Transaction) async throws -> T
    ) async throws -> T {
        let info = try TransInfo(transType: TransType.msg.rawValue, gid: gid, branchID: "00", op: BranchOp.msg)
        try await prepare(queryPrepared: queryPrepared)
        var barrier = BranchBarrier(info)
        let result: T
        do {
            // The msg barrier never skips: a second run throws DUPLICATED instead.
            guard let value = try await barrier.call(database, body) else { throw DtmClientError.duplicated }
            result = value
        } catch {
            var failed = (error as? DtmClientError)?.isFailure ?? false
            var committed = false
            if !failed {
                // The local transaction's fate is unknown to us (its commit may have gone through
                // with the answer lost): ask the back-check, as DTM's DoAndSubmit does.
                do {
                    _ = try await client.callBranch(queryPrepared, payload: [], info: info)
                    committed = true
                } catch let checkError {
                    failed = checkError.isFailure
                }
            }
            // The caller gets the local transaction's error either way; when this abort or submit
            // fails, the coordinator's own back-check decides later (DTM ignores them too).
            if failed {
                try? await client.abort(DtmRequest(gid: gid, transType: TransType.msg.rawValue))
            } else if committed {
                try? await submit()
            }
            throw error
        }
        try await submit()
        return result
    }
}
