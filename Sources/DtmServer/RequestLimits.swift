import DtmEngine
import Foundation

/// Bounds on second counts that become dates. The engine accepts any non-negative value,
/// but a date too far away cannot be written (the store's microsecond conversion traps),
/// so both wire layers refuse such requests before they reach the engine.
enum RequestLimits {
    /// Ten years: longer than any timeout, retry interval or msg delay DTM's users set.
    static let maxSeconds: Int64 = 315_360_000
    /// `/all`'s creation-time filters (epoch milliseconds) stay within years 0001…9999.
    static let epochMilliseconds: ClosedRange<Int64> = -62_135_596_800_000...253_402_300_799_999

    static func check(_ request: TransRequest) throws(DtmError) {
        let options = request.options
        for (name, value) in [("timeout_to_fail", options.timeoutToFail), ("retry_interval", options.retryInterval),
                              ("request_timeout", options.requestTimeout)] {
            try check(name, value)
        }
        if request.transType == TransType.msg.rawValue {
            for delay in msgDelays(request.customData) { try check("custom_data.delay", delay) }
        }
    }

    static func check(_ name: String, _ seconds: Int64) throws(DtmError) {
        if seconds > maxSeconds || seconds < -maxSeconds {
            throw DtmError.invalidArgument("\(name): must be at most \(maxSeconds) seconds (got \(seconds))")
        }
    }

    /// The numbers under any key the engine may read as the msg delay (Go matches keys
    /// case-insensitively); anything that is not a number is the engine's to judge.
    private static func msgDelays(_ customData: String) -> [Int64] {
        guard !customData.isEmpty,
              let object = try? JSONSerialization.jsonObject(with: Data(customData.utf8)) as? [String: Any]
        else { return [] }
        return object.compactMap { key, value in
            guard key.lowercased() == "delay", let number = value as? NSNumber else { return nil }
            let seconds = number.doubleValue
            return seconds >= Double(Int64.max) ? .max : seconds <= Double(Int64.min) ? .min : Int64(seconds)
        }
    }
}
