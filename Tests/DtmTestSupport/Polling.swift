import Testing

/// Why `waitUntil` gave up.
public struct TimedOut: Error, CustomStringConvertible {
    public let description: String
}

/// Polls `condition` every `poll` until it holds; on timeout records an issue naming `what`
/// and throws `TimedOut`. The one way tests wait for something another task or process does:
/// the deadline is generous because a loaded machine may stall any step for seconds, and a
/// condition that holds returns at once.
public func waitUntil(_ what: @autoclosure () -> String, timeout: Duration = .seconds(30),
                      poll: Duration = .milliseconds(50), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: poll)
    }
    if try await condition() { return }
    let description = "timed out after \(timeout) waiting for \(what())"
    Issue.record("\(description)")
    throw TimedOut(description: description)
}
