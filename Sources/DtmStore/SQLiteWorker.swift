import DtmEngine
import DtmFailpoints
import Foundation

/// One caller's request, run on a worker thread: one object per call, which holds the work,
/// its result and the suspended caller.
protocol Job: AnyObject, Sendable {
    /// Executes the request and keeps its result; may run twice when a batch is redone (see
    /// `GroupCommit`), the second result replacing the first.
    func run(_ connection: SQLiteConnection) -> JobStatus
    /// Resumes the caller: with its own result for nil, with the given error otherwise (a
    /// success whose commit failed, or a request rejected without running). Called once.
    func answer(_ override: StoreError?)
}

/// What a job's run did.
enum JobStatus {
    case succeeded
    /// Failed on its own terms (a compare-and-set miss, a duplicate key) or, with
    /// `databaseFailure`, because the database did (full, I/O, locked): the store is unhealthy.
    case failed(databaseFailure: StoreError?)

    var succeeded: Bool { if case .succeeded = self { true } else { false } }
}

/// A caller suspended in `SQLiteWorker.perform`.
private final class Call<T: Sendable>: Job, @unchecked Sendable {
    // `result` is written by the worker thread and read by `answer`, which runs after the
    // run on the same thread.
    private let work: @Sendable (SQLiteConnection) throws(StoreError) -> T
    private let continuation: UnsafeContinuation<Result<T, StoreError>, Never>
    private var result: Result<T, StoreError>?

    init(_ work: @escaping @Sendable (SQLiteConnection) throws(StoreError) -> T,
         _ continuation: UnsafeContinuation<Result<T, StoreError>, Never>) {
        self.work = work
        self.continuation = continuation
    }

    func run(_ connection: SQLiteConnection) -> JobStatus {
        do throws(StoreError) {
            result = .success(try work(connection))
            return .succeeded
        } catch {
            result = .failure(error)
            if case .database = error { return .failed(databaseFailure: error) }
            return .failed(databaseFailure: nil)
        }
    }

    func answer(_ override: StoreError?) {
        if let override {
            continuation.resume(returning: .failure(override))
        } else {
            continuation.resume(returning: result ?? .failure(.database("the request was not run")))
        }
    }
}

/// Work queued without a caller waiting for it.
private final class Posted: Job, @unchecked Sendable {
    private let work: @Sendable (SQLiteConnection) -> Void

    init(_ work: @escaping @Sendable (SQLiteConnection) -> Void) { self.work = work }

    func run(_ connection: SQLiteConnection) -> JobStatus {
        work(connection)
        return .succeeded
    }

    func answer(_ override: StoreError?) {}
}

/// Names the calling thread for `top -H`, perf and /proc (Linux keeps 15 bytes of it).
/// Foundation's `Thread.name` does not reach the kernel there, and Glibc's module does not
/// export pthread_setname_np, so this writes the thread's comm file; a failure only leaves
/// the inherited name.
private func nameCurrentThread(_ name: String) {
    guard let file = FileHandle(forWritingAtPath: "/proc/thread-self/comm") else { return }
    try? file.write(contentsOf: Data(name.utf8.prefix(15)))
    try? file.close()
}

/// A job and how to resume its caller (see `Job.answer`).
typealias Answer = (job: any Job, override: StoreError?)

/// Counters of the write path, for tests and metrics.
public struct WriterStatistics: Sendable, Equatable {
    /// Transactions committed (each one fsync with synchronous=FULL).
    public var commits = 0
    /// Write requests covered by those commits.
    public var writes = 0
    /// The most requests that shared one commit.
    public var largestBatch = 0
    /// Time the writer spent running and committing batches (not waiting for work).
    public var busy = Duration.zero
    /// Checkpoints the checkpointer thread ran beside the writer.
    public var checkpointsBeside = 0
    /// Checkpoints the writer ran itself, between two batches, because the WAL had reached
    /// `CheckpointPolicy.limit` frames (the checkpointer had fallen behind).
    public var checkpointsByWriter = 0
}

/// A dedicated thread that owns one `SQLiteConnection` and runs queued jobs on it, so that
/// blocking SQLite calls (and fsync) never occupy Swift's cooperative thread pool.
///
/// As a writer it does group commit: it takes everything queued (up to `maxBatch`), runs each
/// request in its own SAVEPOINT inside one transaction, commits once, and only then answers
/// the callers. While it commits, new requests queue up and form the next batch, so there is
/// no timer: an idle store answers after one commit, a busy one shares each fsync widely.
final class SQLiteWorker: Sendable {
    enum Role: Sendable {
        /// Group commit; WAL checkpoints are asked of `checkpointer` (see `CheckpointPolicy`).
        case writer(checkpointer: SQLiteWorker)
        /// Runs jobs one after the other, outside any explicit transaction.
        case reader
    }

    private let queue = JobQueue()
    private let exited = DispatchSemaphore(value: 0)

    init(connection: SQLiteConnection, name: String, role: Role, maxBatch: Int) {
        let handoff = Handoff(connection: connection)
        let queue = self.queue
        let exited = self.exited
        let thread = Thread {
            nameCurrentThread(name)
            let connection = handoff.connection
            var checkpoints: CheckpointPolicy?
            if case .writer(let checkpointer) = role {
                connection.takeOverCheckpoints()
                checkpoints = CheckpointPolicy(checkpointer: checkpointer, statistics: queue)
            }
            while let jobs = queue.take(max: maxBatch) {
                switch role {
                case .writer:
                    let start = ContinuousClock.now
                    var changesBefore = connection.totalChanges
                    var batch = GroupCommit(connection: connection, isolated: false)
                    if !batch.execute(jobs) {
                        // A request failed after writing: redo the batch, each in its own savepoint.
                        batch.discard()
                        changesBefore = connection.totalChanges
                        batch = GroupCommit(connection: connection, isolated: true)
                        _ = batch.execute(jobs)
                    }
                    let answers = batch.finish()
                    queue.record(commit: batch.committedWrites, busy: .now - start)
                    // Health: a failed batch marks the store unhealthy until a batch that changed
                    // rows commits (an empty probe commit succeeds even on a full disk).
                    if let failure = batch.failure {
                        queue.record(failure: failure)
                    } else if batch.committedWrites != nil && connection.totalChanges != changesBefore {
                        queue.record(failure: nil)
                    }
                    Self.deliver(answers)
                    // After the answers: a checkpoint the writer runs itself copies thousands of
                    // pages, and the callers of the batch just committed need not wait for it.
                    checkpoints?.afterCommit(connection)
                case .reader:
                    Self.deliver(jobs.map { job -> Answer in
                        _ = job.run(connection)
                        return (job, nil)
                    })
                }
            }
            connection.close()
            exited.signal()
        }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Queues `work` and returns its result once the worker has run it (and, for the writer,
    /// committed it). Fails with `.database` after `shutdown()`.
    func perform<T: Sendable>(
        _ work: @escaping @Sendable (SQLiteConnection) throws(StoreError) -> T
    ) async throws(StoreError) -> T {
        // Unsafe rather than checked: every path of `JobQueue` and `GroupCommit` answers a
        // job exactly once (the checked one costs an allocation per call).
        let result: Result<T, StoreError> = await withUnsafeContinuation { continuation in
            queue.push(Call(work, continuation))
        }
        return try result.get()
    }

    /// Queues `work` without waiting for it.
    func post(_ work: @escaping @Sendable (SQLiteConnection) -> Void) {
        queue.push(Posted(work))
    }

    var statistics: WriterStatistics { queue.statistics }

    /// See `JobQueue.commitObserver`.
    func observeCommits(_ observer: @escaping @Sendable (Int, Duration) -> Void) { queue.commitObserver = observer }

    /// Requests queued and not yet taken by the worker.
    var queued: Int { queue.depth }

    /// Why the latest write batch failed, unless a later one that changed rows committed.
    var lastFailure: StoreError? { queue.lastFailure }

    /// Resumes a batch's callers from this thread. A caller running on an event loop (a gRPC
    /// handler, a pass) is enqueued on its loop; one task on the pool resuming them instead (as
    /// before the handlers and passes moved to the loops) cost a pool thread wake-up per batch:
    /// at 4.8k Submits/s, resuming here raised the Submits answered within 0.5 ms (server side)
    /// from 16–26% to 52–61% and took 3% of the CPU per saga off; the closed loop is unchanged.
    private static func deliver(_ answers: [Answer]) {
        for answer in answers { answer.job.answer(answer.override) }
    }

    /// Lets the queued jobs finish, then closes the connection and ends the thread.
    /// The first call waits for that and returns true; later calls return false at once.
    @discardableResult
    func shutdown() -> Bool {
        guard queue.close() else { return false }
        exited.wait()
        return true
    }
}

/// Moves the connection into the thread's closure; from then on only that thread uses it.
private struct Handoff: @unchecked Sendable {
    let connection: SQLiteConnection
}

/// The hand-off between callers on any thread and one worker thread. Its state is guarded
/// by `condition`, which is also what the idle worker sleeps on.
private final class JobQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [any Job] = []
    private var closed = false
    private var counters = WriterStatistics()
    private var failure: StoreError?
    private var observer: (@Sendable (Int, Duration) -> Void)?

    func push(_ job: any Job) {
        condition.lock()
        if closed {
            condition.unlock()
            job.answer(.database("the store is closed"))
            return
        }
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Blocks until jobs are queued and takes up to `max` of them, oldest first.
    /// Returns nil once the queue is closed and drained.
    func take(max: Int) -> [any Job]? {
        condition.lock()
        defer { condition.unlock() }
        while jobs.isEmpty && !closed { condition.wait() }
        if jobs.isEmpty { return nil }
        if jobs.count <= max {
            defer { jobs = [] }
            return jobs
        }
        defer { jobs.removeFirst(max) }
        return Array(jobs.prefix(max))
    }

    /// Returns true for the call that closed it.
    func close() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if closed { return false }
        closed = true
        condition.signal()
        return true
    }

    /// Counts a checkpoint that ran (see `WriterStatistics`).
    func record(checkpointByWriter byWriter: Bool) {
        condition.lock()
        defer { condition.unlock() }
        if byWriter { counters.checkpointsByWriter += 1 } else { counters.checkpointsBeside += 1 }
    }

    /// Counts a batch: the writes of its commit (nil when it did not commit) and its duration.
    func record(commit writes: Int?, busy: Duration) {
        condition.lock()
        counters.busy += busy
        guard let writes else { return condition.unlock() }
        counters.commits += 1
        counters.writes += writes
        counters.largestBatch = Swift.max(counters.largestBatch, writes)
        let observer = self.observer  // not `commitObserver`: the lock is held and not recursive
        condition.unlock()
        observer?(writes, busy)
    }

    /// Called (outside the lock) after each commit with its writes and duration: metrics.
    var commitObserver: (@Sendable (Int, Duration) -> Void)? {
        get {
            condition.lock()
            defer { condition.unlock() }
            return observer
        }
        set {
            condition.lock()
            defer { condition.unlock() }
            observer = newValue
        }
    }

    /// Jobs waiting for the worker now.
    var depth: Int {
        condition.lock()
        defer { condition.unlock() }
        return jobs.count
    }

    var statistics: WriterStatistics {
        condition.lock()
        defer { condition.unlock() }
        return counters
    }

    func record(failure: StoreError?) {
        condition.lock()
        defer { condition.unlock() }
        self.failure = failure
    }

    var lastFailure: StoreError? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }
}

/// Keeps the WAL short without the writer copying pages: every `step` frames it has the
/// checkpointer thread run a PASSIVE checkpoint beside it. Only at `limit` frames does the
/// writer checkpoint itself: between its transactions that checkpoint can finish (what is left
/// is small), and a finished checkpoint is what lets the next transaction restart the WAL
/// file from its beginning instead of growing it.
private struct CheckpointPolicy {
    static let step = 1000
    static let limit = 10_000
    let checkpointer: SQLiteWorker
    private let statistics: JobQueue
    private var requestedAt = 0

    init(checkpointer: SQLiteWorker, statistics: JobQueue) {
        self.checkpointer = checkpointer
        self.statistics = statistics
    }

    mutating func afterCommit(_ connection: SQLiteConnection) {
        let frames = connection.framesInWAL
        if frames < requestedAt { requestedAt = 0 }  // the WAL restarted
        if frames >= Self.limit {
            // A failure here is retried after the next commit; the WAL only grows meanwhile.
            if (try? connection.checkpoint()) != nil { statistics.record(checkpointByWriter: true) }
        } else if frames >= requestedAt + Self.step {
            requestedAt = frames
            let statistics = self.statistics
            checkpointer.post { connection in
                if (try? connection.checkpoint()) != nil { statistics.record(checkpointByWriter: false) }
            }
        }
    }
}

/// One write transaction shared by the requests of a batch, answered after its commit.
///
/// A request must be all or nothing. Shared (`isolated` false), requests run one after the
/// other in the transaction: a request that succeeds, or fails without having changed a row
/// (the common compare-and-set miss fails on its first statement; a statement that fails is
/// undone by SQLite itself), needs nothing more. Only a request that fails after writing
/// would leave half its work behind: `execute` then returns false, and the batch is rolled
/// back and run again isolated, each request in its own SAVEPOINT so that the failing one
/// undoes only its own statements. Savepoints are not the default because every page a
/// request changes inside one is first copied to the statement journal (a temp file once
/// it passes 64 KiB), and SAVEPOINT and RELEASE are two more statements per request.
private struct GroupCommit {
    let connection: SQLiteConnection
    let isolated: Bool
    /// Requests whose statements are in the open transaction, answered at commit.
    private var pending: [(job: any Job, succeeded: Bool)] = []
    /// Callers whose answer is final, to be resumed after the batch.
    private var answers: [Answer] = []
    private var open = false
    /// Why BEGIN failed (e.g. another process held the write lock past the busy timeout):
    /// the rest of the batch fails with it rather than waiting again, request by request.
    private var beginFailure: StoreError?
    /// Requests covered by the commit; nil when nothing was committed.
    private(set) var committedWrites: Int?
    /// Why the transaction (or its BEGIN) failed, if it did.
    private(set) var failure: StoreError?

    init(connection: SQLiteConnection, isolated: Bool) {
        self.connection = connection
        self.isolated = isolated
    }

    /// Runs the jobs in the transaction. False when, shared, a request failed after writing:
    /// the transaction is still open and the batch must be `discard`ed and run isolated.
    mutating func execute(_ jobs: [any Job]) -> Bool {
        for job in jobs {
            guard execute(job) else { return false }
        }
        return true
    }

    private mutating func execute(_ job: any Job) -> Bool {
        if let beginFailure {
            answers.append((job, beginFailure))
            return true
        }
        do throws(StoreError) {
            if !open {
                do throws(StoreError) {
                    try connection.run(.begin)
                } catch {
                    beginFailure = error
                    failure = error
                    throw error
                }
                open = true
            }
            if isolated { try connection.run(.savepoint) }
        } catch {
            answers.append((job, error))
            if open && !connection.inTransaction { abandon(error) }
            return true
        }
        let changesBefore = connection.totalChanges
        let status = job.run(connection)
        if case .failed(let databaseFailure?) = status { failure = databaseFailure }
        do throws(StoreError) {
            guard connection.inTransaction else {
                throw .database("SQLite rolled back the write transaction after a failed request")
            }
            if isolated {
                if !status.succeeded { try connection.run(.rollbackToSavepoint) }
                try connection.run(.releaseSavepoint)
            } else if !status.succeeded && connection.totalChanges != changesBefore {
                return false
            }
            pending.append((job, status.succeeded))
        } catch {
            // The transaction is gone or unusable: nothing of this batch so far is stored.
            answers.append((job, status.succeeded ? error : nil))
            abandon(error)
        }
        return true
    }

    /// Rolls back what a shared run wrote, to redo the batch isolated; no caller is answered.
    mutating func discard() {
        if connection.inTransaction { _ = try? connection.run(.rollback) }
        open = false
        pending = []
        answers = []
        failure = nil
    }

    /// Commits the open transaction; returns the answers of every caller of the batch.
    mutating func finish() -> [Answer] {
        if open {
            do throws(StoreError) {
                Failpoint.hit("store.commit.before")
                try connection.run(.commit)
                Failpoint.hit("store.commit.after")
                open = false
                committedWrites = pending.count
                settle(failing: nil)
            } catch {
                abandon(error)
            }
        }
        return answers
    }

    /// Rolls back whatever is left of the transaction and fails the requests it held.
    private mutating func abandon(_ error: StoreError) {
        failure = error
        if connection.inTransaction {
            _ = try? connection.run(.rollback)
        }
        open = false
        settle(failing: error)
    }

    /// Answers the pending requests: failures with their own error, successes with their
    /// result, or with `error` when their writes were lost.
    private mutating func settle(failing error: StoreError?) {
        for (job, succeeded) in pending {
            answers.append((job, succeeded ? error : nil))
        }
        pending = []
    }
}
