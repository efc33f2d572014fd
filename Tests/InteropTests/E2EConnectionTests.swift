import DtmGRPC
import DtmNet
import DtmTestSupport
import Foundation
import Testing

@Suite struct E2EConnectionTests {
    /// Many fresh pooled clients connect to the grpcio busi at once, as coordinators do when
    /// they start: each first call must succeed. (The client handler used to be added after
    /// `connect`; now and then it missed the server's first SETTINGS frame, nghttp2 sent GOAWAY
    /// "SETTINGS expected", and that connection hung every branch call until its deadline.)
    /// Connect timeout and deadline are generous: the busi peer, shared with the other tests, may
    /// be slow to accept and answer 400 connections on a loaded machine (its listen backlog
    /// overflows and the kernel retries SYNs after 1 s, 3 s, ...); the bug shows as a hang
    /// however long the deadline.
    @Test func freshConnectionsNeverMissTheServersSettings() async throws {
        let busi = try await BusiPeer.shared()
        let failures = await withTaskGroup(of: String?.self) { group in
            for index in 0..<400 {
                group.addTask {
                    do {
                        _ = try await withStarted(GRPCClient(config: GRPCClientConfig(connectTimeout: .seconds(30)))) { client in
                            try await client.unary(target: busi.grpcTarget, path: "/busi.Busi/QueryPrepared",
                                                   message: [], timeout: .seconds(30))
                        }
                        return nil
                    } catch {
                        return "call \(index): \(error)"
                    }
                }
                if index % 8 == 7 { try? await Task.sleep(for: .milliseconds(5)) }
            }
            return await group.reduce(into: [String]()) { if let failure = $1 { $0.append(failure) } }
        }
        #expect(failures.isEmpty, "\(failures.count) of 400 first calls failed: \(failures.prefix(3))")
    }
}
