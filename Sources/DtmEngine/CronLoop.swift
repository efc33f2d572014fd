import DtmSync
import Foundation

/// What the cron reports to whoever runs it (logs, metrics, tests).
public enum CronEvent: Sendable {
    case passFinished(PassReport)
    case claimFailed(StoreError)
}

/// The queues of a `CronLoop` at one moment.
public struct CronDepths: Sendable, Equatable {
    /// Handed-over passes waiting for a free slot.
    public var ready: Int
    /// Handed-over passes waiting for a running pass of the same gid to end.
    public var blocked: Int
    /// Passes running now.
    public var running: Int
}

/// Drives transactions in the background: the ones requests hand over (`enqueue`) right
/// away, and every due one (unfinished, next_cron_time reached) under a lease, so that
/// several coordinators sharing a store never drive one transaction at the same time.
/// Recovery after a crash is just the first pass: the leases of the dead process expire.
public actor CronLoop {
    public nonisolated let driver: TransactionDriver
    /// Written to the `owner` column of claimed rows: the driver's owner.
    public nonisolated let owner: String
    /// Passes running at once (and the size of one claim).
    public nonisolated let maxConcurrent: Int
    private let sleep: @Sendable (Double) async -> Void
    private let jitter: @Sendable () -> Double
    private let onEvent: (@Sendable (CronEvent) async -> Void)?
    /// Where passes run (nil: the global concurrent executor).
    private let passExecutor: (@Sendable () -> (any TaskExecutor)?)?

    /// What other tasks hand to the loop without waiting for the actor: requests' passes and
    /// ends of passes `run()` started. `run()` takes them in batches, woken once per batch.
    private nonisolated let inbox = CronInbox()
    private var ready: [ScheduledPass] = []
    /// Index of the next pass to take from `ready`.
    private var readyHead = 0
    private var blocked: [String: [ScheduledPass]] = [:]
    /// runNow callers waiting for a gid's running pass to end.
    private var gidWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]
    /// The gids being driven and when their lease ends (renewed ahead of time while they run).
    private var running: [String: Date] = [:]
    private var sleeperArmed = false
    private var pollRequested = false
    /// Set by `drain()`: `run()` starts and claims nothing more and returns once no pass runs.
    private var draining = false

    /// - Parameters:
    ///   - sleep: waits the given seconds; must return early when the task is cancelled.
    ///   - jitter: a number in [0, 1) subtracted from TransCronInterval, spreading the polls
    ///     of several coordinators.
    public init(driver: TransactionDriver, maxConcurrent: Int = 16,
                sleep: @escaping @Sendable (Double) async -> Void = CronLoop.taskSleep,
                jitter: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
                onEvent: (@Sendable (CronEvent) async -> Void)? = nil,
                passExecutor: (@Sendable () -> (any TaskExecutor)?)? = nil) {
        self.passExecutor = passExecutor
        self.driver = driver
        self.owner = driver.owner
        self.maxConcurrent = max(1, maxConcurrent)
        self.sleep = sleep
        self.jitter = jitter
        self.onEvent = onEvent
    }

    public static let taskSleep: @Sendable (Double) async -> Void = { seconds in
        try? await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1_000_000_000))
    }

    private var config: EngineConfig { driver.config }

    /// Hands over a transaction a request just stored or moved; `run()` starts it at once.
    /// Returns at once: the request does not wait for the loop.
    public nonisolated func enqueue(_ pass: ScheduledPass) {
        inbox.add(pass: pass)
    }

    /// Moves what the inbox holds into the loop's state.
    private func takeInbox() {
        let (passes, ended) = inbox.take()
        ready += passes
        for gid in ended { finished(gid) }
    }

    /// Takes only the ends of passes (the handed-over passes stay for `run()`, which is woken by them).
    private func takeEnded() {
        for gid in inbox.takeEnded() { finished(gid) }
    }

    /// Wakes `run()` (it takes the inbox when it looks next).
    private nonisolated func signal() {
        inbox.signal()
    }

    /// Graceful stop: `run()` starts no more passes and claims nothing, and returns once the
    /// passes already running have ended (their leases are renewed meanwhile). Handed-over
    /// passes not yet started stay in the store for the cron of the next coordinator. Cancel
    /// `run()` to stop at once.
    public func drain() {
        draining = true
        inbox.setLazyEnds(false)
        signal()
    }

    /// Makes `run()` poll the store now instead of finishing its sleep.
    public func wake() {
        pollRequested = true
        signal()
    }

    /// How much work this loop holds now (for metrics).
    public func depths() -> CronDepths {
        let (handed, ended) = inbox.counts
        return CronDepths(ready: ready.count - readyHead + handed, blocked: blocked.values.reduce(0) { $0 + $1.count },
                          running: running.count - ended)
    }

    /// Seconds `run()` sleeps when nothing was due: TransCronInterval minus jitter.
    public func idleInterval() -> Double {
        Double(config.transCronInterval) - jitter()
    }

    /// One round, awaited: everything enqueued plus the due transactions (one claim of at most
    /// `maxConcurrent`), each gid once, processed concurrently. Returns the reports in
    /// completion order. For tests and simple embeddings; a server calls `run()` instead.
    public func runOnce() async -> [PassReport] {
        takeInbox()
        let handedOver = Array(ready[readyHead...]) + blocked.values.joined()
        ready = []
        readyHead = 0
        blocked = [:]
        let claimed = await claim(limit: maxConcurrent).map { ScheduledPass(global: $0) }
        var seen = Set<String>()
        let passes = (handedOver + claimed).filter { seen.insert($0.global.gid).inserted }
        for pass in passes { running[pass.global.gid] = pass.global.nextCronTime }
        defer { for pass in passes { running[pass.global.gid] = nil } }
        let driver = self.driver
        let limit = maxConcurrent
        return await withTaskGroup(of: PassReport.self) { group in
            var reports = [PassReport]()
            for (index, pass) in passes.enumerated() {
                if index >= limit, let report = await group.next() { reports.append(report) }
                group.addTask(executorPreference: passExecutor?()) {
                    await driver.process(pass.global, branches: pass.branches, created: pass.created)
                }
            }
            for await report in group { reports.append(report) }
            for report in reports { await onEvent?(.passFinished(report)) }
            return reports
        }
    }

    /// Runs until cancelled (call it once per loop): starts enqueued work at once, claims due work whenever there is
    /// capacity, and after an empty claim sleeps a jittered TransCronInterval (or until woken).
    public func run() async {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        inbox.open(continuation)
        pollRequested = true
        var wakeups = stream.makeAsyncIterator()
        await withDiscardingTaskGroup { group in
            // Lease keeper: a pass may outlive the lease its claim took (slow branches, a long
            // request_timeout); another coordinator must not take the transaction meanwhile.
            // Real time, not the injected sleep: leases are wall-clock deadlines in the store.
            let period = Self.renewalPeriod(lease: config.leaseSeconds)
            group.addTask {
                while !Task.isCancelled {
                    await CronLoop.taskSleep(period)
                    guard !Task.isCancelled else { return }
                    await self.renewLeases()
                }
            }
            while !Task.isCancelled {
                takeInbox()
                if draining {
                    if running.isEmpty { break }
                    guard await wakeups.next(isolation: self) != nil else { break }
                    continue
                }
                while running.count < maxConcurrent, let pass = takeReady() {
                    start(pass, in: &group)
                }
                if pollRequested && running.count < maxConcurrent {
                    pollRequested = false
                    let claimed = await claim(limit: maxConcurrent - running.count)
                    for global in claimed where running[global.gid] == nil {
                        start(ScheduledPass(global: global), in: &group)
                    }
                    // As DTM: after finding work look again at once, after none sleep.
                    if !claimed.isEmpty {
                        pollRequested = true
                        continue
                    }
                    if !sleeperArmed {
                        sleeperArmed = true
                        let seconds = idleInterval()
                        let sleep = self.sleep
                        group.addTask {
                            await sleep(seconds)
                            await self.sleeperFired()
                        }
                    }
                }
                // An ended pass need not wake the loop unless something waits for a slot or a gid:
                // its end is taken with the next wake-up (a Submit, the poll, the sleeper).
                inbox.setLazyEnds(gidWaiters.isEmpty && blocked.isEmpty && readyHead >= ready.count
                                  && running.count < maxConcurrent)
                guard await wakeups.next(isolation: self) != nil else { break }
            }
            group.cancelAll()
        }
        inbox.open(nil)
        // Ends of the passes that ran until the group ended.
        takeInbox()
        continuation.finish()
        sleeperArmed = false
        draining = false
    }

    /// How often `run()` renews leases: a quarter lease, at most a second, at least 0.2 s.
    static func renewalPeriod(lease: Double) -> Double {
        max(0.2, min(lease / 4, 1))
    }

    /// Renew a lease once less than this is left: half a lease, and at least three renewal
    /// periods, so a renewal is always written well before the lease could lapse.
    static func renewalMargin(lease: Double) -> Double {
        max(lease / 2, 3 * renewalPeriod(lease: lease))
    }

    /// Extends the lease (next_cron_time = now + RetryInterval, only while this coordinator still
    /// owns the row) of every running pass whose lease ends within the renewal margin. `run()`
    /// calls it every renewal period; tests may call it directly.
    public func renewLeases() async {
        let now = driver.clock.now()
        let lease = config.leaseSeconds
        let margin = Self.renewalMargin(lease: lease)
        let ended = inbox.pendingEnds()
        let ending = running.filter { $0.value.timeIntervalSince(now) < margin && !ended.contains($0.key) }.keys.sorted()
        guard !ending.isEmpty else { return }
        let until = now.addingTimeInterval(lease)
        do {
            try await driver.store.extendLeases(gids: ending, owner: owner, until: until, now: now)
            for gid in ending where running[gid] != nil { running[gid] = until }
        } catch {
            await onEvent?(.claimFailed(error))
        }
    }

    /// The oldest handed-over pass whose gid is not running. Passes for a running gid wait in
    /// `blocked` until that pass ends. O(1) amortised: under load `ready` holds many thousands.
    private func takeReady() -> ScheduledPass? {
        while readyHead < ready.count {
            let pass = ready[readyHead]
            // The slot stays in `ready` until compaction: it must not keep the admission permit.
            ready[readyHead].permit = nil
            readyHead += 1
            if readyHead >= 1024 && readyHead * 2 >= ready.count {
                ready.removeFirst(readyHead)
                readyHead = 0
            }
            if running[pass.global.gid] != nil {
                blocked[pass.global.gid, default: []].append(pass)
                continue
            }
            return pass
        }
        return nil
    }

    private func start(_ pass: ScheduledPass, in group: inout DiscardingTaskGroup) {
        running[pass.global.gid] = pass.global.nextCronTime
        group.addTask(executorPreference: passExecutor?(),
                      operation: Self.passTask(pass, driver: driver, inbox: inbox, onEvent: onEvent))
    }

    /// The body of a pass `run()` starts. Not isolated to the loop: the pass ends by telling
    /// the inbox, without waiting for the actor.
    private nonisolated static func passTask(_ pass: ScheduledPass, driver: TransactionDriver, inbox: CronInbox,
                                             onEvent: (@Sendable (CronEvent) async -> Void)?)
        -> @Sendable () async -> Void {
        {
            let report = await driver.process(pass.global, branches: pass.branches, created: pass.created)
            await onEvent?(.passFinished(report))
            inbox.add(ended: pass.global.gid)
        }
    }

    /// Runs a pass in the caller's task (a wait_result request) as one of this loop's passes:
    /// the loop starts nothing for the gid meanwhile, and if a pass of the gid is running, this
    /// one waits for it first. One process thus never drives a transaction twice at a time.
    public func runNow(_ pass: ScheduledPass) async -> PassReport {
        let gid = pass.global.gid
        takeEnded()
        while running[gid] != nil {
            await withCheckedContinuation {
                gidWaiters[gid, default: []].append($0)
                // Its end must wake `run()` now (an end already handed over wakes it at once).
                inbox.setLazyEnds(false)
            }
        }
        running[gid] = pass.global.nextCronTime
        let report = await driver.process(pass.global, branches: pass.branches, created: pass.created)
        finished(gid)
        signal()
        await onEvent?(.passFinished(report))
        return report
    }

    private func finished(_ gid: String) {
        running[gid] = nil
        for waiter in gidWaiters.removeValue(forKey: gid) ?? [] { waiter.resume() }
        if let waiting = blocked.removeValue(forKey: gid) { ready += waiting }
    }

    private func sleeperFired() {
        sleeperArmed = false
        wake()
    }

    /// Leases due transactions for one RetryInterval: no other coordinator picks them until then.
    private func claim(limit: Int) async -> [GlobalTransaction] {
        guard limit > 0 else { return [] }
        let now = driver.clock.now()
        do {
            return try await driver.store.claimDue(now: now, leaseUntil: now.addingTimeInterval(config.leaseSeconds),
                                                   owner: owner, limit: limit)
        } catch {
            await onEvent?(.claimFailed(error))
            return []
        }
    }
}

/// What tasks hand to a `CronLoop` without waiting for the actor: passes requests hand over and
/// ends of passes `run()` started. `run()` takes them in batches and is woken once per batch.
final class CronInbox: Sendable {
    private struct State {
        var passes: [ScheduledPass] = []
        /// Gids whose pass (started by `run()`) ended.
        var ended: [String] = []
        /// Wakes `run()`; nil while it does not run.
        var signal: AsyncStream<Void>.Continuation?
        /// Whether the next item must wake `run()`: once woken, further items ride along until
        /// it takes the inbox.
        var armed = true
        /// Whether an ended pass may wait for the next wake-up instead of causing one (set by
        /// `run()` when nothing waits for a slot or a gid).
        var lazyEnds = false

        mutating func wakeOnce() -> AsyncStream<Void>.Continuation? {
            guard armed, let signal else { return nil }
            armed = false
            return signal
        }
    }

    private let state = Locked(State())

    func add(pass: ScheduledPass) {
        state.withLock { state in
            state.passes.append(pass)
            return state.wakeOnce()
        }?.yield()
    }

    func add(ended gid: String) {
        state.withLock { state in
            state.ended.append(gid)
            return state.lazyEnds ? nil : state.wakeOnce()
        }?.yield()
    }

    /// Sets whether ends may wait for the next wake-up; turning that off wakes `run()` for the
    /// ends already handed over.
    func setLazyEnds(_ lazy: Bool) {
        state.withLock { state in
            state.lazyEnds = lazy
            return lazy || state.ended.isEmpty ? nil : state.wakeOnce()
        }?.yield()
    }

    /// The ends handed over since the last take; the handed-over passes stay.
    func takeEnded() -> [String] {
        state.withLock { state in
            defer { state.ended = [] }
            return state.ended
        }
    }

    /// The gids whose pass ended but that were not taken yet.
    func pendingEnds() -> Set<String> {
        state.withLock { Set($0.ended) }
    }

    /// Everything handed over since the last call; the next item wakes `run()` again.
    func take() -> (passes: [ScheduledPass], ended: [String]) {
        state.withLock { state in
            state.armed = true
            defer { (state.passes, state.ended) = ([], []) }
            return (state.passes, state.ended)
        }
    }

    /// Handed-over passes and ends not taken yet.
    var counts: (passes: Int, ended: Int) { state.withLock { ($0.passes.count, $0.ended.count) } }

    /// Sets (or with nil, clears) how `run()` is woken.
    func open(_ signal: AsyncStream<Void>.Continuation?) {
        state.withLock {
            $0.signal = signal
            $0.armed = true
            $0.lazyEnds = false
        }
    }

    /// Wakes `run()` now.
    func signal() {
        state.withLock { $0.signal }?.yield()
    }
}
