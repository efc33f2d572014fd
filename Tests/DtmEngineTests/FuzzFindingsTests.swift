import DtmEngine
import Foundation
import Testing

/// Inputs the fuzzers (Fuzz/) found; each input is also in Fuzz/corpus.
@Suite struct FuzzFindingsTests {
    /// http-body: a retry_limit over 9e15 was accepted and stored, but the stored options could
    /// not be read back (issue 8, finding 1): now refused at Submit, nothing stored.
    @Test func retryLimitBeyondExactJSONIsRefused() async throws {
        let h = Harness()
        let gid = "fuzz-retry-limit-\(UUID().uuidString)"
        let request = sagaRequest(gid, steps: 1, options: TransOptions(retryLimit: 10_000_000_000_000_000))
        await expectError(.invalidArgument("retry_limit: must be at most 1000000 (got 10000000000000000)")) {
            try await h.coordinator.submit(request)
        }
        #expect(try await h.store.findGlobal(gid: gid) == nil)
    }

    /// The largest accepted retry_limit survives the store's options column exactly.
    @Test func largestRetryLimitReadsBack() {
        let options = TransOptions(retryLimit: RequestLimits().maxRetryLimit)
        #expect(TransOptions(jsonText: options.jsonText) == options)
    }
}
