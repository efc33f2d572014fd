import DtmEngine
import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import Testing

/// Issue 10, item 6: grpcio's reflection and health-checking clients against our streaming RPCs.
@Suite(.serialized) struct StreamingInteropTests {
    @Test func grpcioReflectionListsAndResolvesDtm() async throws {
        let python = try Peers.require(Peers.python, "python with grpcio-reflection")
        let run = try await withStarted(await CoordinatorServer.start(CoordinatorConfig(host: "127.0.0.1", grpcPort: 0),
                                                                     store: InMemoryStore())) { coordinator in
            try await Peers.run(python, ["reflection_client.py", "127.0.0.1:\(coordinator.grpcPort)"])
        }
        #expect(run.status == 0, "\(run.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any],
                                "\(run.stdout) \(run.stderr)")
        let services = try #require(json["services"] as? [String])
        #expect(services == ["dtmgimp.Dtm", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                             "grpc.reflection.v1alpha.ServerReflection"])
        #expect(json["file"] as? String == "dtmgimp.proto")
        #expect(json["dependencies"] as? [String] == ["google/protobuf/empty.proto"])
        #expect((json["methods"] as? [String])?.first == "NewGid")
        #expect((json["gid"] as? String)?.count == 22, "a NewGid call built from the reflected descriptor")
        #expect(json["submit_fields"] as? [String] == ["Gid", "TransType", "TransOptions"])
        #expect(json["v1_kinds"] as? [String] == ["list_services_response", "file_descriptor_response",
                                                 "file_descriptor_response", "error_response", "error_response"])
        #expect(json["v1_services"] as? [String] == services)
        #expect(json["v1_symbol_files"] as? [String] == ["dtmgimp.proto", "google/protobuf/empty.proto"])
        let errors = try #require(json["v1_errors"] as? [[Any]])
        #expect(errors.map { $0.first as? Int } == [5, 5])
        #expect((errors.first?.last as? String)?.contains("no.such.Symbol") == true)
        #expect(json["v1_echo"] as? String == "no.such.Symbol")
    }

    @Test func grpcioHealthWatchSeesTheStoreChange() async throws {
        let python = try Peers.require(Peers.python, "python with grpcio-health-checking")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("watch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("dtm.sqlite").path
        let outfile = dir.appendingPathComponent("watch.txt").path
        let store = try SQLiteStore(path: path, busyTimeout: .milliseconds(200))
        defer { store.close() }
        try await withStarted(await CoordinatorServer.start(CoordinatorConfig(host: "127.0.0.1", grpcPort: 0),
                                                           store: store)) { coordinator in
            let peer = try await RunningPeer.start(python, ["health_watch.py", "127.0.0.1:\(coordinator.grpcPort)", outfile])
            defer { peer.stop() }
            #expect(peer.firstLine == "SERVING")
            func lines() -> [String] {
                ((try? String(contentsOfFile: outfile, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            let lock = try SQLiteWriteLock(path: path)
            try await waitUntil("the watcher to see NOT_SERVING") { lines().contains("status NOT_SERVING") }
            lock.release()
            try await waitUntil("the watcher to finish") { lines().last?.hasPrefix("result ") == true }
            let result = try #require(lines().last.map { Data($0.dropFirst("result ".count).utf8) })
            let json = try #require(try JSONSerialization.jsonObject(with: result) as? [String: Any])
            #expect(json["watch"] as? [String] == ["SERVING", "NOT_SERVING", "SERVING"])
            #expect(json["deadline"] as? String == "DEADLINE_EXCEEDED")
            #expect(json["deadline_received"] as? [String] == ["SERVING"])
            #expect(json["unknown"] as? String == "SERVICE_UNKNOWN")
        }
    }

    /// A graceful shutdown does not wait out its grace period for watches that never end: they
    /// are ended with UNAVAILABLE right after the final GOAWAY, and the client is told why.
    @Test func shutdownEndsHealthWatches() async throws {
        let python = try Peers.require(Peers.python, "python with grpcio-health-checking")
        let outfile = FileManager.default.temporaryDirectory.appendingPathComponent("end-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: outfile) }
        let coordinator = try await CoordinatorServer.start(CoordinatorConfig(host: "127.0.0.1", grpcPort: 0),
                                                            store: InMemoryStore())
        let peer: RunningPeer
        do {
            peer = try await RunningPeer.start(python, ["watch_until_end.py", "127.0.0.1:\(coordinator.grpcPort)", outfile])
        } catch {
            await coordinator.shutdown(gracePeriod: .zero)
            throw error
        }
        defer { peer.stop() }
        #expect(peer.firstLine == "SERVING")
        // Without ending the watch, the shutdown would wait the whole minute and then cut the
        // connection: the client would see UNAVAILABLE without the reason.
        await coordinator.shutdown(gracePeriod: .seconds(60))
        try await waitUntil("the watcher to write its final status") { FileManager.default.fileExists(atPath: outfile) }
        try await waitUntil("the final status to be complete") {
            ((try? String(contentsOfFile: outfile, encoding: .utf8)) ?? "").hasSuffix("\n")
        }
        let end = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: outfile)))
            as? [String: String])
        #expect(end["code"] == "UNAVAILABLE")
        #expect(end["details"]?.contains("shutting down") == true, "\(end)")
    }
}
