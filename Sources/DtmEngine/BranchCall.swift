import Foundation

/// Identifies a branch row, or a call that has no row (msg back-check, workflow resume).
public struct CallKey: Hashable, Sendable, CustomStringConvertible {
    public var branchID: String
    public var op: BranchOp

    public init(_ branchID: String, _ op: BranchOp) {
        self.branchID = branchID
        self.op = op
    }

    public var description: String { "\(branchID)/\(op)" }
}

/// One outbound call the engine wants made: a branch row's operation, the msg back-check
/// (branch "00", op `msg`) or a workflow resume (branch "00", op = workflow name).
public struct BranchCall: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Calls a stored branch row; its result is recorded on that row.
        case branch
        /// msg back-check at query_prepared: decides submitted / failed.
        case backCheck
        /// Workflow callback at query_prepared: result only logged.
        case workflowResume
    }

    public var kind: Kind
    public var branchID: String
    public var op: BranchOp
    /// Empty means "succeeds without a call" (the engine never hands such a call to a caller).
    public var url: String
    /// Request body: the stored payload, nothing for the back-check, the workflow input for
    /// a resume (protobuf `WorkflowData` when the transaction's protocol is gRPC).
    public var payload: [UInt8]
    /// Seconds to wait for the answer: request_timeout or the server's RequestTimeout.
    public var requestTimeout: Int64

    public init(kind: Kind = .branch, branchID: String, op: BranchOp, url: String,
                payload: [UInt8] = [], requestTimeout: Int64) {
        self.kind = kind
        self.branchID = branchID
        self.op = op
        self.url = url
        self.payload = payload
        self.requestTimeout = requestTimeout
    }

    public var key: CallKey { CallKey(branchID, op) }

    /// Spec 4.2: POST when there is a body or the transaction is xa, else GET.
    public func httpMethod(for transType: TransType) -> String {
        !payload.isEmpty || transType == .xa ? "POST" : "GET"
    }

    /// Spec 4.1: HTTP when the protocol is http or the URL is an http(s) URL; else gRPC.
    /// (json-rpc transactions call http URLs containing `method` with JSON-RPC.)
    public func usesHTTP(_ transProtocol: TransProtocol) -> Bool {
        transProtocol == .http || url.hasPrefix("http://") || url.hasPrefix("https://")
    }
}

/// The transport the server provides: gRPC and HTTP/JSON-RPC clients.
///
/// The transaction gives gid, trans_type, protocol and `options.branchHeaders` (HTTP headers
/// or gRPC metadata on every call, next to the `dtm-gid`… metadata of spec 4.3). A
/// `.failure` carries the HTTP body or gRPC status message. Implementations map the answer
/// to the three DTM results per spec 2.4 / 4.2 and everything else (including timeouts and
/// cancellation) to `.error`. They must not throw and may be called concurrently. Calls
/// with an empty URL never reach them (the engine treats those as successes).
public protocol BranchCaller: Sendable {
    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult

    /// Whether every call returns on its own within the call's request timeout (at least 1 s),
    /// plus the moment it takes to notice, and soon after its task is cancelled. The driver
    /// then runs a lone call in the pass's own task instead of starting a child task that the
    /// pass deadline could abandon (see `TransactionDriver.process`). False unless declared.
    var endsCallsWithinTimeout: Bool { get }
}

extension BranchCaller {
    public var endsCallsWithinTimeout: Bool { false }
}

extension BranchResult {
    public var isSuccess: Bool { self == .success }

    /// The answer as text (FAILURE answers end in " FAILURE", as DTM prints them).
    public var message: String {
        switch self {
        case .success: return "SUCCESS"
        case .ongoing: return DtmText.ongoing
        case .failure(let message): return DtmText.withFailure(message)
        case .error(let message): return message
        }
    }
}
