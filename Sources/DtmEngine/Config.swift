import Foundation

/// Server-wide settings the engine needs, with DTM's defaults (all in seconds).
public struct EngineConfig: Sendable, Equatable {
    /// Base retry interval; also the cron lease length (`RetryInterval`).
    public var retryInterval: Int64
    /// Default timeout of tcc, xa, msg and workflow transactions; saga has none (`TimeoutToFail`).
    public var timeoutToFail: Int64
    /// Default timeout of one branch call (`RequestTimeout`).
    public var requestTimeout: Int64
    /// Cron poll sleep when nothing was due (`TransCronInterval`).
    public var transCronInterval: Int64
    /// The longest retry interval back-off may reach (DTM has no bound). A transaction's own
    /// larger retry_interval is kept; only doubling stops here.
    public var maxRetryInterval: Int64
    /// Limits on what one request may ask for.
    public var limits: RequestLimits
    /// Branch calls one pass runs at once (a concurrent saga's fan-out).
    public var maxCallsInFlight: Int
    /// Seconds a pass may run (at least its request timeout plus 2 s); then its running calls
    /// are abandoned and the retry loop takes the transaction up again later.
    public var maxPassDuration: Int64

    /// How long a claim or a renewal leases a transaction: one retry interval (at least 1 s).
    public var leaseSeconds: Double { Double(max(1, retryInterval)) }

    public init(retryInterval: Int64 = 10, timeoutToFail: Int64 = 35, requestTimeout: Int64 = 3,
                transCronInterval: Int64 = 3, maxRetryInterval: Int64 = 3600,
                limits: RequestLimits = RequestLimits(), maxCallsInFlight: Int = 64,
                maxPassDuration: Int64 = 60) {
        self.retryInterval = retryInterval
        self.timeoutToFail = timeoutToFail
        self.requestTimeout = requestTimeout
        self.transCronInterval = transCronInterval
        self.maxRetryInterval = maxRetryInterval
        self.limits = limits
        self.maxCallsInFlight = max(1, maxCallsInFlight)
        self.maxPassDuration = max(1, maxPassDuration)
    }

    /// DTM refuses to start with these settings; the message says which one to fix.
    public func validationError() -> String? {
        if retryInterval < 10 { return "RetryInterval should not be less than 10" }
        if timeoutToFail < retryInterval { return "TimeoutToFail should not be less than RetryInterval" }
        if requestTimeout <= 0 { return "RequestTimeout should be positive" }
        if transCronInterval <= 0 { return "TransCronInterval should be positive" }
        if maxRetryInterval < retryInterval { return "MaxRetryInterval should not be less than RetryInterval" }
        return nil
    }
}
