import DtmEngine
import DtmGRPC
import DtmNet
import DtmSync
import NIOCore
import NIOPosix
import Testing

/// Where coordinator work runs: on the event loops when asked (the coordinator's own handlers
/// and passes, which never block), on Swift's global executor otherwise (a branch service's
/// business code may block and must never hold an event loop).
@Suite struct LoopExecutorTests {
    /// Answers "loop" when the handler ran on an event loop thread, "pool" otherwise.
    private static func whereHandlersRun(onEventLoop: Bool) async throws -> String {
        var router = GRPCRouter()
        router.register(service: "probe.Probe", method: "Where", .async { _ throws(RPCError) in
            await Task.yield()  // still there after a suspension
            let onLoop = MultiThreadedEventLoopGroup.currentEventLoop != nil
            return GRPCResponse(message: Array((onLoop ? "loop" : "pool").utf8))
        })
        var config = GRPCServerConfig()
        config.handlersOnEventLoop = onEventLoop
        let server = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: router, config: config)
        let client = GRPCClient()
        defer { Task { await client.shutdown(); await server.shutdown(gracePeriod: .zero) } }
        let answer = try await client.unary(target: "127.0.0.1:\(server.port)", path: "/probe.Probe/Where",
                                            message: [], timeout: .seconds(30))
        return String(decoding: answer.message, as: UTF8.self)
    }

    @Test func handlersRunOnTheirConnectionsLoopWhenAsked() async throws {
        #expect(try await Self.whereHandlersRun(onEventLoop: true) == "loop")
    }

    @Test func handlersStayOffTheLoopsByDefault() async throws {
        #expect(try await Self.whereHandlersRun(onEventLoop: false) == "pool")
    }

    @Test func aTaskAndItsChildrenRunOnTheExecutorsLoop() async {
        let executor = EventLoopTaskExecutor.next()
        let loop = executor.loop
        let (parent, children) = await Task(executorPreference: executor) { () -> (Bool, [Bool]) in
            let parent = loop.inEventLoop
            let children = await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        try? await Task.sleep(for: .milliseconds(1))
                        return loop.inEventLoop
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            return (parent, children)
        }.value
        #expect(parent)
        #expect(children == [true, true, true, true])
        #expect(EventLoopTaskExecutor.of(loop) === executor)
    }

    /// Jobs enqueued on the loop run in batches: every task, started on the loop or from
    /// another thread, runs there, each exactly once, and tasks started on the loop one after
    /// another begin in that order; tasks they start in turn (a later batch) run too.
    @Test(.timeLimit(.minutes(1))) func batchedJobsAllRunOnTheLoopInOrder() async {
        let executor = EventLoopTaskExecutor.next()
        let loop = executor.loop
        let log = Locked<[Int]>([])
        let offLoop = Locked(0)
        let count = 500
        // Started from the loop's own thread: these go through the batch queue.
        let started = loop.submit {
            (0..<count).map { index in
                Task(executorPreference: executor) {
                    if !loop.inEventLoop { offLoop.withLock { $0 += 1 } }
                    log.withLock { $0.append(index) }
                    await Task.yield()  // a job enqueued by a job: the next batch
                    if !loop.inEventLoop { offLoop.withLock { $0 += 1 } }
                    return index
                }
            }
        }
        let tasks = try? await started.get()
        var results = [Int]()
        for task in tasks ?? [] { results.append(await task.value) }
        // Started here, off the loop: one loop task each.
        let outside = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<100 { group.addTask(executorPreference: executor) { loop.inEventLoop } }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results == Array(0..<count))
        #expect(log.withLock { $0 } == Array(0..<count))
        #expect(offLoop.withLock { $0 } == 0)
        #expect(outside.count == 100 && outside.allSatisfy { $0 })
    }
}
