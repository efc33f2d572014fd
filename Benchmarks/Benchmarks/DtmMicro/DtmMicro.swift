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

/// The shape DtmServer's HTTPTransBody decodes, with the same decoder (Foundation's
/// JSONDecoder); HTTPTransBody itself is internal to DtmServer, which this package does not
/// build (it would pull in Hummingbird, postgres-nio and the rest).
struct HTTPSagaBody: Decodable {
    var gid: String?
    var transType: String?
    var steps: [[String: String?]?]?
    var payloads: [String?]?
    var customData: String?
    var waitResult: Bool?

    enum CodingKeys: String, CodingKey {
        case gid, steps, payloads
        case transType = "trans_type", customData = "custom_data", waitResult = "wait_result"
    }
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

    Benchmark("HTTP JSON body decode (JSONDecoder, 2-step saga)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try JSONDecoder().decode(HTTPSagaBody.self, from: Data(httpBody)))
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
