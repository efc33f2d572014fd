internal import DtmProtoC

// The messages of `proto/dtmgimp.proto`, the coordinator's gRPC API (DTM-compatible).

/// `dtmgimp.DtmTransOptions`: per-transaction options; zero means "use the server default".
public struct DtmTransOptions: ProtoMessage {
    public var waitResult: Bool
    /// Seconds.
    public var timeoutToFail: Int64
    /// Seconds.
    public var retryInterval: Int64
    /// Headers the coordinator adds to every branch call.
    public var branchHeaders: [String: String]
    /// Seconds.
    public var requestTimeout: Int64
    public var retryLimit: Int64

    public init(
        waitResult: Bool = false, timeoutToFail: Int64 = 0, retryInterval: Int64 = 0,
        branchHeaders: [String: String] = [:], requestTimeout: Int64 = 0, retryLimit: Int64 = 0
    ) {
        self.waitResult = waitResult
        self.timeoutToFail = timeoutToFail
        self.retryInterval = retryInterval
        self.branchHeaders = branchHeaders
        self.requestTimeout = requestTimeout
        self.retryLimit = retryLimit
    }
}

/// `dtmgimp.DtmRequest`: the request of Submit, Prepare, Abort and PrepareWorkflow.
public struct DtmRequest: ProtoMessage {
    public var gid: String
    /// saga, tcc, msg, xa or workflow.
    public var transType: String
    /// Absent and present-but-default are different on the wire and both round-trip.
    public var transOptions: DtmTransOptions?
    /// JSON text (the spelling is DTM's).
    public var customedData: String
    /// One serialised business message per step.
    public var binPayloads: [[UInt8]]
    /// The msg back-check URL or the workflow callback URL.
    public var queryPrepared: String
    /// JSON text of the steps array.
    public var steps: String
    /// Workflow submit: status, rollback_reason, result.
    public var reqExtra: [String: String]
    public var rollbackReason: String

    public init(
        gid: String = "", transType: String = "", transOptions: DtmTransOptions? = nil,
        customedData: String = "", binPayloads: [[UInt8]] = [], queryPrepared: String = "",
        steps: String = "", reqExtra: [String: String] = [:], rollbackReason: String = ""
    ) {
        self.gid = gid
        self.transType = transType
        self.transOptions = transOptions
        self.customedData = customedData
        self.binPayloads = binPayloads
        self.queryPrepared = queryPrepared
        self.steps = steps
        self.reqExtra = reqExtra
        self.rollbackReason = rollbackReason
    }
}

/// `dtmgimp.DtmGidReply`: the reply of NewGid.
public struct DtmGidReply: ProtoMessage {
    public var gid: String

    public init(gid: String = "") {
        self.gid = gid
    }
}

/// `dtmgimp.DtmBranchRequest`: the request of RegisterBranch.
public struct DtmBranchRequest: ProtoMessage {
    public var gid: String
    public var transType: String
    public var branchID: String
    public var op: String
    /// tcc: confirm, cancel; xa: url; workflow: op, status.
    public var data: [String: String]
    public var busiPayload: [UInt8]

    public init(
        gid: String = "", transType: String = "", branchID: String = "", op: String = "",
        data: [String: String] = [:], busiPayload: [UInt8] = []
    ) {
        self.gid = gid
        self.transType = transType
        self.branchID = branchID
        self.op = op
        self.data = data
        self.busiPayload = busiPayload
    }
}

/// `dtmgimp.DtmProgressesReply`: the reply of PrepareWorkflow.
public struct DtmProgressesReply: ProtoMessage {
    public var transaction: DtmTransaction?
    public var progresses: [DtmProgress]

    public init(transaction: DtmTransaction? = nil, progresses: [DtmProgress] = []) {
        self.transaction = transaction
        self.progresses = progresses
    }
}

/// `dtmgimp.DtmTransaction`: a global transaction as PrepareWorkflow reports it.
public struct DtmTransaction: ProtoMessage {
    public var gid: String
    public var status: String
    public var rollbackReason: String
    public var result: String

    public init(gid: String = "", status: String = "", rollbackReason: String = "", result: String = "") {
        self.gid = gid
        self.status = status
        self.rollbackReason = rollbackReason
        self.result = result
    }
}

/// `dtmgimp.DtmProgress`: one branch of a workflow as PrepareWorkflow reports it.
public struct DtmProgress: ProtoMessage {
    public var status: String
    public var binData: [UInt8]
    public var branchID: String
    public var op: String

    public init(status: String = "", binData: [UInt8] = [], branchID: String = "", op: String = "") {
        self.status = status
        self.binData = binData
        self.branchID = branchID
        self.op = op
    }
}

/// `dtmgimp.DtmTopicRequest`: the request of Subscribe, Unsubscribe and DeleteTopic.
public struct DtmTopicRequest: ProtoMessage {
    public var topic: String
    public var url: String
    public var remark: String

    public init(topic: String = "", url: String = "", remark: String = "") {
        self.topic = topic
        self.url = url
        self.remark = remark
    }
}

// MARK: - protobuf-c

extension DtmTransOptions: CBackedMessage {
    static let codec = CCodec(
        dtmgimp__dtm_trans_options__descriptor, dtmgimp__dtm_trans_options__init,
        dtmgimp__dtm_trans_options__get_packed_size, dtmgimp__dtm_trans_options__pack,
        dtmgimp__dtm_trans_options__unpack, dtmgimp__dtm_trans_options__free_unpacked)

    init(copying c: Dtmgimp__DtmTransOptions) {
        self.init(
            waitResult: c.waitresult != 0, timeoutToFail: c.timeouttofail, retryInterval: c.retryinterval,
            branchHeaders: .init(copying: c.branchheaders, count: c.n_branchheaders),
            requestTimeout: c.requesttimeout, retryLimit: c.retrylimit)
    }

    func fill(_ c: inout Dtmgimp__DtmTransOptions, arena: CArena) {
        c.waitresult = waitResult ? 1 : 0
        c.timeouttofail = timeoutToFail
        c.retryinterval = retryInterval
        (c.n_branchheaders, c.branchheaders) = arena.map(branchHeaders)
        c.requesttimeout = requestTimeout
        c.retrylimit = retryLimit
    }
}

extension DtmRequest: CBackedMessage {
    static let codec = CCodec(
        dtmgimp__dtm_request__descriptor, dtmgimp__dtm_request__init,
        dtmgimp__dtm_request__get_packed_size, dtmgimp__dtm_request__pack,
        dtmgimp__dtm_request__unpack, dtmgimp__dtm_request__free_unpacked)

    init(copying c: Dtmgimp__DtmRequest) {
        self.init(
            gid: String(copying: c.gid), transType: String(copying: c.transtype),
            transOptions: .optional(copying: c.transoptions), customedData: String(copying: c.customeddata),
            binPayloads: .init(copying: c.binpayloads, count: c.n_binpayloads),
            queryPrepared: String(copying: c.queryprepared), steps: String(copying: c.steps),
            reqExtra: .init(copying: c.reqextra, count: c.n_reqextra),
            rollbackReason: String(copying: c.rollbackreason))
    }

    func fill(_ c: inout Dtmgimp__DtmRequest, arena: CArena) {
        c.gid = arena.string(gid)
        c.transtype = arena.string(transType)
        c.transoptions = transOptions.map(arena.message)
        c.customeddata = arena.string(customedData)
        (c.n_binpayloads, c.binpayloads) = arena.binaries(binPayloads)
        c.queryprepared = arena.string(queryPrepared)
        c.steps = arena.string(steps)
        (c.n_reqextra, c.reqextra) = arena.map(reqExtra)
        c.rollbackreason = arena.string(rollbackReason)
    }
}

extension DtmGidReply: CBackedMessage {
    static let codec = CCodec(
        dtmgimp__dtm_gid_reply__descriptor, dtmgimp__dtm_gid_reply__init,
        dtmgimp__dtm_gid_reply__get_packed_size, dtmgimp__dtm_gid_reply__pack,
        dtmgimp__dtm_gid_reply__unpack, dtmgimp__dtm_gid_reply__free_unpacked)

    init(copying c: Dtmgimp__DtmGidReply) {
        self.init(gid: String(copying: c.gid))
    }

    func fill(_ c: inout Dtmgimp__DtmGidReply, arena: CArena) {
        c.gid = arena.string(gid)
    }
}

extension DtmBranchRequest: CBackedMessage {
    static let codec = CCodec(
        dtmgimp__dtm_branch_request__descriptor, dtmgimp__dtm_branch_request__init,
        dtmgimp__dtm_branch_request__get_packed_size, dtmgimp__dtm_branch_request__pack,
        dtmgimp__dtm_branch_request__unpack, dtmgimp__dtm_branch_request__free_unpacked)

    init(copying c: Dtmgimp__DtmBranchRequest) {
        self.init(
            gid: String(copying: c.gid), transType: String(copying: c.transtype),
            branchID: String(copying: c.branchid), op: String(copying: c.op),
            data: .init(copying: c.data, count: c.n_data), busiPayload: .init(copying: c.busipayload))
    }

    func fill(_ c: inout Dtmgimp__DtmBranchRequest, arena: CArena) {
        c.gid = arena.string(gid)
        c.transtype = arena.string(transType)
        c.branchid = arena.string(branchID)
        c.op = arena.string(op)
        (c.n_data, c.data) = arena.map(data)
        c.busipayload = arena.binary(busiPayload)
    }
}

extension DtmProgressesReply: CBackedMessage {
    static let codec = CCodec(
        dtmgimp__dtm_progresses_reply__descriptor, dtmgimp__dtm_progresses_reply__init,
        dtmgimp__dtm_progresses_reply__get_packed_size, dtmgimp__dtm_progresses_reply__pack,
        dtmgimp__dtm_progresses_reply__unpack, dtmgimp__dtm_progresses_reply__free_unpacked)

    init(copying c: Dtmgimp__DtmProgressesReply) {
        self.init(
            transaction: .optional(copying: c.transaction),
            progresses: .init(copying: c.progresses, count: c.n_progresses))
    }

    func fill(_ c: inout Dtmgimp__DtmProgressesReply, arena: CArena) {
        c.transaction = transaction.map(arena.message)
        (c.n_progresses, c.progresses) = arena.messages(progresses)
    }
}

extension DtmTransaction: CBackedMessage {
    static let codec = CCodec(
        dtmgimp__dtm_transaction__descriptor, dtmgimp__dtm_transaction__init,
        dtmgimp__dtm_transaction__get_packed_size, dtmgimp__dtm_transaction__pack,
        dtmgimp__dtm_transaction__unpack, dtmgimp__dtm_transaction__free_unpacked)

    init(copying c: Dtmgimp__DtmTransaction) {
        self.init(
            gid: String(copying: c.gid), status: String(copying: c.status),
            rollbackReason: String(copying: c.rollbackreason), result: String(copying: c.result))
    }

    func fill(_ c: inout Dtmgimp__DtmTransaction, arena: CArena) {
        c.gid = arena.string(gid)
        c.status = arena.string(status)
        c.rollbackreason = arena.string(rollbackReason)
        c.result = arena.string(result)
    }
}

extension DtmProgress: CBackedMessage {
    static let codec = CCodec(
        dtmgimp__dtm_progress__descriptor, dtmgimp__dtm_progress__init,
        dtmgimp__dtm_progress__get_packed_size, dtmgimp__dtm_progress__pack,
        dtmgimp__dtm_progress__unpack, dtmgimp__dtm_progress__free_unpacked)

    init(copying c: Dtmgimp__DtmProgress) {
        self.init(
            status: String(copying: c.status), binData: .init(copying: c.bindata),
            branchID: String(copying: c.branchid), op: String(copying: c.op))
    }

    func fill(_ c: inout Dtmgimp__DtmProgress, arena: CArena) {
        c.status = arena.string(status)
        c.bindata = arena.binary(binData)
        c.branchid = arena.string(branchID)
        c.op = arena.string(op)
    }
}

extension DtmTopicRequest: CBackedMessage {
    static let codec = CCodec(
        dtmgimp__dtm_topic_request__descriptor, dtmgimp__dtm_topic_request__init,
        dtmgimp__dtm_topic_request__get_packed_size, dtmgimp__dtm_topic_request__pack,
        dtmgimp__dtm_topic_request__unpack, dtmgimp__dtm_topic_request__free_unpacked)

    init(copying c: Dtmgimp__DtmTopicRequest) {
        self.init(topic: String(copying: c.topic), url: String(copying: c.url), remark: String(copying: c.remark))
    }

    func fill(_ c: inout Dtmgimp__DtmTopicRequest, arena: CArena) {
        c.topic = arena.string(topic)
        c.url = arena.string(url)
        c.remark = arena.string(remark)
    }
}

extension Dtmgimp__DtmTransOptions__BranchHeadersEntry: CMapEntry {
    static func initialize(_ entry: UnsafeMutablePointer<Self>?) {
        dtmgimp__dtm_trans_options__branch_headers_entry__init(entry)
    }
}

extension Dtmgimp__DtmRequest__ReqExtraEntry: CMapEntry {
    static func initialize(_ entry: UnsafeMutablePointer<Self>?) {
        dtmgimp__dtm_request__req_extra_entry__init(entry)
    }
}

extension Dtmgimp__DtmBranchRequest__DataEntry: CMapEntry {
    static func initialize(_ entry: UnsafeMutablePointer<Self>?) {
        dtmgimp__dtm_branch_request__data_entry__init(entry)
    }
}
