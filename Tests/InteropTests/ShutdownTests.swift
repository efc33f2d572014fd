import DtmTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ShutdownTests {
    /// SIGTERM while a client keeps submitting sagas whose branches are slow: `dtm` stops
    /// within its drain bound (--shutdown-timeout) with exit code 0, every Submit it
    /// acknowledged is in the store, and a restart on the same store finishes the rest.
    @Test func sigtermUnderLoadDrainsThenRestartFinishes() async throws {
        let binary = try #require(Peers.dtmBinary, "build the dtm executable first")
        let busi = try await BusiPeer.shared()
        let dir = try makeTempDir("dtm-e2e-sigterm")
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("dtm.sqlite").path
        let prefix = uniqueGid("sigterm") + "-"
        let count = 1500
        // Every branch of every streamed saga takes 0.3 s: at the signal many are mid-way.
        for index in 0..<count { try busi.control("\(prefix)\(index)", ["delay": 0.3]) }

        let drain = 8
        let first = try await DtmProcess.start(binary: binary, store: db, logURL: dir.appendingPathComponent("dtm-1.log"),
                                               arguments: ["--shutdown-timeout", "\(drain)"])
        defer { first.killIfRunning() }
        async let streamed = runClient(first.target, [["submit_until_down": [
            "req": transferSaga("", busi, .grpc), "prefix": prefix, "count": count, "interval": 0.01, "timeout": 10,
        ]]])
        try await waitUntil("streamed sagas under way", timeout: .seconds(60), poll: .milliseconds(20)) {
            busi.calls(prefix: prefix).count >= 20
        }

        kill(first.process.processIdentifier, SIGTERM)
        let signalled = ContinuousClock.now
        // Exits by itself within the drain bound (plus slack for a loaded machine).
        let exited = try await first.waitForExit(timeout: .seconds(drain + 10))
        let stopTook = ContinuousClock.now - signalled
        #expect(exited, "dtm still runs \(drain + 10) s after SIGTERM: \(first.log.suffix(3000))")
        if !exited { try await first.stop(SIGKILL) }
        #expect(first.process.terminationReason == .exit)
        #expect(first.process.terminationStatus == 0, "\(first.log.suffix(3000))")
        #expect(first.log.contains("received SIGTERM") && first.log.contains("[dtm] stopped"), "\(first.log.suffix(3000))")

        let stream = try #require(try await streamed.first)
        let acked = stream.acked ?? []
        #expect(acked.count >= 3, "\(stream)")
        #expect(!(stream.refused ?? []).isEmpty, "the stream should end with the coordinator: \(stream)")

        // Nothing acknowledged is lost, and the stop left work for the restart.
        let atStop = try await dumpDatabase(db)
        for gid in acked {
            #expect(atStop.globals[gid] != nil, "acknowledged \(gid) is missing after SIGTERM")
        }
        let unfinished = acked.filter { atStop.globals[$0]?.status != "succeed" }
        #expect(!unfinished.isEmpty, "SIGTERM should find sagas in flight")

        let second = try await DtmProcess.start(binary: binary, store: db,
                                                logURL: dir.appendingPathComponent("dtm-2.log"))
        defer { second.killIfRunning() }
        var dump = atStop
        do {
            try await waitUntil("every acknowledged saga finished after the restart", timeout: .seconds(90),
                                poll: .milliseconds(300)) {
                dump = try await dumpDatabase(db)
                return acked.allSatisfy { dump.globals[$0]?.status == "succeed" }
            }
        } catch {
            Issue.record("restarted dtm log:\n\(second.log.suffix(4000))")
            throw error
        }
        try await second.stop(SIGTERM)
        #expect(second.process.terminationStatus == 0, "\(second.log.suffix(2000))")
        for gid in acked {
            #expect(dump.globals[gid]?.branchStatuses == ["prepared", "succeed", "prepared", "succeed"], "\(gid)")
        }
        print("sigterm test: stopped \(stopTook) after SIGTERM (bound \(drain) s); \(acked.count) acknowledged, "
              + "\(unfinished.count) of them unfinished at the stop, all finished after the restart")
    }
}
