import DtmTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ShutdownTests {
    /// SIGTERM while a client keeps submitting sagas whose branches are slow: `dtm` stops
    /// within its drain bound (--shutdown-timeout) with exit code 0, every Submit it
    /// acknowledged is in the store, and a restart on the same store finishes the rest. The
    /// retry loop's passes under way finish during the drain; two sagas whose TransIn answers
    /// ONGOING stay unfinished, and one whose TransIn outlasts the bound is cut off by it.
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
        let held = (0..<2).map { "\(prefix)held\($0)" }
        for gid in held { try busi.control(gid, ["TransIn": "ONGOING"]) }
        let stuck = "\(prefix)stuck"
        try busi.control(stuck, ["delay": ["TransIn": 20]])

        let drain = 4
        let first = try await DtmProcess.start(binary: binary, store: db, logURL: dir.appendingPathComponent("dtm-1.log"),
                                               arguments: ["--shutdown-timeout", "\(drain)"])
        defer { first.killIfRunning() }
        let submitted = try await runClient(first.target, (held + [stuck]).map { Op.submit(transferSaga($0, busi, .grpc)) })
        #expect(submitted.map(\.code) == ["OK", "OK", "OK"], "\(submitted)")
        async let streamed = runClient(first.target, [["submit_until_down": [
            "req": transferSaga("", busi, .grpc), "prefix": prefix, "count": count, "interval": 0.01, "timeout": 10,
        ]]])
        // Signal once the held and stuck sagas are in TransIn, some streamed sagas reached their
        // second step and more are arriving.
        try await waitUntil("sagas under way", timeout: .seconds(60), poll: .milliseconds(20)) {
            let calls = busi.calls(prefix: prefix)
            let inTransIn = { (gid: String) in calls[gid]?.contains { $0.method == "TransIn" } ?? false }
            return (held + [stuck]).allSatisfy(inTransIn)
                && calls.keys.filter { Int($0.dropFirst(prefix.count)) != nil && inTransIn($0) }.count >= 5
                && calls.count >= 20
        }

        // Read before the signal: the coordinator's bound starts when it handles the signal,
        // which can be before this thread runs again after kill() on a busy machine.
        let signalled = ContinuousClock.now
        kill(first.process.processIdentifier, SIGTERM)
        // Exits by itself once the bound cuts the stuck pass off (plus slack for a loaded machine).
        let exited = try await first.waitForExit(timeout: .seconds(drain + 10))
        let stopTook = ContinuousClock.now - signalled
        #expect(exited, "dtm still runs \(drain + 10) s after SIGTERM: \(first.log.suffix(3000))")
        if !exited { try await first.stop(SIGKILL) }
        #expect(first.process.terminationReason == .exit)
        #expect(first.process.terminationStatus == 0, "\(first.log.suffix(3000))")
        #expect(first.log.contains("received SIGTERM") && first.log.contains("dtm: stopped"), "\(first.log.suffix(3000))")
        // The stuck call runs for 20 s: only the bound ended the drain.
        #expect(stopTook >= .seconds(drain), "stopped after \(stopTook)")

        let stream = try #require(try await streamed.first)
        let acked = stream.acked ?? []
        #expect(acked.count >= 5, "\(stream)")
        #expect(!(stream.refused ?? []).isEmpty, "the stream should end with the coordinator: \(stream)")

        // Nothing acknowledged is lost; the held and stuck sagas are left for the restart.
        let atStop = try await dumpDatabase(db)
        for gid in acked + held + [stuck] {
            #expect(atStop.globals[gid] != nil, "acknowledged \(gid) is missing after SIGTERM")
        }
        for gid in held + [stuck] {
            #expect(atStop.globals[gid]?.status == "submitted", "\(gid): \(String(describing: atStop.globals[gid]))")
        }
        let unfinished = (acked + held + [stuck]).filter { atStop.globals[$0]?.status != "succeed" }

        for gid in held + [stuck] { try busi.control(gid, [:]) }
        let second = try await DtmProcess.start(binary: binary, store: db,
                                                logURL: dir.appendingPathComponent("dtm-2.log"))
        defer { second.killIfRunning() }
        var dump = atStop
        do {
            try await waitUntil("every acknowledged saga finished after the restart", timeout: .seconds(90),
                                poll: .milliseconds(300)) {
                dump = try await dumpDatabase(db)
                return (acked + held + [stuck]).allSatisfy { dump.globals[$0]?.status == "succeed" }
            }
        } catch {
            Issue.record("restarted dtm log:\n\(second.log.suffix(4000))")
            throw error
        }
        try await second.stop(SIGTERM)
        #expect(second.process.terminationStatus == 0, "\(second.log.suffix(2000))")
        for gid in acked + held + [stuck] {
            #expect(dump.globals[gid]?.branchStatuses == ["prepared", "succeed", "prepared", "succeed"], "\(gid)")
        }
        print("sigterm test: stopped \(stopTook) after SIGTERM (bound \(drain) s); \(acked.count) streamed sagas "
              + "acknowledged; \(unfinished.count) sagas unfinished at the stop, all finished after the restart")
    }
}
