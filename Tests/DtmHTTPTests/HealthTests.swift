import DtmTestSupport
import DtmEngine
import DtmGRPC
import DtmNet
import DtmProto
@testable import DtmServer
import DtmStore
import Foundation
import Testing

/// Issue 8, item 11: `/api/ping` and `grpc.health.v1.Health/Check` tell the truth about the
/// store; an episode in which the store cannot write (another process holds SQLite's write
/// lock) is survived: nothing acknowledged is lost, nothing unacknowledged appears.
@Suite struct HealthTests {
    @Test func pingAndHealthCheckFollowTheStore() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("health-\(UUID().uuidString).sqlite").path
        defer { removeDatabaseFiles(path) }
        let store = try SQLiteStore(path: path, busyTimeout: .milliseconds(200))
        defer { store.close() }
        try await withCoordinator(store: store) { coordinator, api in try await withGRPCClient(coordinator) { client, target in
            func check(_ service: String = "") async throws -> HealthCheckResponse.ServingStatus {
                let reply = try await client.unary(target: target, path: "/grpc.health.v1.Health/Check",
                                                   message: HealthCheckRequest(service: service).encode(),
                                                   timeout: .seconds(30))
                return try HealthCheckResponse(decoding: reply.message).status
            }
            func submit(_ gid: String) async throws -> Int {
                try await api.post("/api/dtmsvr/submit", #"{"gid":"\#(gid)","trans_type":"saga","steps":[],"payloads":[]}"#).status
            }

            #expect(try await api.get("/api/ping").text == #"{"msg":"pong"}"#)
            #expect(try await check() == .serving)
            #expect(try await check("dtmgimp.Dtm") == .serving)
            await #expect(throws: RPCError.self) { try await check("no.such.Service") }
            #expect(try await submit("before") == 200)

            let lock = try SQLiteWriteLock(path: path)
            let ping = try await api.get("/api/ping")
            #expect(ping.status == 503, "\(ping)")
            #expect((ping.json["message"] as? String)?.contains("store unhealthy") == true, "\(ping)")
            #expect(try await check() == .notServing)
            #expect(try await submit("during") == 500, "a Submit the store could not write is not acknowledged")
            lock.release()

            #expect(try await api.get("/api/ping").status == 200)
            #expect(try await check() == .serving)
            #expect(try await submit("after") == 200)
            #expect(try await store.findGlobal(gid: "before") != nil)
            #expect(try await store.findGlobal(gid: "during") == nil)
            #expect(try await store.findGlobal(gid: "after") != nil)
        } }
    }
}
