import Foundation

/// Why a peer process could not be used.
public struct PeerStartError: Error, CustomStringConvertible {
    public let description: String
}

/// A long-running peer process (a Python server, a client) that prints one line (e.g. its port)
/// when ready and stops when its stdin closes or on `stop()`.
public final class RunningPeer: @unchecked Sendable {
    public let process = Process()
    private let stdin = Pipe()
    /// What the peer printed first.
    public let firstLine: String

    /// Starts `executable` in `directory` and waits (off the cooperative pool) for its first line.
    public static func start(_ executable: String, in directory: URL, _ arguments: [String]) async throws -> RunningPeer {
        try await onOwnThread { try RunningPeer(executable, arguments, directory) }
    }

    private init(_ executable: String, _ arguments: [String], _ directory: URL) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let out = Pipe()
        process.standardOutput = out
        process.standardInput = stdin
        try process.run()
        var line = Data()
        while true {
            let byte = out.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty || byte == Data("\n".utf8) { break }
            line.append(byte)
        }
        firstLine = String(decoding: line, as: UTF8.self)
        guard !firstLine.isEmpty else {
            throw PeerStartError(description: "\(arguments.first ?? executable) printed nothing")
        }
    }

    public func stop() {
        try? stdin.fileHandleForWriting.close()
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}
