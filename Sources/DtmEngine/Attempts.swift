import Foundation

/// How one branch call ended, as an attempt record keeps it (the engine's `BranchResult` cases).
public enum AttemptResult: String, Sendable, Codable, CaseIterable {
    case success, failure, ongoing, error

    public init(_ result: BranchResult) {
        switch result {
        case .success: self = .success
        case .failure: self = .failure
        case .ongoing: self = .ongoing
        case .error: self = .error
        }
    }
}

/// One call the engine made to a branch, a msg back-check (op `msg`) or a workflow resume
/// (op = the workflow's name): when, how long, how it ended and who made it. DTM keeps no such
/// history (dtm-labs/dtm#344). Small on purpose: no payload, no headers, the answer clipped.
public struct BranchAttempt: Sendable, Equatable {
    /// Store-assigned row id (the order of attempts); nil before it is stored.
    public var id: Int64?
    public var gid: String
    public var branchID: String
    public var op: BranchOp
    public var url: String
    /// Wall-clock time the call started.
    public var startTime: Date
    /// Measured with a monotonic clock.
    public var durationMs: Int64
    public var result: AttemptResult
    /// The answer's text for anything but success, clipped to `maxMessageBytes`.
    public var message: String
    /// The coordinator that made the call (the lease owner of its pass).
    public var owner: String

    /// Bytes of a branch's answer kept in an attempt (as much as logs and rollback reasons keep).
    public static let maxMessageBytes = 256

    public init(id: Int64? = nil, gid: String, branchID: String, op: BranchOp, url: String, startTime: Date,
                durationMs: Int64, result: AttemptResult, message: String, owner: String) {
        self.id = id
        self.gid = gid
        self.branchID = branchID
        self.op = op
        self.url = url
        self.startTime = startTime
        self.durationMs = durationMs
        self.result = result
        self.message = message
        self.owner = owner
    }

    /// The record of `call`'s answer, its text clipped.
    public init(gid: String, call: BranchCall, result: BranchResult, startTime: Date, duration: Duration,
                owner: String) {
        let (seconds, attoseconds) = duration.components
        let millis = seconds.multipliedReportingOverflow(by: 1000)
        self.init(gid: gid, branchID: call.branchID, op: call.op, url: call.url, startTime: startTime,
                  durationMs: millis.overflow ? .max : max(0, millis.partialValue &+ attoseconds / 1_000_000_000_000_000),
                  result: AttemptResult(result),
                  message: result.isSuccess ? "" : clipText(result.message, max: Self.maxMessageBytes),
                  owner: owner)
    }
}

/// How many attempts a transaction keeps: the first `first` (how it started) and the latest
/// `latest` (what happens now). A transaction retried every minute for months thus holds at
/// most `first + latest` rows; the attempts in between are dropped, oldest first.
public enum AttemptRetention {
    public static let first = 10
    public static let latest = 90
    public static var limit: Int { first + latest }

    /// `attempts` (oldest first) cut to what is kept.
    public static func trimmed<C: RandomAccessCollection>(_ attempts: C) -> [C.Element] where C.Index == Int {
        guard attempts.count > limit else { return Array(attempts) }
        return Array(attempts.prefix(first)) + Array(attempts.suffix(latest))
    }
}

/// Remote text (a branch's answer, a gRPC status message) cut to `max` bytes on a character
/// boundary, with a marker saying how long it was.
public func clipText(_ text: String, max: Int) -> String {
    let total = text.utf8.count
    guard total > max else { return text }
    var kept = ""
    var bytes = 0
    for character in text {
        let size = character.utf8.count
        if bytes + size > max { break }
        kept.append(character)
        bytes += size
    }
    return kept + "…[truncated, \(total) bytes]"
}
