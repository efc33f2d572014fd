import DtmEngine
import DtmServer
import DtmTestSupport
import Foundation
import Testing

/// The bank-transfer example, run as built, against an in-process coordinator: it prints the
/// balances after a transfer that succeeds and one the coordinator compensates.
@Suite struct ExampleTests {
    static var binary: String? {
        var candidates: [String?] = [ProcessInfo.processInfo.environment["DTM_BANK_TRANSFER_BINARY"]]
        for start in [try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"),
                      CommandLine.arguments.first, Bundle.main.executablePath] {
            guard let start else { continue }
            var dir = URL(fileURLWithPath: start).deletingLastPathComponent()
            while dir.path.contains(".xctest") { dir = dir.deletingLastPathComponent() }
            candidates.append(dir.appendingPathComponent("bank-transfer").path)
        }
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test func bankTransferRunsEndToEnd() async throws {
        let binary = try #require(Self.binary, "build the example first: swift build")
        try await withStarted(try await CoordinatorServer.start(
            CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: quickEngine),
            store: InMemoryStore(), logger: testLogger)) { coordinator in
            let port = coordinator.grpcPort
            let (status, output) = try await onOwnThread { () throws -> (Int32, String) in
                let process = Process()
                process.executableURL = URL(fileURLWithPath: binary)
                // A machine loaded by other work may take longer than the example's default 10 s.
                process.arguments = ["--dtm", "127.0.0.1:\(port)", "--timeout", "60"]
                let pipe = Pipe()
                process.standardOutput = pipe
                process.standardError = pipe
                try process.run()
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                return (process.terminationStatus, String(decoding: data, as: UTF8.self))
            }
            #expect(status == 0, "\(output)")
            #expect(output.contains("start: alice 100, bob 100"), "\(output)")
            #expect(output.contains("after transfer 1: alice 70, bob 130"), "\(output)")
            #expect(output.contains("-> rolled back"), "\(output)")
            #expect(output.contains("after transfer 2: alice 70, bob 130"), "\(output)")
        }
    }
}
