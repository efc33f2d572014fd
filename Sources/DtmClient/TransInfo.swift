import DtmGRPC

/// DTM's wire constants the SDK uses.
public enum TransType: String, Sendable, CaseIterable {
    case saga, tcc, msg, xa, workflow
}

/// Branch operations, as the coordinator and the SDK name them in `op`.
public enum BranchOp {
    public static let action = "action"
    public static let compensate = "compensate"
    public static let `try` = "try"
    public static let confirm = "confirm"
    public static let cancel = "cancel"
    public static let commit = "commit"
    public static let rollback = "rollback"
    public static let msg = "msg"
}

/// Which transaction and branch a call to a branch service belongs to: what DTM sends as the
/// query parameters `gid`, `trans_type`, `branch_id`, `op` (HTTP) or the metadata `dtm-gid`,
/// `dtm-trans_type`, `dtm-branch_id`, `dtm-op` (gRPC). The barrier is keyed by it.
public struct TransInfo: Sendable, Hashable, CustomStringConvertible {
    public var transType: String
    public var gid: String
    public var branchID: String
    public var op: String
    /// The coordinator's address, set on calls made by an SDK (TCC try, XA action), empty on
    /// calls made by the coordinator.
    public var dtm: String
    /// XA actions only: the URL the coordinator calls for phase two.
    public var phase2URL: String

    /// - Throws: `invalidArgument` when one of the four identifying fields is empty (DTM's
    ///   "invalid trans info").
    public init(transType: String, gid: String, branchID: String, op: String, dtm: String = "",
                phase2URL: String = "") throws(DtmClientError) {
        guard !transType.isEmpty, !gid.isEmpty, !branchID.isEmpty, !op.isEmpty else {
            throw .invalidArgument("invalid trans info: trans_type '\(transType)', gid '\(gid)', branch_id '\(branchID)', "
                + "op '\(op)' (all four are required; is this a call from the DTM coordinator?)")
        }
        self.transType = transType
        self.gid = gid
        self.branchID = branchID
        self.op = op
        self.dtm = dtm
        self.phase2URL = phase2URL
    }

    /// From the `dtm-*` metadata of a gRPC branch call.
    public init(metadata: Metadata) throws(DtmClientError) {
        try self.init(transType: metadata["dtm-trans_type"] ?? "", gid: metadata["dtm-gid"] ?? "",
                      branchID: metadata["dtm-branch_id"] ?? "", op: metadata["dtm-op"] ?? "",
                      dtm: metadata["dtm-dtm"] ?? "", phase2URL: metadata["dtm-phase2_url"] ?? "")
    }

    /// From the query parameters of an HTTP branch call.
    public init(query: [String: String]) throws(DtmClientError) {
        try self.init(transType: query["trans_type"] ?? "", gid: query["gid"] ?? "",
                      branchID: query["branch_id"] ?? "", op: query["op"] ?? "",
                      dtm: query["dtm"] ?? "", phase2URL: query["phase2_url"] ?? "")
    }

    /// The gRPC metadata an SDK sends with a branch call (spec 4.3), plus `headers`.
    public func metadata(headers: [String: String] = [:]) -> Metadata {
        var metadata = Metadata()
        metadata.add("dtm-gid", gid)
        metadata.add("dtm-trans_type", transType)
        metadata.add("dtm-branch_id", branchID)
        metadata.add("dtm-op", op)
        metadata.add("dtm-dtm", dtm)
        if !phase2URL.isEmpty { metadata.add("dtm-phase2_url", phase2URL) }
        for (key, value) in headers.sorted(by: { $0.key < $1.key }) { metadata.add(key, value) }
        return metadata
    }

    /// The query parameters an SDK sends with an HTTP branch call (spec 4.2).
    public var queryItems: [(String, String)] {
        var items = [("gid", gid), ("trans_type", transType), ("branch_id", branchID), ("op", op), ("dtm", dtm)]
        if !phase2URL.isEmpty { items.append(("phase2_url", phase2URL)) }
        return items
    }

    public var description: String { "\(transType) \(gid) branch \(branchID) op \(op)" }
}

/// Per-transaction options (spec 5.1); zero means the coordinator's default.
public struct TransOptions: Sendable, Hashable {
    /// Submit returns only when the transaction has finished (a FAILURE if it rolled back).
    public var waitResult: Bool
    /// Seconds after which an unfinished transaction rolls back.
    public var timeoutToFail: Int64
    /// Seconds between retries of an erroring branch (doubling) or an ONGOING one (fixed).
    public var retryInterval: Int64
    /// Seconds the coordinator waits for one branch call.
    public var requestTimeout: Int64
    /// Saga: immediate retries of an erroring action before the saga rolls back.
    public var retryLimit: Int64
    /// Headers (HTTP) or metadata (gRPC) the coordinator adds to every branch call.
    public var branchHeaders: [String: String]

    public init(waitResult: Bool = false, timeoutToFail: Int64 = 0, retryInterval: Int64 = 0,
                requestTimeout: Int64 = 0, retryLimit: Int64 = 0, branchHeaders: [String: String] = [:]) {
        self.waitResult = waitResult
        self.timeoutToFail = timeoutToFail
        self.retryInterval = retryInterval
        self.requestTimeout = requestTimeout
        self.retryLimit = retryLimit
        self.branchHeaders = branchHeaders
    }
}

/// DTM's client-side branch ids: the parent's id followed by a two-digit counter (spec 3.10).
struct BranchIDGenerator: Sendable {
    let parent: String
    private var counter = 0

    init(parent: String = "") {
        self.parent = parent
    }

    mutating func next() throws(DtmClientError) -> String {
        guard counter < 99 else { throw .invalidArgument("more than 99 branches under '\(parent)'") }
        guard parent.utf8.count < 20 else { throw .invalidArgument("branch id '\(parent)' is too long to nest under") }
        counter += 1
        return parent + (counter < 10 ? "0\(counter)" : "\(counter)")
    }
}
