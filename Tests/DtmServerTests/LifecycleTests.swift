import DtmEngine
import DtmServer
import Foundation
import Testing

@Suite struct LifecycleTests {
    /// A branch call that ends only when cancelled; reports each call it receives.
    struct EndlessCaller: BranchCaller {
        let entered: AsyncStream<String>.Continuation

        func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
            entered.yield(global.gid)
            try? await Task.sleep(for: .seconds(3600))
            return .success
        }
    }

    /// The graceful stop lets passes under way finish, but no longer than its bound: a pass
    /// whose branch call never ends is cancelled once `gracePeriod` is over, and its
    /// transaction stays unfinished in the store for the next start.
    @Test(.timeLimit(.minutes(1)))
    func shutdownIsBoundedWhenAPassNeverEnds() async throws {
        let store = InMemoryStore()
        let (entered, sink) = AsyncStream.makeStream(of: String.self)
        let server = try await CoordinatorServer.start(
            CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0), store: store,
            branchCaller: EndlessCaller(entered: sink))
        let gid = "endless-\(UUID().uuidString)"
        try await server.engine.submit(TransRequest(
            gid: gid, transType: "saga", steps: [["action": "http://busi/a", "compensate": "http://busi/c"]],
            payloads: [[1]]))
        var calls = entered.makeAsyncIterator()
        #expect(await calls.next() == gid)  // the pass is under way

        await server.shutdown(gracePeriod: .milliseconds(300))
        try await server.waitUntilStopped()
        #expect(await store.findGlobal(gid: gid)?.status == .submitted)
    }
}
