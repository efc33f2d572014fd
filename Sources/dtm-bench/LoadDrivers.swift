import ArgumentParser
import DtmGRPC
import DtmNet
import DtmProto
import DtmSync
import Foundation

/// What one load phase measured: Submits answered OK, failed or rejected, how long the phase
/// took, and the answered Submits' latency percentiles (milliseconds).
struct LoadResult: Sendable {
    var ok: Int
    var failed: Int
    var seconds: Double
    var p50: Double, p90: Double, p99: Double, max: Double
}

/// Sends the Submits of a run and serves the sagas' branches (busi.Busi/*).
protocol LoadDriver: Sendable {
    /// Port of the branch server the sagas' steps name.
    var busiPort: Int { get }
    /// Branch calls served so far.
    func busiCalls() async throws -> Int
    /// `sagas` Submits with gids `prefix-0...`, at most `concurrency` in flight.
    func closedLoop(sagas: Int, concurrency: Int, prefix: String) async throws -> LoadResult
    /// `rate` Submits/s for `seconds` (latency counted from each Submit's due time).
    func paced(rate: Double, seconds: Double, prefix: String) async throws -> LoadResult
    /// CPU seconds the load generator has used (user + system), for the per-saga line.
    func cpuSeconds() throws -> Double
    func shutdown() async
}

/// The 2-step saga every driver submits.
func benchSteps(busiPort: Int) -> String {
    let busi = "127.0.0.1:\(busiPort)/busi.Busi"
    return #"[{"action":"\#(busi)/TransOut","compensate":"\#(busi)/TransOutRevert"},"#
        + #"{"action":"\#(busi)/TransIn","compensate":"\#(busi)/TransInRevert"}]"#
}

/// The load generator in this process, on our own gRPC client and server (Swift): it shares the
/// machine's CPU with the coordinator (the report prints how much per saga).
final class SwiftLoadDriver: LoadDriver {
    let busiPort: Int
    private let busi: GRPCServer
    private let client = GRPCClient()
    private let calls = AtomicCounter()
    private let submit: @Sendable (String) async throws(RPCError) -> Void

    init(coordinators: [String]) async throws {
        let calls = self.calls
        var router = GRPCRouter()
        for method in ["TransOut", "TransIn", "TransOutRevert", "TransInRevert"] {
            router.register(service: "busi.Busi", method: method, .sync { _ in
                calls.increment()
                return GRPCResponse(message: [])
            })
        }
        busi = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: router)
        busiPort = busi.port
        let (client, payload, steps, turn) = (client, BusiReqGrpc(amount: 30).encode(), benchSteps(busiPort: busi.port),
                                              AtomicCounter())
        submit = { gid throws(RPCError) in
            let request = DtmRequest(gid: gid, transType: "saga", binPayloads: [payload, payload], steps: steps)
            let target = coordinators[turn.increment() % coordinators.count]
            _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/Submit", message: request.encode(),
                                       timeout: .seconds(30))
        }
    }

    func busiCalls() async throws -> Int { calls.value }

    func closedLoop(sagas: Int, concurrency: Int, prefix: String) async throws -> LoadResult {
        let failures = AtomicCounter(), next = AtomicCounter()
        let submit = self.submit
        let started = ContinuousClock.now
        let latencies = await withTaskGroup(of: [Duration].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var mine: [Duration] = []
                    while true {
                        let index = next.increment()
                        guard index < sagas else { return mine }
                        let callStart = ContinuousClock.now
                        do {
                            try await submit("\(prefix)-\(index)")
                            mine.append(ContinuousClock.now - callStart)
                        } catch {
                            // Rejected (admission control) or failed: not stored, not waited for.
                            failures.increment()
                        }
                    }
                }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
        return Self.result(latencies, failed: failures.value, seconds: (ContinuousClock.now - started).seconds)
    }

    func paced(rate: Double, seconds: Double, prefix: String) async throws -> LoadResult {
        let submit = self.submit
        return await openLoop(rate: rate, seconds: seconds) { index throws(RPCError) in
            try await submit("\(prefix)-\(index)")
        }
    }

    /// NewGid calls at `rate`/s (no store, no engine): transport latency alone.
    func pacedNewGid(target: String, rate: Double, seconds: Double) async -> LoadResult {
        let client = self.client
        return await openLoop(rate: rate, seconds: seconds) { _ throws(RPCError) in
            _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/NewGid", message: Empty().encode(),
                                       timeout: .seconds(30))
        }
    }

    /// Calls `call(index)` at `rate`/s for `seconds`, each latency counted from its due time.
    private func openLoop(rate: Double, seconds: Double,
                          call: @escaping @Sendable (Int) async throws(RPCError) -> Void) async -> LoadResult {
        let count = Int(rate * seconds)
        let latencies = Locked<[Duration]>([])
        let failures = AtomicCounter()
        let phaseStart = ContinuousClock.now
        await withDiscardingTaskGroup { group in
            for index in 0..<count {
                let due = phaseStart + .seconds(Double(index) / rate)
                if due > ContinuousClock.now { try? await Task.sleep(until: due) }
                group.addTask {
                    do throws(RPCError) {
                        try await call(index)
                    } catch {
                        failures.increment()
                        return
                    }
                    let latency = ContinuousClock.now - due
                    latencies.withLock { $0.append(latency) }
                }
            }
        }
        return Self.result(latencies.withLock { $0 }, failed: failures.value,
                           seconds: (ContinuousClock.now - phaseStart).seconds)
    }

    func cpuSeconds() throws -> Double { try Probes.cpuSeconds(pid: getpid()) }

    func shutdown() async {
        await client.shutdown()
        await busi.shutdown(gracePeriod: .milliseconds(200))
    }

    private static func result(_ latencies: [Duration], failed: Int, seconds: Double) -> LoadResult {
        LoadResult(ok: latencies.count, failed: failed, seconds: seconds, p50: latencies.percentile(0.5),
                   p90: latencies.percentile(0.9), p99: latencies.percentile(0.99), max: latencies.percentile(1.0))
    }
}

/// tools/loadgen.c in its own process: Submits and branches served by nghttp2 in C, a few µs of
/// CPU per saga, so that the coordinator gets the machine (the issue's own measurement used an
/// independent C load generator). Spoken to through its standard input and output.
final class CLoadDriver: LoadDriver {
    let busiPort: Int
    private let process: Process
    private let input: FileHandle
    private let lines: LineReader

    init(binary: String, coordinators: [String], connections: Int) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [coordinators.isEmpty ? "none" : coordinators.joined(separator: ","), String(connections)]
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        try process.run()
        self.process = process
        input = stdin.fileHandleForWriting
        lines = LineReader(stdout.fileHandleForReading)
        guard let first = lines.next(), first.hasPrefix("busi-port "), let port = Int(first.dropFirst(10)) else {
            process.terminate()
            throw ValidationError("the C load generator \(binary) did not start (see its errors above)")
        }
        busiPort = port
    }

    func busiCalls() async throws -> Int {
        let fields = try await ask("busi")
        guard let calls = fields["busi"].flatMap(Int.init) else { throw ValidationError("loadgen: no busi count") }
        return calls
    }

    func closedLoop(sagas: Int, concurrency: Int, prefix: String) async throws -> LoadResult {
        try Self.result(await ask("closed \(sagas) \(concurrency) \(prefix)"))
    }

    func paced(rate: Double, seconds: Double, prefix: String) async throws -> LoadResult {
        try Self.result(await ask("paced \(rate) \(seconds) \(prefix)"))
    }

    func cpuSeconds() throws -> Double { try Probes.cpuSeconds(pid: process.processIdentifier) }

    func shutdown() async {
        try? input.close()
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning { process.terminate() }
    }

    /// Sends one command; its "result k=v ..." line as a dictionary.
    private func ask(_ command: String) async throws -> [String: String] {
        input.write(Data((command + "\n").utf8))
        let lines = self.lines
        let line = await withCheckedContinuation { continuation in
            // A blocking read, off the cooperative pool (a phase can take minutes).
            Thread.detachNewThread { continuation.resume(returning: lines.next()) }
        }
        guard let line, line.hasPrefix("result "), !line.hasPrefix("result error") else {
            throw ValidationError("the C load generator answered '\(line ?? "nothing")' to '\(command)'")
        }
        var fields: [String: String] = [:]
        for pair in line.dropFirst(7).split(separator: " ") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }

    private static func result(_ fields: [String: String]) throws -> LoadResult {
        func number(_ key: String) throws -> Double {
            guard let value = fields[key].flatMap(Double.init) else { throw ValidationError("loadgen: no \(key)") }
            return value
        }
        return LoadResult(ok: Int(try number("ok")), failed: Int(try number("failed")), seconds: try number("seconds"),
                          p50: try number("p50_ms"), p90: try number("p90_ms"), p99: try number("p99_ms"),
                          max: try number("max_ms"))
    }
}

/// Lines of a pipe, read with blocking reads (one reader at a time).
final class LineReader: @unchecked Sendable {
    // Only one `next()` runs at a time: `ask` awaits each answer before the next command.
    private let handle: FileHandle
    private var buffer: [UInt8] = []

    init(_ handle: FileHandle) { self.handle = handle }

    func next() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            let chunk = handle.availableData
            if chunk.isEmpty { return nil }
            buffer += chunk
        }
    }
}
