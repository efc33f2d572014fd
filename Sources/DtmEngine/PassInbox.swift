import DtmSync
import Foundation

/// What a pass waits for: a call's answer or its deadline.
enum PassEvent: Sendable {
    case answer(BranchCall, BranchResult, CallTiming)
    case deadline
}

/// When a call started (wall clock) and how long it took (monotonic clock).
struct CallTiming: Sendable {
    var start: Date
    var duration: Duration
}

/// Where one pass receives its events: each call task posts its answer, the deadline sweeper
/// posts `.deadline`. The pass awaits them one at a time, in arrival order. A pass thus needs
/// no timer task of its own, and its calls end without a result being kept for them.
final class PassInbox: Sendable {
    private struct State {
        var events: [PassEvent] = []
        var head = 0
        var waiter: UnsafeContinuation<PassEvent, Never>?
    }

    private let state = Locked(State())

    func post(_ event: PassEvent) {
        let waiter = state.withLock { state -> UnsafeContinuation<PassEvent, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.events.append(event)
            return nil
        }
        waiter?.resume(returning: event)
    }

    /// The oldest event not taken yet, waiting for one if there is none. One waiter at a time
    /// (the pass); it returns once a call ends or the deadline passes. A cancelled pass gets its
    /// answers too: its calls are cancelled with it and end.
    func next() async -> PassEvent {
        await withUnsafeContinuation { continuation in
            let ready = state.withLock { state -> PassEvent? in
                guard state.head < state.events.count else {
                    state.waiter = continuation
                    return nil
                }
                let event = state.events[state.head]
                state.head += 1
                if state.head == state.events.count {
                    state.events.removeAll(keepingCapacity: true)
                    state.head = 0
                }
                return event
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// Tells passes that ran past their deadline: one sweeper for the process instead of a timer
/// task per pass. A pass registers when it first waits for a call and deregisters when it
/// ends; while any is registered the sweeper looks once per `tick`, and it stops when none
/// is left. A deadline is thus met within a tick (passes last at least `maxPassDuration`
/// seconds before theirs, so a second is fine-grained enough).
final class PassDeadlines: Sendable {
    static let shared = PassDeadlines()
    static let tick = Duration.seconds(1)

    private struct Entry {
        var deadline: ContinuousClock.Instant
        var inbox: PassInbox
    }

    private struct State {
        var entries: [Int: Entry] = [:]
        var nextID = 0
        var sweeping = false
    }

    private let state = Locked(State())

    /// Posts `.deadline` to `inbox` at `deadline` unless `remove` is called first.
    func add(_ inbox: PassInbox, deadline: ContinuousClock.Instant) -> Int {
        let (id, start) = state.withLock { state -> (Int, Bool) in
            let id = state.nextID
            state.nextID &+= 1
            state.entries[id] = Entry(deadline: deadline, inbox: inbox)
            defer { state.sweeping = true }
            return (id, !state.sweeping)
        }
        if start { Task.detached { await self.sweep() } }
        return id
    }

    func remove(_ id: Int) {
        _ = state.withLock { $0.entries.removeValue(forKey: id) }
    }

    private func sweep() async {
        while true {
            let now = ContinuousClock.now
            let (due, more) = state.withLock { state -> ([PassInbox], Bool) in
                let due = state.entries.filter { $0.value.deadline <= now }
                for id in due.keys { state.entries[id] = nil }
                if state.entries.isEmpty { state.sweeping = false }
                return (due.values.map(\.inbox), state.sweeping)
            }
            for inbox in due { inbox.post(.deadline) }
            guard more else { return }
            try? await Task.sleep(for: Self.tick)
        }
    }
}
