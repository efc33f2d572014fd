import DtmProto

/// Bytes that are not valid UTF-8, to prove `bytes` fields are carried untouched.
let nonUTF8: [UInt8] = [0xff, 0x00, 0xc3, 0x28, 0x80, 0xfe]

/// 1 MiB of a repeating, non-UTF-8 pattern.
let oneMiB: [UInt8] = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

let fullOptions = DtmTransOptions(
    waitResult: true, timeoutToFail: 300, retryInterval: 10,
    branchHeaders: ["x-trace": "abc", "Authorization": "Bearer t", "x-中文": "值 ✓", "": "empty key"],
    requestTimeout: 3, retryLimit: Int64.max)

/// A DtmRequest with every field set, repeated fields with several elements and a nested message.
let fullRequest = DtmRequest(
    gid: "gid-01HZX", transType: "saga", transOptions: fullOptions,
    customedData: #"{"k":"v"}"#, binPayloads: [[1, 2, 3], [], nonUTF8],
    queryPrepared: "http://localhost:8081/api/busi/QueryPrepared",
    steps: #"[{"action":"a","compensate":"c"}]"#,
    reqExtra: ["status": "succeed", "rollback_reason": "", "result": "ok", "ünïcødé": "🚀"],
    rollbackReason: "insufficient balance: 余额不足")

/// At least one value of every message type, covering defaults, maps, repeated bytes,
/// non-ASCII strings, nested messages present and absent, and 1 MiB payloads.
let samples: [any ProtoMessage] = [
    Empty(),
    DtmTransOptions(),
    fullOptions,
    DtmTransOptions(branchHeaders: [:], retryLimit: -1),
    DtmRequest(),
    fullRequest,
    DtmRequest(gid: "present-but-default", transOptions: DtmTransOptions()),
    DtmRequest(gid: "absent", transOptions: nil, binPayloads: [[], []], reqExtra: [:]),
    DtmRequest(gid: "big", binPayloads: [oneMiB, [], oneMiB]),
    DtmRequest(customedData: String(repeating: "é", count: 1 << 19)),
    DtmGidReply(),
    DtmGidReply(gid: "01HZXQ3Y5KJ8"),
    DtmBranchRequest(),
    DtmBranchRequest(
        gid: "g", transType: "tcc", branchID: "01", op: "try",
        data: ["confirm": "http://c", "cancel": "http://x"], busiPayload: nonUTF8),
    DtmBranchRequest(gid: "big", busiPayload: oneMiB),
    DtmProgressesReply(),
    DtmProgressesReply(transaction: DtmTransaction()),
    DtmProgressesReply(
        transaction: DtmTransaction(gid: "g", status: "prepared", rollbackReason: "r", result: "✓"),
        progresses: [
            DtmProgress(status: "succeed", binData: nonUTF8, branchID: "01", op: "action"),
            DtmProgress(),
            DtmProgress(status: "failed", binData: [], branchID: "02", op: "compensate"),
        ]),
    DtmProgressesReply(transaction: nil, progresses: [DtmProgress(status: "s")]),
    DtmTransaction(),
    DtmTransaction(gid: "g", status: "succeed", rollbackReason: "", result: #"{"a":1}"#),
    DtmProgress(),
    DtmProgress(status: "succeed", binData: oneMiB, branchID: "01", op: "action"),
    DtmTopicRequest(),
    DtmTopicRequest(topic: "orders", url: "http://busi/notify", remark: "备注"),
    BusiReqGrpc(),
    BusiReqGrpc(amount: 30, transOutResult: "SUCCESS", transInResult: "FAILURE"),
    BusiReqGrpc(amount: Int64.min, transOutResult: "ONGOING"),
    BusiReqGrpc(amount: Int64.max),
    BusiReply(),
    BusiReply(message: "FAILURE: ☃"),
    WorkflowData(),
    WorkflowData(data: nonUTF8),
    WorkflowData(data: oneMiB),
    ServerReflectionRequest(request: nil),
    ServerReflectionRequest(host: "localhost:36790", request: .listServices("")),
    ServerReflectionRequest(request: .fileByFilename("google/protobuf/empty.proto")),
    ServerReflectionRequest(request: .fileContainingSymbol("dtmgimp.Dtm.NewGid")),
    ServerReflectionRequest(request: .fileContainingExtension(containingType: "a.B", extensionNumber: -7)),
    ServerReflectionRequest(request: .allExtensionNumbersOfType("a.B")),
    ServerReflectionResponse(originalRequest: nil, response: nil),
    ServerReflectionResponse(validHost: "h", originalRequest: ServerReflectionRequest(request: .listServices("*")),
                             response: .services(["dtmgimp.Dtm", "grpc.health.v1.Health"])),
    ServerReflectionResponse(originalRequest: nil, response: .services([])),
    ServerReflectionResponse(originalRequest: nil, response: .fileDescriptors([[10, 3, 97, 98, 99], [], nonUTF8])),
    ServerReflectionResponse(originalRequest: nil, response: .extensionNumbers(baseTypeName: "a.B", numbers: [1, 100, -3])),
    ServerReflectionResponse(originalRequest: ServerReflectionRequest(request: .fileContainingSymbol("x")),
                             response: .error(code: 5, message: "unknown symbol 'x' ☃")),
]

/// One value of every message type, for tests that decode one type's bytes as another.
let allTypes: [any ProtoMessage.Type] = [
    Empty.self, DtmTransOptions.self, DtmRequest.self, DtmGidReply.self, DtmBranchRequest.self,
    DtmProgressesReply.self, DtmTransaction.self, DtmProgress.self, DtmTopicRequest.self,
    BusiReqGrpc.self, BusiReply.self, WorkflowData.self, ServerReflectionRequest.self, ServerReflectionResponse.self,
]

/// A short name for test output (samples can hold 1 MiB).
func label(_ message: any ProtoMessage) -> String {
    "\(type(of: message)) (\(message.encode().count) bytes)"
}

/// SplitMix64: a tiny deterministic generator, so garbage inputs are the same on every run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Decodes `bytes` as `type` and reports the typed error, if any.
func decodeResult<M: ProtoMessage>(_ type: M.Type, _ bytes: [UInt8]) -> Result<M, ProtoError> {
    Result { () throws(ProtoError) in try M(decoding: bytes) }
}
