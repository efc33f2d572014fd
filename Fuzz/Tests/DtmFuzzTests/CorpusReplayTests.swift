import DtmFuzz
import Foundation
import Testing

/// Every committed corpus input (seeds and past findings) still passes its fuzz target's
/// checks in an ordinary build, so a regression shows up without the fuzzing toolchain.
@Suite struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("corpus").path

    @Test(arguments: FuzzTarget.all.map(\.name))
    func corpusPasses(_ name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let files = Corpus.files(at: Self.corpus + "/" + name)
        #expect(!files.isEmpty, "no corpus for \(name)")
        for file in files {
            #expect(throws: Never.self, "\(file)") { try target.run(Corpus.read(file)) }
        }
    }

    @Test func seedsAreValidInputs() throws {
        for (name, seeds) in try Seeds.all() {
            let target = try #require(FuzzTarget.named(name))
            for seed in seeds {
                #expect(throws: Never.self, "\(name)/\(seed.name)") { try target.run(seed.bytes) }
            }
        }
    }
}
