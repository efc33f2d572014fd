#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import DtmSync

/// Makes global transaction ids shaped like DTM's (22 characters of the shortuuid base-57
/// alphabet) that also sort by creation time: each id encodes a 48-bit millisecond timestamp,
/// a 16-bit sequence for ids made in the same millisecond, and 64 random bits, most
/// significant digit first. The alphabet is in ASCII order, so string order is time order
/// for ids from one process, and ids from different processes do not collide.
public final class GidGenerator: Sendable {
    static let alphabet = Array("23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".utf8)
    static let length = 22

    private struct State {
        var lastMillis: UInt64 = 0
        var sequence: UInt64 = 0
    }

    private let state = Locked(State())
    private let clock: @Sendable () -> UInt64

    /// - Parameter millisecondsSinceEpoch: injectable for tests.
    public init(millisecondsSinceEpoch: @escaping @Sendable () -> UInt64 = GidGenerator.wallClockMillis) {
        self.clock = millisecondsSinceEpoch
    }

    public func next() -> String {
        let (millis, sequence) = state.withLock { state -> (UInt64, UInt64) in
            let now = clock()
            if now > state.lastMillis {
                state.lastMillis = now
                state.sequence = 0
            } else {
                // Same millisecond, or the clock went back: keep ids increasing.
                state.sequence += 1
                if state.sequence > 0xFFFF {
                    state.lastMillis += 1
                    state.sequence = 0
                }
            }
            return (state.lastMillis, state.sequence)
        }
        let high = (millis & 0xFFFF_FFFF_FFFF) << 16 | sequence
        return Self.encode(high: high, low: UInt64.random(in: .min ... .max))
    }

    /// Fixed-width base-57 of the 128-bit number high·2⁶⁴ + low (57²² > 2¹²⁸).
    static func encode(high: UInt64, low: UInt64) -> String {
        var digits = [UInt8](repeating: alphabet[0], count: length)
        var (hi, lo) = (high, low)
        for position in stride(from: length - 1, through: 0, by: -1) {
            // Long division of the 128-bit value by 57.
            let (qHigh, rHigh) = hi.quotientAndRemainder(dividingBy: 57)
            let (qLow, rLow) = UInt64(57).dividingFullWidth((rHigh, lo))
            digits[position] = alphabet[Int(rLow)]
            (hi, lo) = (qHigh, qLow)
        }
        return String(decoding: digits, as: UTF8.self)
    }

    public static let wallClockMillis: @Sendable () -> UInt64 = {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) * 1000 + UInt64(spec.tv_nsec) / 1_000_000
    }
}
