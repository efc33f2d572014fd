import Foundation

/// Errors of the coordinator API. The gRPC and HTTP layers map each case in one place.
public enum DtmError: Error, Equatable, Sendable {
    /// The request was refused for good. gRPC ABORTED, HTTP 409 `{"dtm_result":"FAILURE"}`.
    /// The message is DTM's full text, ending in " FAILURE".
    case failure(String)
    /// The transaction is still in progress. gRPC FAILED_PRECONDITION, HTTP 425.
    case ongoing(String)
    /// Malformed request; the message names the field. gRPC INVALID_ARGUMENT, HTTP 400.
    case invalidArgument(String)
    /// The gid does not exist (DTM answers 500 with this text).
    case notFound(String)
    /// Anything else (DTM answers HTTP 500 / gRPC UNKNOWN).
    case `internal`(String)
    /// The store failed or a compare-and-set lost a race (DTM: 500).
    case storage(StoreError)
    /// The coordinator is over a configured limit; retry later. gRPC RESOURCE_EXHAUSTED, HTTP 503 with Retry-After.
    case overloaded(String)
    /// The coordinator cannot serve (its store is unhealthy). gRPC UNAVAILABLE, HTTP 503.
    case unavailable(String)
    /// The caller may not do this (a gid outside its token's prefix, a branch URL outside the
    /// allow-list). gRPC PERMISSION_DENIED, HTTP 403.
    case permissionDenied(String)

    public var message: String {
        switch self {
        case .failure(let text), .ongoing(let text), .invalidArgument(let text), .notFound(let text),
             .internal(let text), .overloaded(let text), .unavailable(let text), .permissionDenied(let text):
            return text
        case .storage(let error):
            switch error {
            case .notFound(let text), .uniqueConflict(let text), .database(let text): return text
            }
        }
    }
}

/// A prepare / submit / abort / prepareWorkflow / forceStop request, as both wire layers
/// decode it (HTTP trans body, gRPC DtmRequest).
public struct TransRequest: Sendable, Equatable {
    public var gid: String
    /// `trans_type` as received; checked by the engine.
    public var transType: String
    /// saga: `{"action":url,"compensate":url}`; msg: `{"action":url}` (or `topic://name`).
    /// A legacy step may carry its payload under `"data"`.
    public var steps: [[String: String]]
    /// One body per step (HTTP `payloads` as bytes, gRPC `BinPayloads`).
    public var payloads: [[UInt8]]
    public var queryPrepared: String
    /// `protocol` as received: "" means http; the gRPC layer passes "grpc".
    public var transProtocol: String
    public var customData: String
    public var options: TransOptions
    /// Workflow submit: `status`, `rollback_reason`, `result`.
    public var reqExtra: [String: String]
    public var rollbackReason: String

    public init(gid: String, transType: String, steps: [[String: String]] = [], payloads: [[UInt8]] = [],
                queryPrepared: String = "", transProtocol: String = "", customData: String = "",
                options: TransOptions = TransOptions(), reqExtra: [String: String] = [:],
                rollbackReason: String = "") {
        self.gid = gid
        self.transType = transType
        self.steps = steps
        self.payloads = payloads
        self.queryPrepared = queryPrepared
        self.transProtocol = transProtocol
        self.customData = customData
        self.options = options
        self.reqExtra = reqExtra
        self.rollbackReason = rollbackReason
    }
}

/// A registerBranch request (HTTP flat map, gRPC DtmBranchRequest).
public struct BranchRegistration: Sendable, Equatable {
    public var gid: String
    public var transType: String
    public var branchID: String
    /// tcc: `confirm`, `cancel`; xa: `url`; workflow: `op`, `status` (+ `sync`); HTTP: `data`.
    public var data: [String: String]
    /// gRPC BusiPayload. When empty, `data["data"]` (HTTP) is stored instead.
    public var payload: [UInt8]

    public init(gid: String, transType: String, branchID: String, data: [String: String] = [:],
                payload: [UInt8] = []) {
        self.gid = gid
        self.transType = transType
        self.branchID = branchID
        self.data = data
        self.payload = payload
    }

    /// The bytes stored as the rows' bin_data.
    public var binData: [UInt8] { payload.isEmpty ? Array((data["data"] ?? "").utf8) : payload }
}

/// The longest gid the stores accept (DTM's column width).
public let maxGidLength = 128

/// The longest timeout, retry interval or msg delay accepted, in seconds (ten years): far
/// beyond any real setting, and far from the dates a store can no longer represent.
public let maxOptionSeconds: Int64 = 315_360_000

/// A request that passed the checks every operation needs.
struct CheckedRequest {
    var request: TransRequest
    var transType: TransType
    var transProtocol: TransProtocol
    /// Payloads followed by legacy `steps[i]["data"]`, as DTM normalises them.
    var payloads: [[UInt8]]
}

package enum Validation {
    static func gid(_ gid: String) throws(DtmError) {
        try identifier(gid, field: "gid", max: maxGidLength)
    }

    static func transType(_ text: String) throws(DtmError) -> TransType {
        guard let type = TransType(rawValue: text) else {
            let known = TransType.allCases.map(\.rawValue).joined(separator: ", ")
            throw DtmError.invalidArgument(text.isEmpty ? "trans_type: must not be empty (one of \(known))"
                                                        : "trans_type: unknown '\(text)' (one of \(known))")
        }
        return type
    }

    /// Checks everything a new transaction needs; nothing is stored for a bad request.
    static func newTransaction(_ request: TransRequest, limits: RequestLimits) throws(DtmError) -> CheckedRequest {
        try gid(request.gid)
        let type = try transType(request.transType)
        guard let proto = request.transProtocol.isEmpty ? .http : TransProtocol(rawValue: request.transProtocol) else {
            throw DtmError.invalidArgument("protocol: unknown '\(request.transProtocol)' (http, grpc or json-rpc)")
        }
        try options(request.options, limits: limits)
        if request.steps.count > limits.maxSteps {
            throw DtmError.invalidArgument("steps: \(request.steps.count) steps, at most \(limits.maxSteps) allowed")
        }
        if request.customData.utf8.count > limits.maxCustomDataBytes {
            throw DtmError.invalidArgument(
                "custom_data: \(request.customData.utf8.count) bytes, at most \(limits.maxCustomDataBytes) allowed")
        }
        try text(request.rollbackReason, field: "rollback_reason", max: limits.maxReasonBytes)
        try url(request.queryPrepared, field: "query_prepared", transProtocol: proto, limits: limits)
        var payloads = request.payloads
        for (index, step) in request.steps.enumerated() {
            if let action = step["action"], !(type == .msg && action.hasPrefix(msgTopicPrefix)) {
                try url(action, field: "steps[\(index)].action", transProtocol: proto, limits: limits)
            }
            if let compensate = step["compensate"] {
                try url(compensate, field: "steps[\(index)].compensate", transProtocol: proto, limits: limits)
            }
            if let data = step["data"], !data.isEmpty { payloads.append(Array(data.utf8)) }
        }
        if type == .saga || type == .msg {
            if payloads.count != request.steps.count {
                throw DtmError.invalidArgument(
                    "payloads: \(payloads.count) payloads for \(request.steps.count) steps (need one per step)")
            }
        }
        do {
            switch type {
            case .saga:
                try SagaCustomData.parse(request.customData).check(stepCount: request.steps.count)
            case .msg:
                _ = try MsgCustomData.parse(request.customData)
            case .workflow:
                _ = try WorkflowCustomData.parse(request.customData)
            case .tcc, .xa:
                break
            }
        } catch {
            throw DtmError.invalidArgument("custom_data: \(error.message)")
        }
        return CheckedRequest(request: request, transType: type, transProtocol: proto, payloads: payloads)
    }

    package static func options(_ options: TransOptions, limits: RequestLimits) throws(DtmError) {
        // Every sign first, then every bound (no array built per request).
        for check in [false, true] {
            try option("timeout_to_fail", options.timeoutToFail, maxOptionSeconds, checkingBound: check)
            try option("retry_interval", options.retryInterval, maxOptionSeconds, checkingBound: check)
            try option("request_timeout", options.requestTimeout, limits.maxRequestTimeout, checkingBound: check)
            try option("retry_limit", options.retryLimit, limits.maxRetryLimit, checkingBound: check)
        }
        try branchHeaders(options.branchHeaders, limits: limits)
    }

    private static func option(_ name: StaticString, _ value: Int64, _ bound: Int64,
                               checkingBound: Bool) throws(DtmError) {
        if !checkingBound, value < 0 {
            throw DtmError.invalidArgument("\(name): must not be negative (got \(value))")
        }
        if checkingBound, value > bound {
            let unit = name.description == "retry_limit" ? "" : " seconds"
            throw DtmError.invalidArgument("\(name): must be at most \(bound)\(unit) (got \(value))")
        }
    }
}
