@testable import DtmGRPC
import Testing

/// Inputs the fuzzers (Fuzz/) found; each input is also in Fuzz/corpus.
@Suite struct FuzzFindingsTests {
    /// grpc-wire: the longest grpc-timeout a peer may send ("99999999H", 11415 years) trapped
    /// with an arithmetic overflow when formatted again (nanoseconds overflow Int64).
    @Test(arguments: ["99999999H", "99999999M", "99999999S"])
    func longTimeoutsFormatWithoutTrapping(_ text: String) throws {
        let timeout = try #require(Wire.parseTimeout(text))
        let formatted = Wire.formatTimeout(timeout)
        let again = try #require(Wire.parseTimeout(formatted))
        #expect(again >= timeout)
        #expect(Wire.formatTimeout(again) == formatted)
    }

    /// grpc-wire: the saturated form must round up exactly, or each re-format grows by an hour.
    @Test func longTimeoutFormatIsStable() throws {
        let formatted = Wire.formatTimeout(.seconds(36_000_000_000))
        #expect(formatted == "10000000H")
        #expect(Wire.formatTimeout(try #require(Wire.parseTimeout(formatted))) == formatted)
    }

    @Test func durationsBeyondTheWireSaturate() {
        #expect(Wire.formatTimeout(.seconds(Int64.max)) == "99999999H")
        #expect(Wire.formatTimeout(.seconds(9_000_000_000)) == "2500000H")
        #expect(Wire.formatTimeout(.seconds(9_000_000_001)) == "2500001H")
    }
}
