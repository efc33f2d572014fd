import DtmTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The real `dtm` executable as a child process on free ports, its log in a file: the crash
/// tests, the crash-point harness and the several-coordinator tests all start it through this.
final class DtmProcess: @unchecked Sendable {
    let process = Process()
    let logURL: URL
    private(set) var grpcPort = 0
    private(set) var httpPort = 0

    /// gRPC target, `127.0.0.1:PORT`.
    var target: String { "127.0.0.1:\(grpcPort)" }
    /// Base URL of the HTTP JSON API.
    var httpBase: String { "http://127.0.0.1:\(httpPort)" }
    /// `{"grpc": ..., "http": ...}`, as crash_client.py's address file lists coordinators.
    var address: [String: String] { ["grpc": target, "http": "127.0.0.1:\(httpPort)"] }
    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
    /// Announced its ports and still runs.
    var serving: Bool { grpcPort != 0 && process.isRunning }

    /// The test intervals: retries every second and the cron's lease (one retry interval) of a
    /// second, so that work of a dead coordinator is taken over within seconds.
    static let testArguments = ["--retry-interval", "1", "--cron-interval", "1"]

    /// Starts `dtm --store store` on free ports and waits until it announces them. With
    /// `mayDie` it also returns when the process exits first (a failpoint may fire during
    /// start-up); otherwise that throws.
    static func start(binary: String, store: String, logURL: URL, requestTimeout: Int = 30, timeoutToFail: Int = 2,
                      arguments: [String] = [], environment: [String: String] = [:], mayDie: Bool = false)
        async throws -> DtmProcess {
        let dtm = DtmProcess(logURL: logURL)
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: logURL)
        dtm.process.executableURL = URL(fileURLWithPath: binary)
        dtm.process.arguments = ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--store", store]
            + testArguments + ["--timeout-to-fail", "\(timeoutToFail)", "--request-timeout", "\(requestTimeout)"] + arguments
        if !environment.isEmpty {
            dtm.process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        dtm.process.standardOutput = log
        dtm.process.standardError = log
        dtm.process.standardInput = FileHandle.nullDevice
        try dtm.process.run()
        try log.close()
        try await waitUntil("dtm to announce its ports: \(dtm.log)", timeout: .seconds(30), poll: .milliseconds(20)) {
            // `grpc=...` in text logs, `"grpc":"..."` in JSON logs (--log-format json).
            if let match = dtm.log.firstMatch(of: /grpc"?[=:]"?127\.0\.0\.1:(\d+).*http"?[=:]"?127\.0\.0\.1:(\d+)/) {
                dtm.grpcPort = Int(match.1) ?? 0
                dtm.httpPort = Int(match.2) ?? 0
                return true
            }
            if !dtm.process.isRunning {
                if mayDie { return true }
                throw PeerError.badOutput("dtm exited: \(dtm.log)")
            }
            return false
        }
        return dtm
    }

    private init(logURL: URL) { self.logURL = logURL }

    /// Polls until the process has exited or `timeout` passed; true when it exited.
    func waitForExit(timeout: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        return !process.isRunning
    }

    /// Sends `signal` and waits until the process is gone (a graceful stop may take the 5 s grace
    /// period plus running passes, longer on a loaded machine); one that outlives `timeout` is
    /// killed and recorded as an issue.
    func stop(_ signal: Int32, timeout: Duration = .seconds(30)) async throws {
        if process.isRunning { kill(process.processIdentifier, signal) }
        if try await waitForExit(timeout: timeout) { return }
        kill(process.processIdentifier, SIGKILL)
        while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        Issue.record("dtm did not stop on signal \(signal): \(log.suffix(2000))")
    }

    /// Kills the process if it still runs (for `defer`).
    func killIfRunning() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// GET `path` of the HTTP API: the status, or nil when nothing answered.
    func httpStatus(_ path: String) async -> Int? {
        await httpGet("\(httpBase)\(path)")?.status
    }
}

/// A plain HTTP GET with a 10 s timeout: (status, body), or nil when the request failed.
func httpGet(_ url: String) async -> (status: Int, body: String)? {
    guard let url = URL(string: url) else { return nil }
    var request = URLRequest(url: url)
    request.timeoutInterval = 10
    return await withCheckedContinuation { continuation in
        URLSession.shared.dataTask(with: request) { data, response, _ in
            guard let response = response as? HTTPURLResponse else { return continuation.resume(returning: nil) }
            continuation.resume(returning: (response.statusCode, String(decoding: data ?? Data(), as: UTF8.self)))
        }.resume()
    }
}
