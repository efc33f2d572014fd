import Synchronization

/// Bounds the transactions a coordinator holds in memory: requests being served plus passes
/// handed to the retry loop and not yet run. When it is full new work is refused at once
/// (gRPC RESOURCE_EXHAUSTED, HTTP 503) before anything is stored, so nothing acknowledged
/// is ever dropped and memory stays bounded under a flood.
public final class AdmissionGate: Sendable {
    /// The most permits out at once.
    public let limit: Int
    private let used = Atomic<Int>(0)

    public init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Permits currently out.
    public var inUse: Int { used.load(ordering: .relaxed) }

    /// A permit, or nil when `limit` are out. The permit is given back when its last
    /// reference goes (the request ends, or the pass it was handed to has run).
    public func enter() -> AdmissionPermit? {
        var current = used.load(ordering: .relaxed)
        while current < limit {
            let (done, found) = used.weakCompareExchange(expected: current, desired: current + 1,
                                                         ordering: .acquiringAndReleasing)
            if done { return AdmissionPermit(gate: self) }
            current = found
        }
        return nil
    }

    fileprivate func leave() {
        used.subtract(1, ordering: .acquiringAndReleasing)
    }
}

/// One unit of admitted work; returned to its gate when released.
public final class AdmissionPermit: Sendable {
    private let gate: AdmissionGate

    fileprivate init(gate: AdmissionGate) {
        self.gate = gate
    }

    deinit { gate.leave() }
}
