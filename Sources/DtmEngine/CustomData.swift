import Foundation

/// Why custom_data could not be read; the message says what to fix.
public struct CustomDataError: Error, Equatable, Sendable {
    public var message: String
    init(_ message: String) { self.message = message }
}

/// Saga custom_data: `{"orders":{"<j>":[<i>,...]},"concurrent":true}` with 0-based steps.
public struct SagaCustomData: Sendable, Equatable {
    public var concurrent: Bool
    /// Step → steps whose actions must have succeeded before it starts.
    public var orders: [Int: [Int]]

    public init(concurrent: Bool = false, orders: [Int: [Int]] = [:]) {
        self.concurrent = concurrent
        self.orders = orders
    }

    public static func parse(_ text: String) throws(CustomDataError) -> SagaCustomData {
        let object = try jsonObject(text)
        var result = SagaCustomData()
        switch object.field("concurrent") {
        case nil, .null: break
        case .bool(let flag): result.concurrent = flag
        default: throw CustomDataError("concurrent must be a boolean")
        }
        switch object.field("orders") {
        case nil, .null:
            return result
        case .object(let orders):
            for (key, value) in orders {
                guard let step = Int(key) else { throw CustomDataError("orders key '\(key)' is not a step index") }
                guard case .array(let preds) = value else {
                    throw CustomDataError("orders[\(key)] must be an array of step indexes")
                }
                var indexes = [Int]()
                for pred in preds {
                    guard let index = pred.integer else {
                        throw CustomDataError("orders[\(key)] must be an array of step indexes")
                    }
                    indexes.append(Int(clamping: index))
                }
                result.orders[step] = indexes
            }
            return result
        default:
            throw CustomDataError("orders must be an object of step index to an array of step indexes")
        }
    }

    /// Orders must name existing steps and not wait on themselves (directly or in a cycle),
    /// or the saga could never finish.
    public func check(stepCount: Int) throws(CustomDataError) {
        for (step, preds) in orders {
            for index in [step] + preds where index < 0 || index >= stepCount {
                throw CustomDataError("orders refer to step \(index) but there are \(stepCount) steps")
            }
        }
        // Kahn's algorithm, without recursion: a long chain of orders cannot exhaust the stack.
        var waitingOn = [Int: Int]()  // step → predecessors not yet resolved
        var successors = [Int: [Int]]()
        for (step, preds) in orders {
            waitingOn[step, default: 0] += preds.count
            for pred in preds {
                successors[pred, default: []].append(step)
                waitingOn[pred, default: 0] += 0
            }
        }
        var free = waitingOn.filter { $0.value == 0 }.map(\.key)
        var resolved = 0
        while let step = free.popLast() {
            resolved += 1
            for next in successors[step] ?? [] {
                waitingOn[next, default: 0] -= 1
                if waitingOn[next] == 0 { free.append(next) }
            }
        }
        if resolved < waitingOn.count, let step = waitingOn.filter({ $0.value > 0 }).keys.min() {
            throw CustomDataError("orders contain a cycle through step \(step)")
        }
    }
}

/// Msg custom_data: `{"delay": <seconds>}`.
public struct MsgCustomData: Sendable, Equatable {
    public var delay: Int64

    public init(delay: Int64 = 0) { self.delay = delay }

    public static func parse(_ text: String) throws(CustomDataError) -> MsgCustomData {
        let value = try jsonObject(text).field("delay") ?? .null
        if value == .null { return MsgCustomData() }
        guard let delay = value.integer, delay >= 0, delay <= maxOptionSeconds else {
            throw CustomDataError("delay must be a whole number of seconds from 0 to \(maxOptionSeconds)")
        }
        return MsgCustomData(delay: delay)
    }
}

/// Workflow custom_data: `{"name":"<workflow name>","data":"<base64 input>"}`.
public struct WorkflowCustomData: Sendable, Equatable {
    public var name: String
    public var data: [UInt8]

    public init(name: String, data: [UInt8] = []) {
        self.name = name
        self.data = data
    }

    public static func parse(_ text: String) throws(CustomDataError) -> WorkflowCustomData {
        let object = try jsonObject(text)
        guard case .string(let name) = object.field("name"), !name.isEmpty else {
            throw CustomDataError("name (the workflow name) is required")
        }
        switch object.field("data") {
        case nil, .null:
            return WorkflowCustomData(name: name)
        case .string(let text):
            guard let bytes = Data(base64Encoded: text) else { throw CustomDataError("data must be base64") }
            return WorkflowCustomData(name: name, data: Array(bytes))
        default:
            throw CustomDataError("data must be a base64 string")
        }
    }

    /// The resume call's body: raw input over HTTP, protobuf `WorkflowData{bytes Data = 1}`
    /// when the transaction's protocol is gRPC.
    public func resumePayload(for transProtocol: TransProtocol) -> [UInt8] {
        guard transProtocol == .grpc, !data.isEmpty else { return data }
        var out: [UInt8] = [0x0A]
        var length = UInt64(data.count)
        while length >= 0x80 {
            out.append(UInt8(length & 0x7F) | 0x80)
            length >>= 7
        }
        out.append(UInt8(length))
        return out + data
    }
}

private func jsonObject(_ text: String) throws(CustomDataError) -> [String: JSONValue] {
    if text.isEmpty { return [:] }
    switch JSONValue.parse(text) {
    case nil: throw CustomDataError("not valid JSON")
    case .null: return [:]
    case .object(let object): return object
    default: throw CustomDataError("must be a JSON object")
    }
}
