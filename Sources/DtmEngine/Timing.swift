import Foundation

/// What a branch result does to the retry schedule (spec 5.2).
public enum CronEffect: Sendable, Equatable {
    /// After a success: back to the reset interval, but only when the schedule is stale
    /// (≥ 1.5 s since it was last touched, or the interval grew beyond both bases).
    case resetIfStale
    /// Back to the reset interval unconditionally (msg back-check ONGOING).
    case reset
    /// Same interval, counted from now (ONGOING).
    case keep
    /// Interval doubles (errors), at most once per pass and never beyond the server's
    /// `maxRetryInterval` (DTM doubles once per failed result, without a bound).
    case backoff
}

extension GlobalTransaction {
    /// The interval a transaction starts with and returns to after progress: its own
    /// retry_interval, else a short timeout_to_fail, else the server's RetryInterval.
    public func resetInterval(_ config: EngineConfig) -> Int64 {
        if options.retryInterval > 0 { return options.retryInterval }
        if options.timeoutToFail > 0 && options.timeoutToFail < config.retryInterval {
            return options.timeoutToFail
        }
        return config.retryInterval
    }

    /// timeout_to_fail, or the server default for every mode but saga (whose default is none).
    public func effectiveTimeout(_ config: EngineConfig) -> Int64 {
        if options.timeoutToFail != 0 || transType == .saga { return options.timeoutToFail }
        return config.timeoutToFail
    }

    /// Spec 5.3: timed out once `now - create_time >= timeout` for a positive timeout.
    public func isTimedOut(at now: Date, _ config: EngineConfig) -> Bool {
        let timeout = effectiveTimeout(config)
        return timeout > 0 && now.timeIntervalSince(createTime) >= Double(timeout)
    }

    /// Rollback reason stored when a timeout aborts the transaction.
    ///
    /// DTM prints the per-transaction value (0 when defaulted); this prints the timeout that
    /// actually applied. Both match `^Timeout after \d+ seconds$`.
    public func timeoutReason(_ config: EngineConfig) -> String {
        "Timeout after \(effectiveTimeout(config)) seconds"
    }

    /// Per-call timeout in seconds: request_timeout, else the server's RequestTimeout.
    public func requestTimeout(_ config: EngineConfig) -> Int64 {
        options.requestTimeout > 0 ? options.requestTimeout : config.requestTimeout
    }
}

/// The in-pass view of next_cron_interval / next_cron_time. Effects are applied in the
/// order results arrive, as DTM applies its touches; the driver writes the outcome once.
public struct CronSchedule: Sendable, Equatable {
    public private(set) var interval: Int64
    /// When the schedule was last moved (starts at the pass start).
    public private(set) var lastTouched: Date
    /// Set once any effect moved the schedule: the driver must write it.
    public private(set) var nextTime: Date?
    /// Whether this pass already doubled the interval: a pass whose 70 concurrent branches all
    /// fail backs off once, not 2^70 times.
    public private(set) var backedOff = false

    public init(interval: Int64, passStart: Date) {
        self.interval = interval
        self.lastTouched = passStart
    }

    /// Threshold of `resetIfStale`, from DTM.
    public static let staleAfter: TimeInterval = 1.5

    public mutating func apply(_ effect: CronEffect, for global: GlobalTransaction,
                               config: EngineConfig, now: Date) {
        let reset = global.resetInterval(config)
        switch effect {
        case .resetIfStale:
            let stale = now.timeIntervalSince(lastTouched) >= Self.staleAfter
                || (interval > config.retryInterval && interval > global.options.retryInterval)
            guard stale else { return }
            interval = reset
        case .reset:
            interval = reset
        case .keep:
            break
        case .backoff:
            if !backedOff {
                backedOff = true
                interval = Self.doubled(interval, cap: max(config.maxRetryInterval, reset))
            }
        }
        touch(at: now.addingTimeInterval(Double(interval)), now: now)
    }

    /// msg delay: keep the interval, look again at `time`.
    public mutating func postpone(until time: Date, now: Date) {
        touch(at: time, now: now)
    }

    /// Twice `interval` (at least 1 s), saturating at `cap`.
    static func doubled(_ interval: Int64, cap: Int64) -> Int64 {
        let (twice, overflow) = max(1, interval).multipliedReportingOverflow(by: 2)
        return overflow ? cap : min(twice, cap)
    }

    private mutating func touch(at time: Date, now: Date) {
        nextTime = time
        lastTouched = now
    }
}
