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

    public init(retryInterval: Int64 = 10, timeoutToFail: Int64 = 35, requestTimeout: Int64 = 3,
                transCronInterval: Int64 = 3) {
        self.retryInterval = retryInterval
        self.timeoutToFail = timeoutToFail
        self.requestTimeout = requestTimeout
        self.transCronInterval = transCronInterval
    }

    /// DTM refuses to start with these settings; the message says which one to fix.
    public func validationError() -> String? {
        if retryInterval < 10 { return "RetryInterval should not be less than 10" }
        if timeoutToFail < retryInterval { return "TimeoutToFail should not be less than RetryInterval" }
        if requestTimeout <= 0 { return "RequestTimeout should be positive" }
        if transCronInterval <= 0 { return "TransCronInterval should be positive" }
        return nil
    }
}
