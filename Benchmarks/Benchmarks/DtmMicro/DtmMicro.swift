import Benchmark
import DtmEngine
import DtmProto
import DtmStore
import Foundation

// Micro-benchmarks of the saga path's pieces (issue 13): the wire decode/encode of a 2-step
// saga Submit, the HTTP JSON body of the same saga, one saga decision, and one store batch.
// Run with tools/bench-micro. The fast ones run 1000 operations per sample (tables marked
// (K)): divide by 1000 for one operation. CPU time is left out: the framework reads it from
// /proc in 10 ms ticks, too coarse for these; wall clock and mallocs are the figures.

let busi = "127.0.0.1:8081/busi.Busi"
let stepsJSON = #"[{"action":"\#(busi)/TransOut","compensate":"\#(busi)/TransOutRevert"},{"action":"\#(busi)/TransIn","compensate":"\#(busi)/TransInRevert"}]"#
// BusiReqGrpc(amount: 30) on the wire: field 1, varint 30.
let payload: [UInt8] = [0x08, 0x1E]
let request = DtmRequest(gid: "bench-micro-1", transType: "saga", binPayloads: [payload, payload], steps: stepsJSON)
let requestBytes = request.encode()

/// The HTTP API's body of the same saga (payloads as JSON text, as the HTTP SDKs send them).
let httpBody = Array(#"{"gid":"bench-micro-1","trans_type":"saga","steps":\#(stepsJSON),"payloads":["{\"amount\":30}","{\"amount\":30}"],"custom_data":"","wait_result":false}"#.utf8)

/// A TCC registerBranch body and a msg prepare body (with query_prepared), as dtmcli sends them.
let tccBranchBody = Array(#"{"branch_id":"01","confirm":"http://localhost:8081/api/busi/TransOutConfirm","cancel":"http://localhost:8081/api/busi/TransOutCancel","data":"{\"amount\":30}","gid":"bench-micro-tcc","trans_type":"tcc","op":"try"}"#.utf8)
let msgPrepareBody = Array(#"{"gid":"bench-micro-msg","trans_type":"msg","steps":[{"action":"http://localhost:8081/api/busi/TransOut"},{"action":"http://localhost:8081/api/busi/TransIn"}],"payloads":["{\"amount\":30}","{\"amount\":30}"],"query_prepared":"http://localhost:8081/api/busi/QueryPrepared","custom_data":"","wait_result":false,"timeout_to_fail":0,"request_timeout":0,"retry_interval":0,"branch_headers":{},"concurrent":false}"#.utf8)

/// The decision's "before": DtmServer's former HTTPTransBody, Foundation's JSONDecoder with a
/// Decodable that reads every key optionally (null allowed), as it was until the JSONReader
/// replaced it (DtmServer is not built by this package).
struct FoundationTransBody: Decodable {
    var request = TransRequest(gid: "", transType: "")

    enum Key: String, CodingKey {
        case gid, steps, payloads, concurrent
        case transType = "trans_type", queryPrepared = "query_prepared", transProtocol = "protocol"
        case customData = "custom_data", rollbackReason = "rollback_reason", reqExtra = "req_extra"
        case waitResult = "wait_result", timeoutToFail = "timeout_to_fail", requestTimeout = "request_timeout"
        case retryInterval = "retry_interval", branchHeaders = "branch_headers", retryLimit = "retry_limit"
    }

    init(from decoder: any Decoder) throws {
        let body = try decoder.container(keyedBy: Key.self)
        func string(_ key: Key) throws -> String { try body.decodeIfPresent(String.self, forKey: key) ?? "" }
        func integer(_ key: Key) throws -> Int64 { try body.decodeIfPresent(Int64.self, forKey: key) ?? 0 }
        func flag(_ key: Key) throws -> Bool { try body.decodeIfPresent(Bool.self, forKey: key) ?? false }
        func map(_ key: Key) throws -> [String: String] {
            try body.decodeIfPresent([String: String?].self, forKey: key)?.mapValues { $0 ?? "" } ?? [:]
        }
        request.gid = try string(.gid)
        request.transType = try string(.transType)
        request.steps = try body.decodeIfPresent([[String: String?]?].self, forKey: .steps)?
            .map { ($0 ?? [:]).mapValues { $0 ?? "" } } ?? []
        request.payloads = try body.decodeIfPresent([String?].self, forKey: .payloads)?.map { Array(($0 ?? "").utf8) } ?? []
        request.queryPrepared = try string(.queryPrepared)
        request.transProtocol = try string(.transProtocol)
        request.customData = try string(.customData)
        request.rollbackReason = try string(.rollbackReason)
        request.reqExtra = try map(.reqExtra)
        request.options = TransOptions(waitResult: try flag(.waitResult), timeoutToFail: try integer(.timeoutToFail),
                                       retryInterval: try integer(.retryInterval), branchHeaders: try map(.branchHeaders),
                                       requestTimeout: try integer(.requestTimeout), retryLimit: try integer(.retryLimit),
                                       concurrent: try flag(.concurrent))
    }
}

/// The middle candidate: the whole body as a JSONValue tree, then a typed mapping of the tree.
func treeRequest(_ body: [UInt8]) -> TransRequest? {
    guard case .object(let members)? = JSONValue.parse(body) else { return nil }
    var request = TransRequest(gid: "", transType: "")
    func string(_ key: String) -> String { if case .string(let value)? = members[key] { value } else { "" } }
    request.gid = string("gid")
    request.transType = string("trans_type")
    request.queryPrepared = string("query_prepared")
    request.transProtocol = string("protocol")
    request.customData = string("custom_data")
    if case .array(let steps)? = members["steps"] {
        request.steps = steps.map { step in
            guard case .object(let map) = step else { return [:] }
            return map.compactMapValues { if case .string(let value) = $0 { value } else { nil } }
        }
    }
    if case .array(let payloads)? = members["payloads"] {
        request.payloads = payloads.map { if case .string(let value) = $0 { Array(value.utf8) } else { [] } }
    }
    if case .bool(let flag)? = members["wait_result"] { request.options.waitResult = flag }
    if let value = members["timeout_to_fail"]?.integer { request.options.timeoutToFail = value }
    return request
}

func storedSaga(gid: String, now: Date, actionsDone: Int) -> (GlobalTransaction, [BranchRecord]) {
    let global = GlobalTransaction(gid: gid, transType: .saga, status: .submitted, transProtocol: .grpc,
                                   createTime: now)
    var branches: [BranchRecord] = []
    for (index, name) in ["TransOut", "TransIn"].enumerated() {
        let id = "0\(index + 1)"
        branches.append(BranchRecord(gid: gid, url: "\(busi)/\(name)Revert", binData: payload, branchID: id,
                                     op: .compensate, createTime: now))
        branches.append(BranchRecord(gid: gid, url: "\(busi)/\(name)", binData: payload, branchID: id, op: .action,
                                     status: index < actionsDone ? .succeed : .prepared, createTime: now))
    }
    return (global, branches)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        scalingFactor: .kilo, maxDuration: .seconds(2), maxIterations: 1_000_000)

    Benchmark("protobuf decode DtmRequest (2-step saga)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try DtmRequest(decoding: requestBytes))
        }
    }

    Benchmark("protobuf encode DtmRequest (2-step saga)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(request.encode())
        }
    }

    Benchmark("steps JSON parse (TransRequest.parseSteps)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try TransRequest.parseSteps(stepsJSON))
        }
    }

    // Issue 13's decision: one JSON decoder for requests. Each body through each candidate.
    let bodies: [(name: String, bytes: [UInt8])] = [
        ("2-step saga submit", httpBody), ("msg prepare, query_prepared", msgPrepareBody), ("TCC registerBranch", tccBranchBody),
    ]
    for (name, body) in bodies {
        let registration = name.hasPrefix("TCC")
        Benchmark("JSON body, Foundation JSONDecoder: \(name)") { benchmark in
            for _ in benchmark.scaledIterations {
                if registration {
                    blackHole(try JSONDecoder().decode([String: String?].self, from: Data(body)))
                } else {
                    blackHole(try JSONDecoder().decode(FoundationTransBody.self, from: Data(body)).request)
                }
            }
        }
        Benchmark("JSON body, JSONValue tree + mapping: \(name)") { benchmark in
            for _ in benchmark.scaledIterations {
                if registration {
                    guard case .object(let members)? = JSONValue.parse(body) else { continue }
                    blackHole(members.compactMapValues { if case .string(let value) = $0 { value } else { nil } })
                } else {
                    blackHole(treeRequest(body))
                }
            }
        }
        Benchmark("JSON body, JSONReader typed (the one): \(name)") { benchmark in
            for _ in benchmark.scaledIterations {
                if registration {
                    blackHole(try BranchRegistration(jsonBody: body))
                } else {
                    blackHole(try TransRequest(jsonBody: body))
                }
            }
        }
    }

    let now = Date()
    let fresh = storedSaga(gid: "bench-micro-decide", now: now, actionsDone: 0)
    let halfway = storedSaga(gid: "bench-micro-decide", now: now, actionsDone: 1)
    let config = EngineConfig()
    Benchmark("saga decision, stored and untouched") { benchmark in
        for _ in benchmark.scaledIterations {
            let state = PassState(global: fresh.0, branches: fresh.1, memory: PassMemory(startedAt: now), now: now,
                                  config: config)
            blackHole(SagaProcessor().decide(state))
        }
    }

    Benchmark("saga decision, first action succeeded") { benchmark in
        for _ in benchmark.scaledIterations {
            let state = PassState(global: halfway.0, branches: halfway.1, memory: PassMemory(startedAt: now), now: now,
                                  config: config)
            blackHole(SagaProcessor().decide(state))
        }
    }

    // One store batch: 64 concurrent saveNew calls of a 2-step saga (5 rows each), which the
    // SQLite writer groups into one durable commit (WAL, synchronous=FULL) on a temp file.
    let batch = 64
    Benchmark("SQLite store batch: \(batch) sagas saveNew, one commit",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal, .throughput],
                                   scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 2000)) { benchmark in
        let path = NSTemporaryDirectory() + "/dtm-bench-micro-\(getpid()).sqlite"
        defer { for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) } }
        guard let store = try? SQLiteStore(path: path) else {
            benchmark.error("could not open \(path)")
            return
        }
        defer { store.close() }
        var round = 0
        for _ in benchmark.scaledIterations {
            round += 1
            let base = round * batch
            benchmark.startMeasurement()
            await withTaskGroup(of: Void.self) { group in
                for index in base..<(base + batch) {
                    let saga = storedSaga(gid: "bench-micro-store-\(index)", now: now, actionsDone: 0)
                    group.addTask { _ = try? await store.saveNew(saga.0, branches: saga.1) }
                }
            }
            benchmark.stopMeasurement()
        }
    }
}
