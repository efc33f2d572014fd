import Foundation

/// The transaction modes DTM defines (`trans_type` on the wire).
public enum TransType: String, Sendable, Codable, CaseIterable {
    case saga, tcc, msg, xa, workflow
}

/// Status of a global transaction. `succeed` and `failed` are final.
public enum GlobalStatus: String, Sendable, Codable, CaseIterable {
    case prepared, submitted, aborting, succeed, failed

    /// Final states are never left again and never picked by the cron.
    public var isFinished: Bool { self == .succeed || self == .failed }
}

/// Status of one branch operation row.
public enum BranchStatus: String, Sendable, Codable, CaseIterable {
    case prepared, succeed, failed
}

/// The operation of a branch row or of a branch call (`op` on the wire).
///
/// A struct rather than an enum because a workflow resume call carries the
/// workflow's name as its op; the stored rows only use the named constants.
public struct BranchOp: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let action = BranchOp("action")
    public static let compensate = BranchOp("compensate")
    public static let `try` = BranchOp("try")
    public static let confirm = BranchOp("confirm")
    public static let cancel = BranchOp("cancel")
    public static let commit = BranchOp("commit")
    public static let rollback = BranchOp("rollback")
    /// The msg back-check (`query_prepared`) call and the DoAndSubmit barrier.
    public static let msg = BranchOp("msg")
}

/// How branches of a transaction are called by default (`protocol` on the wire).
public enum TransProtocol: String, Sendable, Codable, CaseIterable {
    case http
    case grpc
    case jsonRPC = "json-rpc"
}

/// The three result kinds of a branch call; anything else is a transient error.
public enum BranchResult: Sendable, Equatable {
    case success
    /// The branch refused for good (gRPC ABORTED, HTTP 409, body containing FAILURE).
    case failure(message: String)
    /// The branch is still working (gRPC FAILED_PRECONDITION, HTTP 425, body containing ONGOING).
    case ongoing
    /// Transport error, timeout or any other answer: retry later with backoff.
    case error(message: String)
}

/// Per-transaction options; zero means "use the server default".
public struct TransOptions: Sendable, Equatable, Codable {
    public var waitResult: Bool
    /// Seconds after creation before the transaction times out (0: server default, none for saga).
    public var timeoutToFail: Int64
    /// Base retry interval in seconds (0: server default).
    public var retryInterval: Int64
    /// Extra headers / gRPC metadata sent with every branch call.
    public var branchHeaders: [String: String]
    /// Timeout of each branch call in seconds (0: server default).
    public var requestTimeout: Int64
    /// Saga only: immediate retries of an erroring action before aborting (0: unlimited).
    public var retryLimit: Int64
    /// msg over HTTP: call the steps concurrently.
    public var concurrent: Bool

    public init(waitResult: Bool = false, timeoutToFail: Int64 = 0, retryInterval: Int64 = 0,
                branchHeaders: [String: String] = [:], requestTimeout: Int64 = 0,
                retryLimit: Int64 = 0, concurrent: Bool = false) {
        self.waitResult = waitResult
        self.timeoutToFail = timeoutToFail
        self.retryInterval = retryInterval
        self.branchHeaders = branchHeaders
        self.requestTimeout = requestTimeout
        self.retryLimit = retryLimit
        self.concurrent = concurrent
    }

    /// DTM writes options with zero values left out, so every key is optional.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        waitResult = try container.decodeIfPresent(Bool.self, forKey: .waitResult) ?? false
        timeoutToFail = try container.decodeIfPresent(Int64.self, forKey: .timeoutToFail) ?? 0
        retryInterval = try container.decodeIfPresent(Int64.self, forKey: .retryInterval) ?? 0
        branchHeaders = try container.decodeIfPresent([String: String].self, forKey: .branchHeaders) ?? [:]
        requestTimeout = try container.decodeIfPresent(Int64.self, forKey: .requestTimeout) ?? 0
        retryLimit = try container.decodeIfPresent(Int64.self, forKey: .retryLimit) ?? 0
        concurrent = try container.decodeIfPresent(Bool.self, forKey: .concurrent) ?? false
    }

    enum CodingKeys: String, CodingKey {
        case waitResult = "wait_result", timeoutToFail = "timeout_to_fail"
        case retryInterval = "retry_interval", branchHeaders = "branch_headers"
        case requestTimeout = "request_timeout", retryLimit = "retry_limit", concurrent
    }
}

/// A global transaction as stored (`trans_global`).
///
/// Its nineteen fields (eight of them strings) live in one shared box that is copied only when
/// a copy is changed (copy on write). The engine passes a transaction through requests, the retry
/// loop's queue, a pass, its report and every branch call; as a plain struct each of those copies
/// retained and released every string (about 2% of the event loop's time per saga), now it is one
/// reference count.
public struct GlobalTransaction: Sendable, Equatable {
    /// The stored values. Only ever changed through a uniquely referenced box (`fields`' modify).
    private final class Box: @unchecked Sendable {
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private struct Fields: Equatable {
        var id: Int64?
        var gid: String
        var transType: TransType
        var status: GlobalStatus
        var queryPrepared: String
        var transProtocol: TransProtocol
        var createTime: Date
        var updateTime: Date
        var finishTime: Date?
        var rollbackTime: Date?
        var options: TransOptions
        var customData: String
        var nextCronInterval: Int64
        var nextCronTime: Date
        var owner: String
        var extData: String
        var result: String
        var rollbackReason: String
        var quarantine: String = ""
    }

    private var box: Box

    /// Read in place; changed in place when this copy is the box's only owner, else in a new box.
    private var fields: Fields {
        get { box.fields }
        _modify {
            if !isKnownUniquelyReferenced(&box) { box = Box(box.fields) }
            yield &box.fields
        }
    }

    /// Store-assigned row id (paging cursor); nil before the first save.
    public var id: Int64? {
        get { box.fields.id }
        set { fields.id = newValue }
    }
    public var gid: String {
        get { box.fields.gid }
        set { fields.gid = newValue }
    }
    public var transType: TransType {
        get { box.fields.transType }
        set { fields.transType = newValue }
    }
    public var status: GlobalStatus {
        get { box.fields.status }
        set { fields.status = newValue }
    }
    /// msg back-check URL or workflow callback URL.
    public var queryPrepared: String {
        get { box.fields.queryPrepared }
        set { fields.queryPrepared = newValue }
    }
    public var transProtocol: TransProtocol {
        get { box.fields.transProtocol }
        set { fields.transProtocol = newValue }
    }
    public var createTime: Date {
        get { box.fields.createTime }
        set { fields.createTime = newValue }
    }
    public var updateTime: Date {
        get { box.fields.updateTime }
        set { fields.updateTime = newValue }
    }
    public var finishTime: Date? {
        get { box.fields.finishTime }
        set { fields.finishTime = newValue }
    }
    public var rollbackTime: Date? {
        get { box.fields.rollbackTime }
        set { fields.rollbackTime = newValue }
    }
    public var options: TransOptions {
        get { box.fields.options }
        set { fields.options = newValue }
    }
    /// JSON text: saga `orders`/`concurrent`, msg `delay`, workflow `name`/`data`.
    public var customData: String {
        get { box.fields.customData }
        set { fields.customData = newValue }
    }
    /// Seconds between retries; doubles on errors.
    public var nextCronInterval: Int64 {
        get { box.fields.nextCronInterval }
        set { fields.nextCronInterval = newValue }
    }
    /// When the cron should next look at this transaction (also the lease expiry).
    public var nextCronTime: Date {
        get { box.fields.nextCronTime }
        set { fields.nextCronTime = newValue }
    }
    /// Which coordinator last leased this transaction.
    public var owner: String {
        get { box.fields.owner }
        set { fields.owner = newValue }
    }
    public var extData: String {
        get { box.fields.extData }
        set { fields.extData = newValue }
    }
    /// Workflow result (base64).
    public var result: String {
        get { box.fields.result }
        set { fields.result = newValue }
    }
    public var rollbackReason: String {
        get { box.fields.rollbackReason }
        set { fields.rollbackReason = newValue }
    }
    /// Why the stored row could not be read as written (bad options, unknown mode…); empty
    /// for a sound row. A quarantined transaction is never driven; forceStop ends it.
    public var quarantine: String {
        get { box.fields.quarantine }
        set { fields.quarantine = newValue }
    }

    /// Whether the row is set aside (see `quarantine`).
    public var isQuarantined: Bool { !box.fields.quarantine.isEmpty }

    public init(id: Int64? = nil, gid: String, transType: TransType, status: GlobalStatus,
                queryPrepared: String = "", transProtocol: TransProtocol = .http,
                createTime: Date, updateTime: Date? = nil, finishTime: Date? = nil,
                rollbackTime: Date? = nil, options: TransOptions = TransOptions(),
                customData: String = "", nextCronInterval: Int64 = 0, nextCronTime: Date? = nil,
                owner: String = "", extData: String = "", result: String = "",
                rollbackReason: String = "") {
        box = Box(Fields(id: id, gid: gid, transType: transType, status: status, queryPrepared: queryPrepared,
                         transProtocol: transProtocol, createTime: createTime, updateTime: updateTime ?? createTime,
                         finishTime: finishTime, rollbackTime: rollbackTime, options: options,
                         customData: customData, nextCronInterval: nextCronInterval,
                         nextCronTime: nextCronTime ?? createTime, owner: owner, extData: extData, result: result,
                         rollbackReason: rollbackReason))
    }

    public static func == (lhs: GlobalTransaction, rhs: GlobalTransaction) -> Bool {
        lhs.box === rhs.box || lhs.box.fields == rhs.box.fields
    }
}

extension GlobalTransaction: CustomReflectable {
    /// The fields, as a plain struct would show them (test failures, `dump`).
    public var customMirror: Mirror {
        let f = box.fields
        return Mirror(self, children: [
            "id": f.id as Any,
            "gid": f.gid,
            "transType": f.transType,
            "status": f.status,
            "queryPrepared": f.queryPrepared,
            "transProtocol": f.transProtocol,
            "createTime": f.createTime,
            "updateTime": f.updateTime,
            "finishTime": f.finishTime as Any,
            "rollbackTime": f.rollbackTime as Any,
            "options": f.options,
            "customData": f.customData,
            "nextCronInterval": f.nextCronInterval,
            "nextCronTime": f.nextCronTime,
            "owner": f.owner,
            "extData": f.extData,
            "result": f.result,
            "rollbackReason": f.rollbackReason,
            "quarantine": f.quarantine,
        ], displayStyle: .struct)
    }
}

/// One branch operation row (`trans_branch_op`); unique per (gid, branchID, op).
public struct BranchRecord: Sendable, Equatable {
    /// Store-assigned row id; rows are processed in id (insertion) order.
    public var id: Int64?
    public var gid: String
    public var url: String
    /// The payload sent to the branch (or a workflow step's result).
    public var binData: [UInt8]
    public var branchID: String
    public var op: BranchOp
    public var status: BranchStatus
    public var createTime: Date
    public var updateTime: Date
    public var finishTime: Date?
    public var rollbackTime: Date?

    public init(id: Int64? = nil, gid: String, url: String, binData: [UInt8] = [],
                branchID: String, op: BranchOp, status: BranchStatus = .prepared,
                createTime: Date, updateTime: Date? = nil, finishTime: Date? = nil,
                rollbackTime: Date? = nil) {
        self.id = id
        self.gid = gid
        self.url = url
        self.binData = binData
        self.branchID = branchID
        self.op = op
        self.status = status
        self.createTime = createTime
        self.updateTime = updateTime ?? createTime
        self.finishTime = finishTime
        self.rollbackTime = rollbackTime
    }
}

/// A source of the current time, injected so engine tests never sleep.
public protocol DtmClock: Sendable {
    func now() -> Date
}

/// The wall clock.
public struct SystemClock: DtmClock {
    public init() {}
    public func now() -> Date { Date() }
}

extension TransOptions {
    /// The JSON text stored in the `options` column, shaped as DTM writes it: zero values left
    /// out, `concurrent` always present. Written by hand: it is encoded on every Submit.
    public var jsonText: String {
        // DTM's field order (Go marshals struct fields in declaration order).
        var fields: [String] = []
        if waitResult { fields.append("\"wait_result\":true") }
        if timeoutToFail != 0 { fields.append("\"timeout_to_fail\":\(timeoutToFail)") }
        if requestTimeout != 0 { fields.append("\"request_timeout\":\(requestTimeout)") }
        if retryInterval != 0 { fields.append("\"retry_interval\":\(retryInterval)") }
        if !branchHeaders.isEmpty {
            let pairs = branchHeaders.sorted { $0.key < $1.key }.map { "\(jsonQuoted($0.key)):\(jsonQuoted($0.value))" }
            fields.append("\"branch_headers\":{\(pairs.joined(separator: ","))}")
        }
        fields.append("\"concurrent\":\(concurrent)")
        if retryLimit != 0 { fields.append("\"retry_limit\":\(retryLimit)") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    /// Reads `jsonText` (or DTM's own options JSON); nil when it is not a JSON object of
    /// options with the right types.
    public init?(jsonText: String) {
        guard case .object(let object) = JSONValue.parse(jsonText) else { return nil }
        self.init()
        func integer(_ key: String) -> Int64?? {
            guard let value = object[key], value != .null else { return .some(nil) }
            return value.integer.map { .some($0) } ?? nil
        }
        func flag(_ key: String) -> Bool?? {
            switch object[key] {
            case nil, .null?: return .some(nil)
            case .bool(let value)?: return .some(value)
            default: return nil
            }
        }
        guard let timeout = integer("timeout_to_fail"), let retry = integer("retry_interval"),
              let request = integer("request_timeout"), let limit = integer("retry_limit"),
              let wait = flag("wait_result"), let concurrent = flag("concurrent") else { return nil }
        timeoutToFail = timeout ?? 0
        retryInterval = retry ?? 0
        requestTimeout = request ?? 0
        retryLimit = limit ?? 0
        waitResult = wait ?? false
        self.concurrent = concurrent ?? false
        switch object["branch_headers"] {
        case nil, .null?: break
        case .object(let headers)?:
            for (key, value) in headers {
                guard case .string(let text) = value else { return nil }
                branchHeaders[key] = text
            }
        default: return nil
        }
    }
}

/// `text` as a JSON string literal.
public func jsonQuoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
                + String(scalar.value, radix: 16)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
