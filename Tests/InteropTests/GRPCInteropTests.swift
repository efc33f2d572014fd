import DtmGRPC
import DtmNet
import DtmProto
import DtmEngine
import DtmServer
import DtmTestSupport
import Foundation
import Testing

@Suite(.serialized) struct GRPCInteropTests {
    /// A Python grpcio client with stubs generated from proto/ calls our server.
    @Test func grpcioClientCallsOurServer() async throws {
        let python = try Peers.require(Peers.python, "python with grpcio")
        let run = try await withStarted(await CoordinatorServer.start(CoordinatorConfig(host: "127.0.0.1", grpcPort: 0),
                                                                     store: InMemoryStore())) { coordinator in
            try await Peers.run(python, ["dtm_client.py", "127.0.0.1:\(coordinator.grpcPort)"])
        }
        #expect(run.status == 0, "\(run.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        let gids = try #require(json["gids"] as? [String])
        #expect(gids.count == 50)
        #expect(Set(gids).count == 50)
        #expect(gids == gids.sorted(), "gids from one process sort by creation")
        #expect(gids.allSatisfy { $0.count == 22 })
        let submit = try #require(json["Submit"] as? [String: String])
        #expect(submit["code"] == "INVALID_ARGUMENT")
        #expect(submit["details"]?.contains("gid") ?? false, "\(submit)")
        let register = try #require(json["RegisterBranch"] as? [String: String])
        #expect(register["code"] == "ABORTED", "\(register)")
        #expect((json["unknown"] as? [String: String])?["code"] == "UNIMPLEMENTED")
        let garbage = try #require(json["garbage"] as? [String: String])
        #expect(garbage["code"] == "INVALID_ARGUMENT")
        #expect(garbage["details"]?.contains("google.protobuf.Empty") ?? false)
        #expect((json["after"] as? String)?.count == 22)
    }

    /// Our pooled client calls a Python grpcio busi server.
    @Test func ourClientCallsGrpcioServer() async throws {
        let python = try Peers.require(Peers.python, "python with grpcio")
        let peer = try await RunningPeer.start(python, ["busi_server.py"])
        defer { peer.stop() }
        let target = "127.0.0.1:\(peer.firstLine)"
        try await withStarted(GRPCClient()) { client in
            func call(_ result: String, timeout: Duration? = .seconds(30)) async -> Result<GRPCResponse, RPCError> {
                var metadata = Metadata()
                metadata.add("dtm-gid", "gid-1")
                metadata.add("x-branch", "héllo".addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")
                let request = BusiReqGrpc(amount: 30, transOutResult: result)
                do {
                    return .success(try await client.unary(target: target, path: "/busi.Busi/TransOut",
                                                           message: request.encode(), metadata: metadata, timeout: timeout))
                } catch {
                    return .failure(error)
                }
            }

            let ok = try await call("SUCCESS").get()
            #expect(ok.message == [])
            #expect(ok.metadata["echo-dtm-gid"] == "gid-1")
            #expect(ok.trailers["amount"] == "30")
            for (result, code) in [("FAILURE", GRPCStatusCode.aborted), ("ONGOING", .failedPrecondition),
                                   ("UNAVAILABLE", .unavailable), ("BOOM", .internal)] {
                let error = await call(result).error
                #expect(error?.code == code, "\(result)")
                if code != .internal { #expect(error?.message == "reason:\(result)") }
            }
            // The busi sleeps 30 s before it answers SLEEP: the call ends at its own deadline.
            let started = ContinuousClock.now
            #expect(await call("SLEEP", timeout: .milliseconds(300)).error?.code == .deadlineExceeded)
            #expect(ContinuousClock.now - started < .seconds(20))
            // Many concurrent calls share the pooled connection.
            let codes = await withTaskGroup(of: GRPCStatusCode?.self) { group in
                for index in 0..<100 { group.addTask { await call(index % 2 == 0 ? "" : "FAILURE").error?.code } }
                return await group.reduce(into: [GRPCStatusCode?]()) { $0.append($1) }
            }
            #expect(codes.filter { $0 == nil }.count == 50)
            #expect(codes.filter { $0 == .aborted }.count == 50)
            let reply = try await client.unary(target: target, path: "/busi.Busi/QueryPrepared",
                                               message: BusiReqGrpc().encode(), timeout: .seconds(30))
            #expect(try BusiReply(decoding: reply.message).message == "prepared")
            do throws(RPCError) {
                _ = try await client.unary(target: target, path: "/busi.Busi/Nope", message: [], timeout: .seconds(30))
                Issue.record("an unknown method succeeded")
            } catch {
                #expect(error.code == .unimplemented)
            }
        }
    }

    /// A peer that is down surfaces as UNAVAILABLE, and the pool reconnects once it is back.
    @Test func poolReconnectsAfterThePeerRestarts() async throws {
        var router = GRPCRouter()
        router.register(service: "t.S", method: "Echo", .sync { GRPCResponse(message: $0.message) })
        try await withStarted(GRPCClient()) { client in
            let first = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: router)
            let port = first.port
            let target = "127.0.0.1:\(port)"
            #expect(try await client.unary(target: target, path: "/t.S/Echo", message: [1], timeout: .seconds(30)).message == [1])
            await first.stop()
            do throws(RPCError) {
                _ = try await client.unary(target: target, path: "/t.S/Echo", message: [2], timeout: .seconds(30))
                Issue.record("a call to a stopped server succeeded")
            } catch {
                #expect(error.code == .unavailable)
            }
            try await withStarted(await GRPCServer.start(host: "127.0.0.1", port: port, router: router)) { _ async throws in
                #expect(try await client.unary(target: target, path: "/t.S/Echo", message: [3], timeout: .seconds(30)).message == [3])
            }
        }
    }

    @Test func unreachablePeerIsUnavailable() async throws {
        try await withStarted(GRPCClient()) { client in
            do throws(RPCError) {
                _ = try await client.unary(target: "127.0.0.1:1", path: "/busi.Busi/TransOut", message: [], timeout: .seconds(30))
                Issue.record("a call to a closed port succeeded")
            } catch {
                #expect(error.code == .unavailable)
            }
            do throws(RPCError) {
                _ = try await client.unary(target: "no-port", path: "/x.Y/Z", message: [])
                Issue.record("a call to a bad target succeeded")
            } catch {
                #expect(error.code == .invalidArgument)
            }
        }
    }
}

extension Result where Failure == RPCError {
    var error: RPCError? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
