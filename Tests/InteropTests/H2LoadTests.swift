import DtmGRPC
import DtmNet
import DtmProto
import DtmEngine
import DtmServer
import DtmTestSupport
import Foundation
import Testing

@Suite(.serialized) struct H2LoadTests {
    /// h2load (nghttp2's load generator) drives NewGid with valid gRPC requests; every request
    /// must succeed at the HTTP/2 level, and a request of the same shape must carry grpc-status 0
    /// (h2load itself cannot see gRPC errors).
    @Test func h2loadDrivesNewGidWithoutErrors() async throws {
        let h2load = try Peers.require(Peers.which("h2load"), "h2load (apt-get install nghttp2-client)")
        let nghttp = try Peers.require(Peers.which("nghttp"), "nghttp (apt-get install nghttp2-client)")
        try await withStarted(await CoordinatorServer.start(CoordinatorConfig(host: "127.0.0.1", grpcPort: 0),
                                                           store: InMemoryStore())) { coordinator in
            let body = FileManager.default.temporaryDirectory.appendingPathComponent("empty-\(UUID()).grpc")
            try Data([0, 0, 0, 0, 0]).write(to: body)
            defer { try? FileManager.default.removeItem(at: body) }
            let url = "http://127.0.0.1:\(coordinator.grpcPort)/dtmgimp.Dtm/NewGid"
            let headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]

            let load = try await Peers.run(h2load, ["-n", "20000", "-c", "4", "-m", "16", "-t", "1", "-d", body.path]
                                           + headers + [url])
            #expect(load.status == 0, "\(load.stderr)")
            #expect(load.stdout.contains("20000 succeeded, 0 failed, 0 errored, 0 timeout"), "\(load.stdout)")
            #expect(load.stdout.contains("status codes: 20000 2xx"), "\(load.stdout)")

            let sample = try await Peers.run(nghttp, ["-v", "-d", body.path] + headers + [url])
            #expect(sample.stdout.contains("grpc-status: 0"), "\(sample.stdout)")
            // Still healthy for a real client afterwards.
            let reply = try await withStarted(GRPCClient()) { client in
                try await client.unary(target: "127.0.0.1:\(coordinator.grpcPort)", path: "/dtmgimp.Dtm/NewGid",
                                       message: Empty().encode(), timeout: .seconds(30))
            }
            #expect(try DtmGidReply(decoding: reply.message).gid.count == 22)
        }
    }
}
