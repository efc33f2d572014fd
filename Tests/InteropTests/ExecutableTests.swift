import DtmGRPC
import DtmNet
import DtmProto
import DtmTestSupport
import Foundation
import Testing

@Suite struct ExecutableTests {
    /// `dtm` listens on all interfaces, keeps its SQLite store in the working directory, serves
    /// gRPC and HTTP, runs half the cores' event loop threads, and stops cleanly on SIGTERM. Its
    /// ports default to DTM's (gRPC 36790, HTTP 36789), which `--help` shows; the run itself binds
    /// free ports, since another dtm on the machine (another test run) may hold DTM's.
    @Test func dtmServesAndStopsOnSIGTERM() async throws {
        let binary = try #require(Peers.dtmBinary, "build first: swift build")
        let help = try await Peers.run(binary, ["--help"])
        let options = help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(options.contains(/--grpc-port <grpc-port> [^-]*\(default: 36790\)/), "\(help.stdout)")
        #expect(options.contains(/--http-port <http-port> [^-]*\(default: 36789\)/), "\(help.stdout)")

        let workDir = try makeTempDir("dtm-exe")
        defer { try? FileManager.default.removeItem(at: workDir) }
        let logURL = workDir.appendingPathComponent("dtm.log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: logURL)
        var output: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
        let process = Process()
        // Started with a low soft open-file limit, which dtm raises to the hard one (as Go does).
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", #"ulimit -Sn 256 && exec "$0" "$@""#, binary, "--grpc-port", "0", "--http-port", "0"]
        process.currentDirectoryURL = workDir
        process.standardError = log
        process.standardOutput = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try log.close()
        defer { if process.isRunning { process.terminate() } }

        var ports: (grpc: Int, http: Int)?
        try await waitUntil("dtm to announce its ports: \(output)") {
            if !process.isRunning { throw PeerError.badOutput("dtm exited: \(output)") }
            guard let grpc = output.firstMatch(of: /grpc=0\.0\.0\.0:(\d+)/).flatMap({ Int($0.1) }),
                  let http = output.firstMatch(of: /http=0\.0\.0\.0:(\d+)/).flatMap({ Int($0.1) }) else { return false }
            ports = (grpc, http)
            return true
        }
        let (grpcPort, httpPort) = try #require(ports)
        let reply = try await withStarted(GRPCClient()) { client in
            try await client.unary(target: "127.0.0.1:\(grpcPort)", path: "/dtmgimp.Dtm/NewGid",
                                   message: Empty().encode(), timeout: .seconds(30))
        }
        #expect(try DtmGidReply(decoding: reply.message).gid.count == 22)
        let python = try Peers.require(Peers.python, "python")
        let ping = try await Peers.run(python, ["-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:\(httpPort)/api/ping', timeout=30).read().decode())"])
        #expect(ping.stdout.contains(#""msg":"pong""#), "\(ping.stdout) \(ping.stderr)")
        #expect(FileManager.default.fileExists(atPath: workDir.appendingPathComponent("dtm.sqlite").path))
        let limits = try String(contentsOfFile: "/proc/\(process.processIdentifier)/limits", encoding: .utf8)
        let files = try #require(limits.firstMatch(of: /Max open files\s+(\d+)\s+(\d+|unlimited)/), "\(limits)")
        let hard = Int(files.2) ?? (1 << 20)
        #expect(Int(files.1) == min(hard, 1 << 20), "\(limits)")
        // EventLoops 0 (the default): the shared event loop group has half the cores' threads.
        let tasks = "/proc/\(process.processIdentifier)/task"
        let threadNames = try FileManager.default.contentsOfDirectory(atPath: tasks).compactMap {
            try? String(contentsOfFile: "\(tasks)/\($0)/comm", encoding: .utf8)
        }
        #expect(threadNames.filter { $0.hasPrefix("NIO-SGLTN-") }.count == EventLoopThreads.automatic, "\(threadNames)")
        #expect(threadNames.contains { $0.hasPrefix("sqlite-writer") }, "\(threadNames)")
        // dtm executed itself again with glibc's per-thread cache enlarged (same pid), under its
        // own name (ps, top and pgrep show `dtm`, not `exe`).
        let environment = try String(contentsOfFile: "/proc/\(process.processIdentifier)/environ", encoding: .utf8)
        #expect(environment.split(separator: "\0").contains("GLIBC_TUNABLES=glibc.malloc.tcache_count=128"))
        let name = try String(contentsOfFile: "/proc/\(process.processIdentifier)/comm", encoding: .utf8)
        #expect(name.trimmingCharacters(in: .whitespacesAndNewlines) == URL(fileURLWithPath: binary).lastPathComponent)

        process.terminate()  // SIGTERM
        try await waitUntil("dtm to exit after SIGTERM: \(output)") { !process.isRunning }
        #expect(process.terminationReason == .exit && process.terminationStatus == 0, "\(output)")
        #expect(output.contains("received SIGTERM"), "\(output)")
    }

    /// `dtm check-config` prints the effective settings (password redacted) and exits 0; a bad
    /// value makes it, and `dtm` itself, exit non-zero naming the key, the value and what is allowed.
    @Test func checkConfigAndBadValues() async throws {
        let binary = try #require(Peers.dtmBinary, "build first: swift build")
        let ok = try await Peers.run(binary, ["check-config", "--store", "postgres://dtm:hunter2@db:5432/dtm",
                                              "--retry-interval=12", "--timeout-to-fail", "40"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("Store:") && ok.stdout.contains("dtm:***@db:5432/dtm"), "\(ok.stdout)")
        #expect(!ok.stdout.contains("hunter2") && !ok.stderr.contains("hunter2"))
        #expect(ok.stdout.contains(/RetryInterval: +12 +# flag --retry-interval/), "\(ok.stdout)")
        for arguments in [["check-config", "--http-port", "80a"], ["--http-port", "80a"]] {
            let bad = try await Peers.run(binary, arguments)
            #expect(bad.status != 0)
            #expect(bad.stderr.contains(#"invalid HttpPort "80a" (from flag --http-port): allowed is a whole number in 0...65535"#),
                    "\(bad.stderr)")
        }
    }
}
