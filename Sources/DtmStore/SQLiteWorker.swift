import DtmEngine
import DtmFailpoints
import Foundation

/// One caller's request, run on a worker thread.
struct Job: Sendable {
    /// Executes the request; the returned outcome answers the caller once the work is final.
    let run: @Sendable (SQLiteConnection) -> Outcome
    /// Answers the caller with an error without running the request.
    let reject: @Sendable (StoreError) -> Void
}

/// What a job did, and how to answer its caller.
struct Outcome: Sendable {
    let succeeded: Bool
    /// The request failed because the database did (full, I/O, locked), not on its own terms
    /// (a compare-and-set miss, a duplicate key): the store is unhealthy.
    var databaseFailure: StoreError? = nil
    /// Resumes the caller: with its own result for nil, with the given error otherwise
    /// (a success whose commit failed).
    let reply: @Sendable (StoreError?) -> Void
}

/// Resumes one caller.
typealias Answer = @Sendable () -> Void

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
            let connection = handoff.connection
            var checkpoints: CheckpointPolicy?
            if case .writer(let checkpointer) = role {
                connection.takeOverCheckpoints()
                checkpoints = CheckpointPolicy(checkpointer: checkpointer)
            }
            while let jobs = queue.take(max: maxBatch) {
                switch role {
                case .writer:
                    let start = ContinuousClock.now
                    let changesBefore = connection.totalChanges
                    var batch = GroupCommit(connection: connection)
                    for job in jobs { batch.execute(job) }
                    let answers = batch.finish()
                    checkpoints?.afterCommit(connection)
                    queue.record(commit: batch.committedWrites, busy: .now - start)
                    // Health: a failed batch marks the store unhealthy until a batch that changed
                    // rows commits (an empty probe commit succeeds even on a full disk).
                    if let failure = batch.failure {
                        queue.record(failure: failure)
                    } else if batch.committedWrites != nil && connection.totalChanges != changesBefore {
                        queue.record(failure: nil)
                    }
                    Self.deliver(answers)
                case .reader:
                    Self.deliver(jobs.map { job in
                        let outcome = job.run(connection)
                        return { outcome.reply(nil) }
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
        let result: Result<T, StoreError> = await withCheckedContinuation { continuation in
            let job = Job(
                run: { connection in
                    let result: Result<T, StoreError>
                    do throws(StoreError) {
                        result = .success(try work(connection))
                    } catch {
                        result = .failure(error)
                    }
                    let succeeded = if case .success = result { true } else { false }
                    var databaseFailure: StoreError?
                    if case .failure(let error) = result, case .database = error { databaseFailure = error }
                    return Outcome(succeeded: succeeded, databaseFailure: databaseFailure) { override in
                        continuation.resume(returning: override.map { .failure($0) } ?? result)
                    }
                },
                reject: { continuation.resume(returning: .failure($0)) })
            queue.push(job)
        }
        return try result.get()
    }

    /// Queues `work` without waiting for it.
    func post(_ work: @escaping @Sendable (SQLiteConnection) -> Void) {
        queue.push(Job(run: { connection in
            work(connection)
            return Outcome(succeeded: true) { _ in }
        }, reject: { _ in }))
    }

    var statistics: WriterStatistics { queue.statistics }

    /// See `JobQueue.commitObserver`.
    func observeCommits(_ observer: @escaping @Sendable (Int, Duration) -> Void) { queue.commitObserver = observer }

    /// Requests queued and not yet taken by the worker.
    var queued: Int { queue.depth }

    /// Why the latest write batch failed, unless a later one that changed rows committed.
    var lastFailure: StoreError? { queue.lastFailure }

    /// Resuming a continuation from this thread wakes a pool thread each time (a semaphore
    /// post), which cost the writer about a fifth of its time; so a batch's callers are
    /// resumed by one task on the pool instead, and the worker goes on to the next batch.
    private static func deliver(_ answers: [Answer]) {
        if answers.count == 1 {
            answers[0]()
        } else if !answers.isEmpty {
            Task { for answer in answers { answer() } }
        }
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
    private var jobs: [Job] = []
    private var closed = false
    private var counters = WriterStatistics()
    private var failure: StoreError?
    private var observer: (@Sendable (Int, Duration) -> Void)?

    func push(_ job: Job) {
        condition.lock()
        if closed {
            condition.unlock()
            job.reject(.database("the store is closed"))
            return
        }
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Blocks until jobs are queued and takes up to `max` of them, oldest first.
    /// Returns nil once the queue is closed and drained.
    func take(max: Int) -> [Job]? {
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
    private var requestedAt = 0

    init(checkpointer: SQLiteWorker) {
        self.checkpointer = checkpointer
    }

    mutating func afterCommit(_ connection: SQLiteConnection) {
        let frames = connection.framesInWAL
        if frames < requestedAt { requestedAt = 0 }  // the WAL restarted
        if frames >= Self.limit {
            // A failure here is retried after the next commit; the WAL only grows meanwhile.
            try? connection.checkpoint()
        } else if frames >= requestedAt + Self.step {
            requestedAt = frames
            checkpointer.post { try? $0.checkpoint() }
        }
    }
}

/// One write transaction shared by the requests of a batch, each in its own savepoint so
/// that a failing request (CAS miss, duplicate key) undoes only its own statements.
private struct GroupCommit {
    let connection: SQLiteConnection
    /// Requests whose statements are in the open transaction, answered at commit.
    private var pending: [Outcome] = []
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

    init(connection: SQLiteConnection) {
        self.connection = connection
    }

    mutating func execute(_ job: Job) {
        if let beginFailure {
            answers.append { job.reject(beginFailure) }
            return
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
            try connection.run(.savepoint)
        } catch {
            answers.append { job.reject(error) }
            if open && !connection.inTransaction { abandon(error) }
            return
        }
        let outcome = job.run(connection)
        if let databaseFailure = outcome.databaseFailure { failure = databaseFailure }
        do throws(StoreError) {
            guard connection.inTransaction else {
                throw .database("SQLite rolled back the write transaction after a failed request")
            }
            if !outcome.succeeded { try connection.run(.rollbackToSavepoint) }
            try connection.run(.releaseSavepoint)
            pending.append(outcome)
        } catch {
            // The transaction is gone or unusable: nothing of this batch so far is stored.
            answers.append { outcome.reply(outcome.succeeded ? error : nil) }
            abandon(error)
        }
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
        for outcome in pending {
            answers.append { outcome.reply(outcome.succeeded ? error : nil) }
        }
        pending = []
    }
}
