import DtmTestSupport
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// crash_client.py as a child process: it drives a mix of transactions, as SDKs do, against the
/// coordinator(s) listed in an address file, retrying each step while they are unreachable.
/// Used by the crash-point harness (one coordinator that keeps dying) and the
/// several-coordinator tests (a fleet sharing one store).
final class CrashClient: @unchecked Sendable {
    let process = Process()
    let addressFile: URL
    private let dir: URL
    private let outURL: URL
    private let stopURL: URL
    private let errorsURL: URL

    /// Starts the client; its files live in `dir`. `arguments` adds options (--count, --kinds, ...).
    init(python: String, busi: BusiPeer, dir: URL, prefix: String, seed: UInt64, arguments: [String] = []) throws {
        self.dir = dir
        addressFile = dir.appendingPathComponent("addr.json")
        outURL = dir.appendingPathComponent("client.json")
        stopURL = dir.appendingPathComponent("stop")
        errorsURL = dir.appendingPathComponent("client.err")
        process.executableURL = URL(fileURLWithPath: python)
        process.currentDirectoryURL = Peers.pythonDir
        process.arguments = ["crash_client.py", "--addr", addressFile.path, "--busi-grpc", busi.grpcTarget,
                             "--busi-http", "127.0.0.1:\(busi.httpPort)", "--control", busi.controlDir.path,
                             "--stop", stopURL.path, "--out", outURL.path, "--prefix", prefix, "--seed", "\(seed)"]
            + arguments
        process.standardOutput = FileHandle.nullDevice
        _ = FileManager.default.createFile(atPath: errorsURL.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errorsURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// Points the client at these coordinators (atomically; it rereads the file before each attempt).
    func publish(_ coordinators: [DtmProcess]) throws {
        let list = coordinators.filter(\.serving).map(\.address)
        // One coordinator is written as an object, as the harness always did.
        let json: Any = list.count == 1 ? list[0] : list
        let temporary = dir.appendingPathComponent("addr.tmp")
        try JSONSerialization.data(withJSONObject: json).write(to: temporary)
        _ = rename(temporary.path, addressFile.path)
    }

    /// No coordinator up: the client waits (retrying) until one is published again.
    func unpublish() { _ = unlink(addressFile.path) }

    /// Asks the client to start no more transactions and finish those under way.
    func requestStop() { _ = FileManager.default.createFile(atPath: stopURL.path, contents: nil) }

    func killIfRunning() { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

    var errors: String { (try? String(contentsOf: errorsURL, encoding: .utf8)) ?? "" }

    /// Waits for the client to exit and returns what it did with every transaction it started.
    func finish(timeout: Duration = .seconds(120)) async throws -> [HarnessTransaction] {
        try await waitUntil("the crash client to finish", timeout: timeout, poll: .milliseconds(100)) { !process.isRunning }
        guard process.terminationStatus == 0 else {
            throw PeerError.badOutput("crash_client.py failed: \(errors.suffix(3000))")
        }
        struct Output: Decodable { var transactions: [HarnessTransaction] }
        return try JSONDecoder().decode(Output.self, from: Data(contentsOf: outURL)).transactions
    }
}
