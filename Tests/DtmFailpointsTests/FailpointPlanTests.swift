@testable import DtmFailpoints
import Foundation
import Testing

/// The plan's decisions, without the kill: which hit of which name must end the process.
@Suite struct FailpointPlanTests {
    @Test func offWithoutEnvironment() {
        #expect(FailpointPlan(environment: [:]) == nil)
        #expect(FailpointPlan(environment: ["PATH": "/usr/bin"]) == nil)
    }

    @Test func firesAtTheNthHitOfItsName() throws {
        let plan = try #require(FailpointPlan(environment: ["DTM_FAILPOINT": "store.commit.after:3"]))
        #expect(plan.count("store.commit.before") == nil)
        #expect(plan.count("store.commit.after") == nil)
        #expect(plan.count("store.commit.after") == nil)
        #expect(plan.count("store.commit.after") == 3)
        #expect(plan.count("store.commit.after") == nil, "fires once")
    }

    @Test func prefixPatternsAndSeveralTriggers() throws {
        let plan = try #require(FailpointPlan(environment: ["DTM_FAILPOINT": "branch.saga.*:2,store.saveNew.before:1,bad,x:0"]))
        #expect(plan.count("branch.saga.action.before") == nil)
        #expect(plan.count("branch.tcc.confirm.before") == nil)
        #expect(plan.count("branch.saga.compensate.after") == 2)
        #expect(plan.count("store.saveNew.before") == 1)
        #expect(plan.count("x") == nil, "a count of 0 is ignored")
    }

    @Test func randomKillsFollowTheProbabilityAndTheSeed() throws {
        func kills(_ seed: Int) throws -> [Int] {
            let plan = try #require(FailpointPlan(environment: ["DTM_FAILPOINT_RANDOM": "\(seed):0.1"]))
            return (0..<10_000).filter { _ in plan.count("store.commit.before") != nil }
        }
        let first = try kills(7)
        #expect((700...1300).contains(first.count), "\(first.count) of 10000 at p = 0.1")
        #expect(try kills(7) == first, "a seed repeats its choices")
        #expect(try kills(8) != first)
        let never = try #require(FailpointPlan(environment: ["DTM_FAILPOINT_RANDOM": "1:0"]))
        #expect((0..<1000).allSatisfy { _ in never.count("a") == nil })
    }

    @Test func logsEachNameOnce() throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("failpoints-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        do {
            let plan = try #require(FailpointPlan(environment: ["DTM_FAILPOINT_LOG": log.path]))
            for name in ["a", "b", "a", "c", "b"] { #expect(plan.count(name) == nil) }
        }
        #expect(try String(contentsOf: log, encoding: .utf8) == "seen a\nseen b\nseen c\n")
    }
}
