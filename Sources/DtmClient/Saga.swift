/// A payload for a branch: bytes as they are sent (a serialised protobuf for gRPC branches,
/// JSON text for HTTP ones).
public protocol BranchPayload: Sendable {
    var payloadBytes: [UInt8] { get }
}

extension Array: BranchPayload where Element == UInt8 {
    public var payloadBytes: [UInt8] { self }
}

extension String: BranchPayload {
    public var payloadBytes: [UInt8] { Array(utf8) }
}

extension BranchPayload where Self: ProtoMessage {
    public var payloadBytes: [UInt8] { encode() }
}

extension DtmRequest: BranchPayload {}
extension BusiReqGrpc: BranchPayload {}
extension BusiReply: BranchPayload {}
extension WorkflowData: BranchPayload {}
extension Empty: BranchPayload {}

/// A saga (spec 3.4): steps of an action and its compensation, run in order (or concurrently
/// with `orders`), compensated in reverse when an action answers FAILURE.
///
/// ```swift
/// var saga = Saga(client, gid: try await client.newGid())
/// saga.add(action: "svc:50051/bank.Bank/TransOut", compensate: "svc:50051/bank.Bank/TransOutRevert", payload: req)
/// try await saga.submit()
/// ```
public struct Saga: Sendable {
    public let client: DtmClient
    public let gid: String
    public var options: TransOptions
    /// Run steps concurrently, subject to `orders`.
    public var concurrent = false
    private(set) var steps: [(action: String, compensate: String)] = []
    private(set) var payloads: [[UInt8]] = []
    /// Step index (0-based) → steps whose actions must succeed before it starts.
    private(set) var orders: [Int: [Int]] = [:]

    public init(_ client: DtmClient, gid: String, options: TransOptions = TransOptions()) {
        self.client = client
        self.gid = gid
        self.options = options
    }

    /// Adds a step; `compensate` may be empty (nothing to undo).
    @discardableResult
    public mutating func add(action: String, compensate: String, payload: some BranchPayload) -> Self {
        steps.append((action, compensate))
        payloads.append(payload.payloadBytes)
        return self
    }

    /// Concurrent sagas: step `step` starts only after the actions of `after` succeeded (0-based).
    @discardableResult
    public mutating func addBranchOrder(_ step: Int, after: [Int]) -> Self {
        orders[step] = after
        return self
    }

    /// The `DtmRequest` this saga submits.
    public var request: DtmRequest {
        var custom = ""
        if concurrent {
            let orderText = orders.mapValues { $0 }.reduce(into: [String: [Int]]()) { $0[String($1.key)] = $1.value }
            custom = JSON.text(["orders": orderText, "concurrent": true] as [String: Any])
        }
        let stepsText = JSON.text(steps.map { ["action": $0.action, "compensate": $0.compensate] })
        return DtmRequest(gid: gid, transType: TransType.saga.rawValue, transOptions: options.proto,
                          customedData: custom, binPayloads: payloads, steps: stepsText)
    }

    /// Hands the saga to the coordinator. With `options.waitResult` it returns when the saga has
    /// finished and throws `.failure` when it rolled back.
    public func submit() async throws(DtmClientError) {
        try await client.submit(request)
    }
}
