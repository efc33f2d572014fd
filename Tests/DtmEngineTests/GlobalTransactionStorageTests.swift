import Foundation
import Testing
@testable import DtmEngine

/// `GlobalTransaction` shares one box of fields between copies: a change to one copy must never
/// show in another, whichever copy changes and on whichever thread.
@Suite struct GlobalTransactionStorageTests {
    static let created = Date(timeIntervalSince1970: 1_700_000_000)

    static func sample() -> GlobalTransaction {
        GlobalTransaction(gid: "g1", transType: .saga, status: .submitted, queryPrepared: "q",
                          createTime: created, options: TransOptions(branchHeaders: ["h": "v"]),
                          customData: "{\"concurrent\":false}", nextCronInterval: 10, owner: "me")
    }

    @Test func aChangedCopyLeavesTheOthersAsTheyWere() {
        let original = Self.sample()
        var changed = original
        var other = original
        changed.status = .succeed
        changed.gid = "g2"
        changed.options.branchHeaders["x"] = "y"
        changed.quarantine = "bad"
        #expect(original.status == .submitted && original.gid == "g1" && original.options.branchHeaders == ["h": "v"])
        #expect(!original.isQuarantined && changed.isQuarantined)
        #expect(other == original && changed != original)
        other.nextCronInterval = 20
        #expect(original.nextCronInterval == 10 && changed.nextCronInterval == 10 && other.nextCronInterval == 20)
    }

    @Test func equalityComparesFieldsNotBoxes() {
        let a = Self.sample(), b = Self.sample()
        #expect(a == b)
        var c = b
        c.updateTime = Self.created.addingTimeInterval(1)
        #expect(c != a)
        c.updateTime = Self.created
        #expect(c == a)
    }

    /// Copies changed concurrently from many tasks each see only their own change.
    @Test func concurrentChangesOfCopiesStayApart() async {
        let shared = Self.sample()
        let gids = await withTaskGroup(of: String.self) { group in
            for index in 0..<64 {
                group.addTask {
                    var mine = shared
                    for _ in 0..<100 { mine.gid = "g-\(index)" }
                    return mine.gid
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(gids) == Set((0..<64).map { "g-\($0)" }))
        #expect(shared.gid == "g1")
    }

    /// Test failures and `dump` show the fields, not the box.
    @Test func itReflectsItsFields() {
        let mirror = Mirror(reflecting: Self.sample())
        #expect(mirror.displayStyle == .struct)
        #expect(mirror.children.count == 19)
        #expect(mirror.children.first { $0.label == "gid" }?.value as? String == "g1")
        #expect("\(Self.sample())".contains("gid: \"g1\""))
    }
}
