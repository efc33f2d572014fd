#if DEBUG || DTM_FAILPOINTS
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#endif

/// Named crash points for the crash-recovery harness (`tools/crash-harness`).
///
/// `Failpoint.hit("store.changeStatus.before")` marks a place where a crash must lose nothing
/// that was acknowledged and leave nothing stuck. Release builds compile every call to nothing
/// (the name is an autoclosure that is never evaluated) unless built with `-D DTM_FAILPOINTS`.
/// Debug builds carry them, but they stay off unless the environment asks for them:
///
/// - `DTM_FAILPOINT=name:N[,name:N...]`: the process kills itself (SIGKILL, as `kill -9`
///   would) at the N-th hit of `name`; a name ending in `*` matches every name it prefixes.
/// - `DTM_FAILPOINT_RANDOM=seed:probability`: every hit kills the process with that probability.
/// - `DTM_FAILPOINT_LOG=path`: appends `seen <name>` the first time each name is hit and
///   `fired <name> <N>` just before a kill, so a driver knows what it covered.
public enum Failpoint {
    #if DEBUG || DTM_FAILPOINTS
    /// Counts a hit of `name` and kills the process if the configured plan says so.
    public static func hit(_ name: @autoclosure () -> String) {
        guard let plan = FailpointPlan.current else { return }
        plan.hit(name())
    }
    #else
    @inlinable @inline(__always)
    public static func hit(_ name: @autoclosure () -> String) {}
    #endif
}

#if DEBUG || DTM_FAILPOINTS
/// The plan read from the environment once, with its counters.
final class FailpointPlan: @unchecked Sendable {
    /// nil when no failpoint variable is set: a hit then costs one load and a branch.
    static let current: FailpointPlan? = FailpointPlan(environment: ProcessInfo.processInfo.environment)

    struct Trigger {
        var pattern: Substring
        var prefix: Bool
        var at: Int
        var hits = 0

        func matches(_ name: String) -> Bool { prefix ? name.hasPrefix(pattern) : name == pattern }
    }

    private let lock = NSLock()
    private var triggers: [Trigger]
    private var random: (state: UInt64, threshold: UInt64)?
    private var seen: Set<String> = []
    private let logFD: Int32

    init?(environment: [String: String]) {
        let spec = environment["DTM_FAILPOINT"] ?? ""
        let randomSpec = environment["DTM_FAILPOINT_RANDOM"] ?? ""
        let logPath = environment["DTM_FAILPOINT_LOG"] ?? ""
        guard !spec.isEmpty || !randomSpec.isEmpty || !logPath.isEmpty else { return nil }
        triggers = spec.split(separator: ",").compactMap { item in
            guard let colon = item.lastIndex(of: ":"), let at = Int(item[item.index(after: colon)...]), at > 0 else {
                return nil
            }
            var pattern = item[..<colon]
            let prefix = pattern.hasSuffix("*")
            if prefix { pattern = pattern.dropLast() }
            return Trigger(pattern: pattern, prefix: prefix, at: at)
        }
        let parts = randomSpec.split(separator: ":")
        if parts.count == 2, let seed = UInt64(parts[0]), let probability = Double(parts[1]), probability > 0 {
            let threshold = probability >= 0.999 ? UInt64.max : UInt64(probability * Double(UInt64.max))
            random = (seed | 1, threshold)
        }
        logFD = logPath.isEmpty ? -1 : open(logPath, O_WRONLY | O_APPEND | O_CREAT, 0o644)
    }

    deinit { if logFD >= 0 { close(logFD) } }

    func hit(_ name: String) {
        lock.lock()
        guard let count = count(name) else {
            lock.unlock()
            return
        }
        // Still holding the lock: no other thread gets past a failpoint while the process dies.
        if logFD >= 0 { emit("fired \(name) \(count)\n", to: logFD) }
        emit("failpoint \(name) fired: killing the process\n", to: 2)
        kill(getpid(), SIGKILL)
        while true { pause() }
    }

    /// Counts a hit (the caller holds the lock); returns the trigger's count when the process
    /// must die now (0 for a random kill), nil otherwise.
    func count(_ name: String) -> Int? {
        if logFD >= 0 && seen.insert(name).inserted { emit("seen \(name)\n", to: logFD) }
        var fire: Int?
        for index in triggers.indices where triggers[index].matches(name) {
            triggers[index].hits += 1
            if triggers[index].hits == triggers[index].at { fire = triggers[index].at }
        }
        if fire == nil, var generator = random {
            // xorshift64*: reproducible for a seed, no shared global generator.
            generator.state ^= generator.state >> 12
            generator.state ^= generator.state << 25
            generator.state ^= generator.state >> 27
            random = generator
            if generator.state &* 2_685_821_657_736_338_717 <= generator.threshold { fire = 0 }
        }
        return fire
    }

    /// One write(2), so the line is in the file (the page cache) before the kill.
    private func emit(_ line: String, to fd: Int32) {
        line.utf8CString.withUnsafeBufferPointer { _ = write(fd, $0.baseAddress, $0.count - 1) }
    }
}
#endif
