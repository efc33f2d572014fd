import AsyncHTTPClient
import DtmEngine
import DtmGRPC
import DtmNet
import DtmProto
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
@testable import DtmServer

/// A TCP server on 127.0.0.1:0 that answers the first bytes of each connection with `reply`
/// (nothing when empty) and then stays silent, keeping the connection open.
final class SilentPeer: Sendable {
    let channel: Channel
    var port: Int { channel.localAddress?.port ?? 0 }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let reply: [UInt8]
        var answered = false
        init(reply: [UInt8]) { self.reply = reply }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !answered, !reply.isEmpty else { return }
            answered = true
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: reply)), promise: nil)
        }
    }

    private init(channel: Channel) { self.channel = channel }

    static func start(reply: [UInt8]) async throws -> SilentPeer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return SilentPeer(channel: channel)
    }

    func close() async { try? await channel.close() }
}

/// Runs `body`, failing the test if it has not returned after `limit` (a generous bound that
/// only catches a hang; the test does not time anything finer).
func returnsWithin<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask { await body() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

/// Polls `condition` until it holds or `limit` passes; returns whether it held.
func eventually(within limit: Duration = .seconds(30), _ condition: @Sendable () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

private func global(_ gid: String, _ proto: TransProtocol) -> GlobalTransaction {
    GlobalTransaction(gid: gid, transType: .saga, status: .submitted, transProtocol: proto, createTime: Date())
}

@Suite struct BranchDeadlineTests {
    /// Finding 3: an HTTP branch that sends its headers and half its body, then stalls. The
    /// call returns an error once its request timeout (1 s) has passed instead of waiting for
    /// the rest forever (async-http-client's own deadline ends with the response head).
    @Test func httpBranchStalledMidBodyFailsAtItsDeadline() async throws {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n"
        let peer = try await SilentPeer.start(reply: Array(head.utf8) + Array(repeating: UInt8(ascii: " "), count: 50))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPBranchCaller.clientConfiguration())
        let caller = HTTPBranchCaller(client: client, logger: .init(label: "test"))
        let call = BranchCall(branchID: "01", op: .action, url: "http://127.0.0.1:\(peer.port)/busi/action",
                              payload: Array("{}".utf8), requestTimeout: 1)
        let result = await returnsWithin(.seconds(60)) {
            await caller.call(call, of: global("stall-\(UUID().uuidString)", .http))
        }
        try await client.shutdown()
        await peer.close()
        let answered = try #require(result, "the call must return")
        guard case .error(let message) = answered else {
            Issue.record("expected an error, got \(answered)")
            return
        }
        #expect(message.contains("request timeout"))
    }

    /// Redirects are answers, not instructions: the 302 is the branch's (erroneous) result and
    /// its Location is never requested.
    @Test func httpBranchRedirectIsNotFollowed() async throws {
        let hits = NIOLockedValueBox(0)
        let router = Router()
        router.post("/busi/action") { _, _ -> Response in
            hits.withLockedValue { $0 += 1 }
            return Response(status: .found, headers: [.location: "/busi/elsewhere"])
        }
        router.post("/busi/elsewhere") { _, _ -> Response in
            hits.withLockedValue { $0 += 100 }
            return Response(status: .ok)
        }
        let server = try await HTTPAPIServer.start(host: "127.0.0.1", port: 0, router: router, logger: .init(label: "t"))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPBranchCaller.clientConfiguration())
        let caller = HTTPBranchCaller(client: client, logger: .init(label: "test"))
        let call = BranchCall(branchID: "01", op: .action, url: "http://127.0.0.1:\(server.port)/busi/action",
                              payload: Array("{}".utf8), requestTimeout: 5)
        let result = await caller.call(call, of: global("redirect-\(UUID().uuidString)", .http))
        try await client.shutdown()
        await server.shutdown(gracePeriod: .seconds(1))
        guard case .error(let message) = result else {
            Issue.record("expected an error, got \(result)")
            return
        }
        #expect(message.hasPrefix("HTTP 302"))
        #expect(hits.withLockedValue { $0 } == 1)
    }

    /// A gRPC branch that accepts the connection and never answers fails at its deadline.
    @Test func grpcBranchThatNeverAnswersFailsAtItsDeadline() async throws {
        let peer = try await SilentPeer.start(reply: [])
        let client = GRPCClient()
        let caller = GRPCBranchCaller(client: client, logger: .init(label: "test"))
        let call = BranchCall(branchID: "01", op: .action, url: "127.0.0.1:\(peer.port)/busi.Busi/TransOut",
                              payload: [1], requestTimeout: 1)
        let result = await returnsWithin(.seconds(60)) {
            await caller.call(call, of: global("silent-\(UUID().uuidString)", .grpc))
        }
        await client.shutdown()
        await peer.close()
        let answered = try #require(result, "the call must return")
        guard case .error(let message) = answered else {
            Issue.record("expected an error, got \(answered)")
            return
        }
        #expect(message.contains("DeadlineExceeded"))
    }

    /// A connection times its calls with one timer set for the earliest deadline: a call with a
    /// shorter deadline than one already waiting fails at its own, and a later call after the
    /// timer fired still gets one.
    @Test func callsOnOneConnectionEachFailAtTheirOwnDeadline() async throws {
        let peer = try await SilentPeer.start(reply: [])
        let client = GRPCClient()
        let target = "127.0.0.1:\(peer.port)"
        let long = Task { () async throws(RPCError) -> GRPCResponse in
            try await client.unary(target: target, path: "/busi.Busi/Long", message: [1], timeout: .seconds(120))
        }
        // Twice: a short deadline under the long one, then another after the first timer fired.
        for path in ["/busi.Busi/Short", "/busi.Busi/Again"] {
            let began = ContinuousClock.now
            let outcome = await returnsWithin(.seconds(60)) { () async -> RPCError? in
                do throws(RPCError) {
                    _ = try await client.unary(target: target, path: path, message: [2], timeout: .milliseconds(300))
                    return nil
                } catch {
                    return error
                }
            }
            let error = try #require(outcome, "\(path) must end by its deadline, not the long call's")
            #expect(error?.code == .deadlineExceeded, "\(String(describing: error))")
            #expect(error?.message.contains(path) == true, "\(String(describing: error))")
            #expect(ContinuousClock.now - began < .seconds(60))
        }
        long.cancel()
        await client.shutdown()
        await peer.close()
    }
}

/// Limits of the gRPC server and client connections, over real sockets on port 0.
@Suite struct GRPCConnectionLimitTests {
    /// Handlers that wait until the test opens the gate.
    private actor Gate {
        private var open = false
        private var waiters: [CheckedContinuation<Void, Never>] = []
        private(set) var arrived = 0
        func wait() async {
            arrived += 1
            if open { return }
            await withCheckedContinuation { waiters.append($0) }
        }
        func release() {
            open = true
            waiters.forEach { $0.resume() }
            waiters = []
        }
    }

    private static func router(_ gate: Gate) -> GRPCRouter {
        var router = GRPCRouter()
        router.register(service: "t.S", method: "Echo", .sync { GRPCResponse(message: $0.message) })
        router.register(service: "t.S", method: "Wait", .async { request in
            await gate.wait()
            return GRPCResponse(message: request.message)
        })
        return router
    }

    @Test func connectionsPastTheLimitAreRefused() async throws {
        let server = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: Self.router(Gate()),
                                                config: GRPCServerConfig(maxConnections: 1))
        let first = GRPCClient()
        let second = GRPCClient()
        let target = "127.0.0.1:\(server.port)"
        let ok = try await first.unary(target: target, path: "/t.S/Echo", message: [1], timeout: .seconds(30))
        #expect(ok.message == [1])
        await #expect(throws: RPCError.self) {
            _ = try await second.unary(target: target, path: "/t.S/Echo", message: [2], timeout: .seconds(30))
        }
        #expect(try await first.unary(target: target, path: "/t.S/Echo", message: [3], timeout: .seconds(30)).message == [3])
        await first.shutdown()
        await second.shutdown()
        await server.shutdown(gracePeriod: .zero)
    }

    @Test func callsPastTheInFlightLimitAreRefusedWithAPushback() async throws {
        let gate = Gate()
        let server = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: Self.router(gate),
                                                config: GRPCServerConfig(maxConcurrentCalls: 1))
        let client = GRPCClient()
        let target = "127.0.0.1:\(server.port)"
        let held = Task { try await client.unary(target: target, path: "/t.S/Wait", message: [1], timeout: .seconds(60)) }
        #expect(await eventually { await gate.arrived == 1 })
        do throws(RPCError) {
            _ = try await client.unary(target: target, path: "/t.S/Wait", message: [2], timeout: .seconds(30))
            Issue.record("second call admitted past the limit")
        } catch {
            #expect(error.code == .resourceExhausted)
            #expect(error.message.contains("retry later"))
        }
        await gate.release()
        #expect(try await held.value.message == [1])
        #expect(try await client.unary(target: target, path: "/t.S/Wait", message: [3], timeout: .seconds(30)).message == [3])
        await client.shutdown()
        await server.shutdown(gracePeriod: .zero)
    }

    /// An idle server connection is closed with GOAWAY; the client's next call reconnects.
    @Test func idleServerConnectionIsClosedAndClientReconnects() async throws {
        let server = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: Self.router(Gate()),
                                                config: GRPCServerConfig(idleTimeout: .milliseconds(200)))
        let client = GRPCClient()
        let target = "127.0.0.1:\(server.port)"
        #expect(try await client.unary(target: target, path: "/t.S/Echo", message: [1], timeout: .seconds(30)).message == [1])
        #expect(await eventually { server.connectionCount == 0 })
        #expect(try await client.unary(target: target, path: "/t.S/Echo", message: [2], timeout: .seconds(30)).message == [2])
        await client.shutdown()
        await server.shutdown(gracePeriod: .zero)
    }

    /// The client retires a pooled connection it has not used for its idle timeout.
    @Test func idleClientConnectionIsEvicted() async throws {
        let server = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: Self.router(Gate()),
                                                config: GRPCServerConfig(idleTimeout: nil))
        let client = GRPCClient(config: GRPCClientConfig(idleTimeout: .milliseconds(200)))
        let target = "127.0.0.1:\(server.port)"
        #expect(try await client.unary(target: target, path: "/t.S/Echo", message: [1], timeout: .seconds(30)).message == [1])
        #expect(await eventually { server.connectionCount == 0 })
        #expect(try await client.unary(target: target, path: "/t.S/Echo", message: [2], timeout: .seconds(30)).message == [2])
        await client.shutdown()
        await server.shutdown(gracePeriod: .zero)
    }
}

@Suite struct AdmissionTests {
    /// Past the HTTP server's in-flight limit a request is answered 503 with Retry-After at once.
    @Test func httpRequestsPastTheLimitGet503WithRetryAfter() async throws {
        let (entered, enteredSignal) = AsyncStream.makeStream(of: Void.self)
        let (release, releaseSignal) = AsyncStream.makeStream(of: Void.self)
        let router = Router()
        router.get("/slow") { _, _ -> String in
            enteredSignal.yield()
            for await _ in release { break }
            return "done"
        }
        let server = try await HTTPAPIServer.start(host: "127.0.0.1", port: 0, router: router,
                                                   limits: HTTPServerLimits(maxConcurrentRequests: 1),
                                                   logger: .init(label: "t"))
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let url = "http://127.0.0.1:\(server.port)/slow"
        let held = Task { try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(60)) }
        for await _ in entered { break }
        let refused = try await client.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
        #expect(refused.status == .serviceUnavailable)
        #expect(refused.headers["Retry-After"].first == "1")
        releaseSignal.yield()
        #expect(try await held.value.status == .ok)
        try await client.shutdown()
        await server.shutdown(gracePeriod: .seconds(1))
    }

    /// Finding: a gRPC call whose grpc-timeout has expired must not commit its work. The
    /// service answers DEADLINE_EXCEEDED and nothing is stored.
    @Test func expiredSubmitStoresNothing() async throws {
        struct NoCalls: BranchCaller {
            func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult { .success }
        }
        let store = InMemoryStore()
        let driver = TransactionDriver(store: store, caller: NoCalls())
        let engine = Coordinator(driver: driver, schedule: { _ in })
        var router = GRPCRouter()
        DtmGRPCService(engine: engine, topics: TopicRegistry(store: store)).register(on: &router)
        guard case .async(let submit)? = router.handler(for: "/dtmgimp.Dtm/Submit") else {
            Issue.record("Submit is not an async handler")
            return
        }
        let gid = "expired-\(UUID().uuidString)"
        let request = DtmRequest(gid: gid, transType: "saga", binPayloads: [[1]],
                                 steps: #"[{"action":"localhost:1/busi.Busi/TransOut","compensate":"localhost:1/busi.Busi/TransOutRevert"}]"#)
        let call = GRPCRequest(path: "/dtmgimp.Dtm/Submit", message: request.encode(), timeout: .zero)
        do throws(RPCError) {
            _ = try await submit(call)
            Issue.record("an expired Submit was handled")
        } catch {
            #expect(error.code == .deadlineExceeded)
        }
        #expect(await store.findGlobal(gid: gid) == nil)
    }

    @Test func overloadedMapsToResourceExhaustedAnd503() {
        let status = RPCError(DtmError.overloaded("queue full"))
        #expect(status.code == .resourceExhausted)
        #expect(status.metadata["grpc-retry-pushback-ms"] == "1000")
        let answer = HTTPAnswer(DtmError.overloaded("queue full"))
        #expect(answer.status == .serviceUnavailable)
        #expect(answer.headers[.retryAfter] == "1")
    }
}
