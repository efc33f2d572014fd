import DtmTestSupport
import Foundation
import Testing

/// Real peers for interop tests: Python grpcio programs and command-line tools, started by
/// the tests themselves.
enum Peers {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let pythonDir = repoRoot.appendingPathComponent("Tests/InteropTests/python")

    /// The venv's python made by `tools/test` (or `DTM_PYTHON`); nil if missing.
    static var python: String? {
        let candidates: [String?] = [ProcessInfo.processInfo.environment["DTM_PYTHON"],
                          repoRoot.appendingPathComponent(".venv-interop/bin/python").path]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The `dtm` executable of this build: `DTM_BINARY`, else the one beside this test bundle
    /// (same scratch path, e.g. `.build-e2e/debug/dtm`), else `.build/debug/dtm`.
    static var dtmBinary: String? {
        var candidates: [String?] = [ProcessInfo.processInfo.environment["DTM_BINARY"]]
        for bundle in [(try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")),
                       CommandLine.arguments.first, Bundle.main.executablePath] {
            guard let bundle else { continue }
            var dir = URL(fileURLWithPath: bundle).deletingLastPathComponent()
            // On macOS the test binary sits inside swift-dtmPackageTests.xctest/Contents/MacOS.
            while dir.path.contains(".xctest") { dir = dir.deletingLastPathComponent() }
            candidates.append(dir.appendingPathComponent("dtm").path)
        }
        candidates.append(repoRoot.appendingPathComponent(".build/debug/dtm").path)
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func require(_ tool: String?, _ what: String) throws -> String {
        guard let tool else {
            Issue.record("\(what) not found: run tools/test, which installs the interop peers")
            throw PeerError.missing(what)
        }
        return tool
    }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// Runs a program to completion (bounded by `timeout`) and returns its stdout.
    static func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) async throws
        -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = pythonDir
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes while the process runs so a full pipe cannot block it.
        async let stdout = readToEnd(out)
        async let stderr = readToEnd(err)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            process.terminate()
            throw PeerError.timedOut("\(executable) \(arguments.joined(separator: " "))")
        }
        return (process.terminationStatus, String(decoding: await stdout, as: UTF8.self),
                String(decoding: await stderr, as: UTF8.self))
    }
}

/// Reads a pipe to its end on a thread of its own: blocking reads must not occupy the few
/// threads of Swift's cooperative pool, which the in-process server under test needs.
func readToEnd(_ pipe: Pipe) async -> Data {
    await onOwnThread { pipe.fileHandleForReading.readDataToEndOfFile() }
}

enum PeerError: Error {
    case missing(String)
    case timedOut(String)
    case badOutput(String)
}

extension RunningPeer {
    /// A peer from the interop tests' python folder.
    static func start(_ executable: String, _ arguments: [String]) async throws -> RunningPeer {
        try await start(executable, in: Peers.pythonDir, arguments)
    }
}
