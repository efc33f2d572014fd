import DtmEngine
import Foundation

/// Bounds on the admin routes' time parameters (transaction options are bounded by the engine).
enum RequestLimits {
    static let maxSeconds = maxOptionSeconds
    /// `/all`'s creation-time filters (epoch milliseconds) stay within years 0001…9999.
    static let epochMilliseconds: ClosedRange<Int64> = -62_135_596_800_000...253_402_300_799_999

    static func check(_ name: String, _ seconds: Int64) throws(DtmError) {
        if seconds > maxSeconds || seconds < -maxSeconds {
            throw DtmError.invalidArgument("\(name): must be at most \(maxSeconds) seconds (got \(seconds))")
        }
    }
}
