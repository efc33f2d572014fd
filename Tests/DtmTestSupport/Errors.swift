import DtmEngine
import Testing

/// Runs `body` and returns the `DtmError` it threw, or nil; any other error is recorded as an issue.
public func caught(_ body: () async throws -> Void) async -> DtmError? {
    do {
        try await body()
        return nil
    } catch let error as DtmError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}
