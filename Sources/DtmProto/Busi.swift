internal import DtmProtoC

// The messages of `proto/busi.proto`, the example business service used by tests and benchmarks.

/// `busi.ReqGrpc`: a transfer, with results a test can inject into each branch.
public struct BusiReqGrpc: ProtoMessage {
    public var amount: Int64
    /// "", SUCCESS, FAILURE, ONGOING or anything else (an error).
    public var transOutResult: String
    /// "", SUCCESS, FAILURE, ONGOING or anything else (an error).
    public var transInResult: String

    public init(amount: Int64 = 0, transOutResult: String = "", transInResult: String = "") {
        self.amount = amount
        self.transOutResult = transOutResult
        self.transInResult = transInResult
    }
}

/// `busi.BusiReply`: the reply of QueryPrepared.
public struct BusiReply: ProtoMessage {
    public var message: String

    public init(message: String = "") {
        self.message = message
    }
}

extension BusiReqGrpc: CBackedMessage {
    static let codec = CCodec(
        busi__req_grpc__descriptor, busi__req_grpc__init,
        busi__req_grpc__get_packed_size, busi__req_grpc__pack,
        busi__req_grpc__unpack, busi__req_grpc__free_unpacked)

    init(copying c: Busi__ReqGrpc) {
        self.init(
            amount: c.amount, transOutResult: String(copying: c.transoutresult),
            transInResult: String(copying: c.transinresult))
    }

    func fill(_ c: inout Busi__ReqGrpc, arena: CArena) {
        c.amount = amount
        c.transoutresult = arena.string(transOutResult)
        c.transinresult = arena.string(transInResult)
    }
}

extension BusiReply: CBackedMessage {
    static let codec = CCodec(
        busi__busi_reply__descriptor, busi__busi_reply__init,
        busi__busi_reply__get_packed_size, busi__busi_reply__pack,
        busi__busi_reply__unpack, busi__busi_reply__free_unpacked)

    init(copying c: Busi__BusiReply) {
        self.init(message: String(copying: c.message))
    }

    func fill(_ c: inout Busi__BusiReply, arena: CArena) {
        c.message = arena.string(message)
    }
}
