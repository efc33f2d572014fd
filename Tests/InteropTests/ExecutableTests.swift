import DtmGRPC
import DtmNet
import DtmProto
import Foundation
import Testing

@Suite(.serialized) struct ExecutableTests {
    /// `dtm` with no arguments listens on DTM's default ports (gRPC 36790, HTTP 36789), keeps its
    /// SQLite store in the working directory, and stops cleanly on SIGTERM.
    @Test func dtmStartsOnDefaultPortAndStopsOnSIGTERM() async throws {
        let binary = try #require(Peers.dtmBinary, "build first: swift build")
        let workDir = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-exe-\(UUID())")
        try FileManager.default.createDirectory(at: workDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: workDir) }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.currentDirectoryURL = workDir
        let log = Pipe()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        let client = GRPCClient()
        defer { Task { await client.shutdown() } }
        var gid: String?
        for _ in 0..<100 where gid == nil {
            gid = try? await DtmGidReply(decoding: client.unary(
                target: "127.0.0.1:36790", path: "/dtmgimp.Dtm/NewGid", message: Empty().encode(),
                timeout: .seconds(1)).message).gid
            if gid == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(gid?.count == 22)
        let python = try Peers.require(Peers.python, "python")
        let ping = try await Peers.run(python, ["-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:36789/api/ping', timeout=5).read().decode())"])
        #expect(ping.stdout.contains(#""msg":"pong""#), "\(ping.stdout) \(ping.stderr)")
        #expect(FileManager.default.fileExists(atPath: workDir.appendingPathComponent("dtm.sqlite").path))

        process.terminate()  // SIGTERM
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning)
        #expect(process.terminationStatus == 0)
        let output = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(output.contains("0.0.0.0:36790"), "\(output)")
        #expect(output.contains("0.0.0.0:36789"), "\(output)")
        #expect(output.contains("received SIGTERM"), "\(output)")
    }
}
