import DtmNet
import DtmServer
import Foundation

/// Something a test starts (a server, a client, a peer process) and must stop before the test
/// ends, so that nothing it owns outlives the test and disturbs the tests that run after it.
public protocol Stoppable: Sendable {
    func stop() async
}

/// Starts a resource, runs `body` with it, and always stops it — after `body` returns or
/// throws — before returning. Replaces `defer { Task { await x.shutdown() } }`, which lets the
/// resource outlive its test.
public func withStarted<Resource: Stoppable, Result>(
    _ start: @autoclosure () async throws -> Resource,
    _ body: (Resource) async throws -> Result
) async throws -> Result {
    let resource = try await start()
    let result: Result
    do {
        result = try await body(resource)
    } catch {
        await resource.stop()
        throw error
    }
    await resource.stop()
    return result
}

extension CoordinatorServer: Stoppable {
    /// A short grace period: a test is over, its requests are answered.
    public func stop() async { await shutdown(gracePeriod: .milliseconds(200)) }
}

extension GRPCServer: Stoppable {
    public func stop() async { await shutdown(gracePeriod: .milliseconds(200)) }
}

extension GRPCClient: Stoppable {
    public func stop() async { await shutdown() }
}

/// Runs blocking work (a pipe read, a SQLite open or close) on a new thread, outside both
/// Swift's cooperative pool and Dispatch's global queues. On Linux those share libdispatch's
/// thread pool, sized to the CPU count (2 here), which only grows when a monitor notices
/// blocked workers, about once a second: blocking work there stalls every async task of the
/// test process (the in-process servers' handlers too).
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await onOwnThread { Result { try work() } }.get()
}
