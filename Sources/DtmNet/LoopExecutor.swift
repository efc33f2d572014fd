import DtmSync
import NIOCore
import NIOPosix

/// Runs Swift tasks on a NIO event loop's thread (a task executor preference, SE-0417). Work
/// that continues on the thread where its I/O arrives needs no thread wake-up: a gRPC handler on
/// its connection's loop, a pass on the loop of its branch connections.
///
/// Jobs enqueued on the loop's own thread (a task resumed by I/O or by another task there: most
/// of them) wait in `local` and run together in one loop task, in order: one scheduled closure
/// per batch instead of an allocated closure and a loop task per job (about ten per saga).
/// Jobs from other threads (the SQLite writer resuming its callers) are scheduled one by one.
public final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    public let loop: any EventLoop
    // Both touched only on `loop`'s thread (`enqueue` checks it), hence the unchecked Sendable.
    private var local: [UnownedJob] = []
    private var spare: [UnownedJob] = []
    private var drainScheduled = false

    private init(loop: any EventLoop) {
        self.loop = loop
        local.reserveCapacity(64)
        spare.reserveCapacity(64)
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        guard loop.inEventLoop else {
            loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
            return
        }
        local.append(job)
        if !drainScheduled {
            drainScheduled = true
            loop.execute { self.drain() }
        }
    }

    /// Runs the jobs queued on the loop so far; jobs they enqueue go to the next batch (a loop
    /// task of their own, after the I/O and tasks already waiting).
    private func drain() {
        drainScheduled = false
        // The two buffers change places, each uniquely held, so appending never copies.
        var batch: [UnownedJob] = []
        swap(&batch, &local)
        swap(&local, &spare)
        for job in batch { job.runSynchronously(on: asUnownedTaskExecutor()) }
        batch.removeAll(keepingCapacity: true)
        spare = batch
    }

    private static let executors = Locked<[ObjectIdentifier: EventLoopTaskExecutor]>([:])

    /// The executor of `loop` (one per loop, kept for the process's life: loops are few).
    public static func of(_ loop: any EventLoop) -> EventLoopTaskExecutor {
        executors.withLock { all in
            if let known = all[ObjectIdentifier(loop)] { return known }
            let made = EventLoopTaskExecutor(loop: loop)
            all[ObjectIdentifier(loop)] = made
            return made
        }
    }

    /// The executor of the next loop of the shared group, in turn.
    public static func next() -> EventLoopTaskExecutor {
        of(MultiThreadedEventLoopGroup.singleton.next())
    }
}

/// The size of the process's shared event loop group (`MultiThreadedEventLoopGroup.singleton`),
/// which serves every socket (gRPC, HTTP, branch calls) and runs the transaction passes.
public enum EventLoopThreads {
    /// Half the cores, at least one. The coordinator's other busy threads (the SQLite writer,
    /// Swift's task pool) take the rest: on 2 cores one loop thread used 5–17% less CPU per
    /// saga than two at 2000–4800 Submits/s, with the same peak rate (README, "CPU per saga").
    public static var automatic: Int { max(1, System.coreCount / 2) }

    /// Sets the group's thread count; `count` 0 means `automatic`. Call it once, before
    /// anything uses the shared group: NIO stops the process otherwise.
    public static func configure(_ count: Int) -> Int {
        let threads = count > 0 ? count : automatic
        NIOSingletons.groupLoopCountSuggestion = threads
        return threads
    }
}
