import Foundation
import Testing
import DtmTestSupport

#if canImport(Glibc)
import Glibc
#endif

// The crash-point harness: the real `dtm` executable kills itself at failpoints (DtmFailpoints)
// chosen at random while crash_client.py drives saga, concurrent saga, msg (with and without
// back-check), tcc, xa and workflow transactions against it over gRPC and HTTP; the driver
// restarts it on the same store each time. Once every crash point of a round is spent, a
// coordinator without failpoints finishes the work and every transaction is checked against
// the invariants of DESIGN.md. CI runs a bounded sample; `tools/crash-harness N` the full run.

/// How much of the harness to run, from the environment.
struct CrashHarnessPlan {
    /// Crash points to spend in total (DTM_CRASH_POINTS; CI's sample by default).
    var crashPoints = 40
    /// Crash points per round: one store, one client, one final check (DTM_CRASH_ROUND).
    var perRound = 50
    /// Seed of the failpoint choices and of the client's transaction mix (DTM_CRASH_SEED).
    var seed = UInt64.random(in: 1...999_999)

    static var fromEnvironment: CrashHarnessPlan {
        let environment = ProcessInfo.processInfo.environment
        var plan = CrashHarnessPlan()
        if let value = environment["DTM_CRASH_POINTS"].flatMap(Int.init), value > 0 { plan.crashPoints = value }
        if let value = environment["DTM_CRASH_ROUND"].flatMap(Int.init), value > 0 { plan.perRound = value }
        if let value = environment["DTM_CRASH_SEED"].flatMap(UInt64.init) { plan.seed = value }
        return plan
    }
}

/// What the harness did and found, over all rounds.
struct CrashHarnessTotals: CustomStringConvertible {
    var rounds = 0
    /// Kills by a failpoint, and by the driver when none fired in time.
    var failpointCrashes = 0
    var driverKills = 0
    var fired: [String: Int] = [:]
    var seen: Set<String> = []
    var transactions = 0
    var checked = 0
    var byKind: [String: Int] = [:]
    /// Checked transactions that were flaky (a branch first answered ERROR or ONGOING), and
    /// abandoned workflows the coordinator's callback got finished.
    var flaky = 0
    var resumedWorkflows = 0
    var violations: [String] = []

    var description: String {
        let names = fired.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return """
            crash harness: \(rounds) round(s), \(failpointCrashes) failpoint crashes + \(driverKills) driver kills, \
            \(fired.count) distinct failpoints fired of \(seen.count) seen; \(transactions) transactions started, \
            \(checked) stored and checked (\(byKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); \
            \(flaky) flaky, \(resumedWorkflows) workflows resumed by callback); \(violations.count) violation(s)
            fired: \(names)
            seen, never fired: \(seen.subtracting(fired.keys).sorted().joined(separator: " "))
            """
    }
}

/// One transaction as crash_client.py drove it.
struct HarnessTransaction: Decodable {
    struct Step: Decodable {
        var name: String
        var code: String
        var attempts: Int
    }
    var gid: String
    var kind: String
    var transport: String
    var plan: String
    /// One branch first answers ERROR or ONGOING.
    var flaky: Bool
    var steps: [Step]
    var finish: String?
    /// Times the coordinator called an abandoned workflow back and the client resumed it.
    var resumes: Int?

    func acked(_ name: String) -> Bool { steps.contains { $0.name == name && ($0.code == "OK" || $0.code == "HTTP_200") } }
    /// The step that creates the transaction in the store.
    var creation: String {
        switch kind {
        case "saga", "csaga": "Submit"
        case "workflow": "PrepareWorkflow"
        default: "Prepare"
        }
    }
}

/// Chooses each restart's failpoint: mostly one named point at its N-th hit, among the names
/// seen so far (fewest crashes first, so coverage spreads), sometimes a random point.
struct FailpointChooser {
    var generator: SeededGenerator

    /// Named points chosen that did not fire in time: rare under this load, chosen less.
    var missed: [String: Int] = [:]

    mutating func next(seen: Set<String>, fired: [String: Int]) -> [String: String] {
        if seen.isEmpty || Double.random(in: 0..<1, using: &generator) < 0.3 {
            let probability = [0.002, 0.01, 0.03].randomElement(using: &generator) ?? 0.01
            return ["DTM_FAILPOINT_RANDOM": "\(UInt64.random(in: 1...UInt64(UInt32.max), using: &generator)):\(probability)"]
        }
        // The less a name has fired, the likelier it is chosen.
        let names = seen.sorted()
        let weights = names.map { 1.0 / Double(1 + (fired[$0] ?? 0) + 3 * (missed[$0] ?? 0)) }
        var pick = Double.random(in: 0..<weights.reduce(0, +), using: &generator)
        var name = names[names.count - 1]
        for (candidate, weight) in zip(names, weights) {
            if pick < weight { name = candidate; break }
            pick -= weight
        }
        // Mostly early hits; sometimes a later one, deeper into the load.
        let hit = Double.random(in: 0..<1, using: &generator) < 0.8
            ? Int.random(in: 1...4, using: &generator) : Int.random(in: 5...20, using: &generator)
        return ["DTM_FAILPOINT": "\(name):\(hit)"]
    }
}

/// SplitMix64: reproducible choices for a seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct CrashHarnessTests {
    /// Kills `dtm` at random failpoints (before and after each store write and each branch
    /// call) while transactions of every mode are under way, restarts it each time on the same
    /// store, and checks every transaction once the dust settles: nothing acknowledged lost,
    /// everything final with the status its injected outcomes call for, every needed branch call
    /// made, no saga action after its compensation, no confirm/commit of a transaction that
    /// rolled back and no cancel/rollback of one that committed.
    @Test func crashAtRandomFailpointsThenCheckEveryTransaction() async throws {
        let binary = try #require(Peers.dtmBinary, "build the dtm executable first")
        let python = try Peers.require(Peers.python, "python with grpcio")
        let busi = try await BusiPeer.shared()
        let plan = CrashHarnessPlan.fromEnvironment
        var chooser = FailpointChooser(generator: SeededGenerator(state: plan.seed))
        var totals = CrashHarnessTotals()
        print("crash harness: seed \(plan.seed), \(plan.crashPoints) crash points, \(plan.perRound) per round")
        while totals.failpointCrashes < plan.crashPoints {
            let crashes = min(plan.perRound, plan.crashPoints - totals.failpointCrashes)
            try await Self.round(crashes, seed: plan.seed &+ UInt64(totals.rounds), binary: binary, python: python,
                                 busi: busi, chooser: &chooser, totals: &totals)
            // Progress of a long run, unbuffered.
            FileHandle.standardError.write(Data("\(totals)\n".utf8))
        }
        print(totals)
        for violation in totals.violations.prefix(40) { Issue.record("\(violation)") }
        #expect(totals.violations.isEmpty, "\(totals)")
        #expect(totals.checked > 0)
        // Both store writes and branch calls were crash points.
        #expect(totals.fired.keys.contains { $0.hasPrefix("store.") }, "\(totals)")
        #expect(totals.fired.keys.contains { $0.hasPrefix("branch.") } || plan.crashPoints < 20, "\(totals)")
    }

    /// One store, one client run, `crashes` failpoint crashes, then settle and check.
    static func round(_ crashes: Int, seed: UInt64, binary: String, python: String, busi: BusiPeer,
                      chooser: inout FailpointChooser, totals: inout CrashHarnessTotals) async throws {
        totals.rounds += 1
        let dir = try makeTempDir("dtm-crash-harness")
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("dtm.sqlite").path
        let failpointLog = dir.appendingPathComponent("failpoints.log")
        let prefix = uniqueGid("crash\(totals.rounds)")

        let client = try CrashClient(python: python, busi: busi, dir: dir, prefix: prefix, seed: seed)
        defer { client.killIfRunning() }

        // Crash after crash on the same store while the client keeps transactions coming.
        var started = 0
        var spent = 0
        while spent < crashes {
            started += 1
            let environment = chooser.next(seen: totals.seen, fired: totals.fired)
                .merging(["DTM_FAILPOINT_LOG": failpointLog.path]) { $1 }
            let dtm = try await DtmProcess.start(
                binary: binary, store: db, logURL: dir.appendingPathComponent("dtm-\(started).log"), requestTimeout: 3,
                environment: environment, mayDie: true)
            defer { dtm.killIfRunning() }
            if dtm.serving { try client.publish([dtm]) }
            let exited = try await dtm.waitForExit(timeout: .seconds(5))
            client.unpublish()
            if !exited {
                try await dtm.stop(SIGKILL)
                totals.driverKills += 1
                if let named = environment["DTM_FAILPOINT"]?.split(separator: ":").first {
                    chooser.missed[String(named), default: 0] += 1
                }
                continue
            }
            let log = dtm.log
            guard dtm.process.terminationReason == .uncaughtSignal, dtm.process.terminationStatus == SIGKILL,
                  let fired = log.firstMatch(of: /failpoint (\S+) fired/) else {
                totals.violations.append("dtm died without a failpoint (\(dtm.process.terminationReason) "
                                         + "\(dtm.process.terminationStatus)) under \(environment): \(log.suffix(3000))")
                spent += 1
                continue
            }
            spent += 1
            totals.failpointCrashes += 1
            totals.fired[String(fired.1), default: 0] += 1
            totals.seen.formUnion(Self.seenNames(failpointLog))
        }

        // No more failpoints: the client finishes what it started, the coordinator the rest.
        client.requestStop()
        let final = try await DtmProcess.start(binary: binary, store: db, logURL: dir.appendingPathComponent("dtm-final.log"),
                                               requestTimeout: 3, environment: ["DTM_FAILPOINT_LOG": failpointLog.path],
                                               mayDie: true)
        guard final.serving else {
            totals.violations.append("round \(totals.rounds): the final dtm did not start: \(final.log.suffix(3000))")
            return
        }
        defer { final.killIfRunning() }
        try client.publish([final])
        let transactions: [HarnessTransaction]
        do {
            transactions = try await client.finish()
        } catch {
            totals.violations.append("round \(totals.rounds): \(error)")
            return
        }
        totals.transactions += transactions.count

        var dump = try await dumpDatabase(db)
        do {
            try await waitUntil("every stored transaction final", timeout: .seconds(90), poll: .milliseconds(300)) {
                dump = try await dumpDatabase(db)
                return dump.globals.values.allSatisfy { $0.status == "succeed" || $0.status == "failed" }
            }
        } catch {
            // Reported below, transaction by transaction.
        }
        try await final.stop(SIGTERM)
        totals.seen.formUnion(Self.seenNames(failpointLog))
        dump = try await dumpDatabase(db)
        if dump.orphanBranches != 0 { totals.violations.append("round \(totals.rounds): \(dump.orphanBranches) orphan branch rows") }

        let calls = Self.calls(busi, prefix: prefix)
        for transaction in transactions {
            let problems = Self.check(transaction, stored: dump.globals[transaction.gid], calls: calls[transaction.gid] ?? [])
            if dump.globals[transaction.gid] != nil {
                totals.checked += 1
                totals.byKind[transaction.kind, default: 0] += 1
                if transaction.flaky { totals.flaky += 1 }
                if (transaction.resumes ?? 0) > 0 { totals.resumedWorkflows += 1 }
            }
            for problem in problems {
                totals.violations.append("\(transaction.gid) (\(transaction.kind) \(transaction.transport) plan "
                                         + "\(transaction.plan)\(transaction.flaky ? " flaky" : "")): \(problem); steps \(transaction.steps.map { "\($0.name)=\($0.code)x\($0.attempts)" }); "
                                         + "stored \(dump.globals[transaction.gid].map { "\($0.status) \($0.branches.map { "\($0.branchId)/\($0.op)/\($0.status)" })" } ?? "nothing"); "
                                         + "calls \(calls[transaction.gid] ?? [])")
            }
        }
        let unknown = Set(dump.globals.keys).subtracting(transactions.map(\.gid))
        if !unknown.isEmpty { totals.violations.append("round \(totals.rounds): stored gids no client started: \(unknown.sorted().prefix(5))") }
    }

    /// The busi calls of this round's gids. The shared busi log holds every round's calls (and
    /// other tests'), so lines are matched as bytes before any is decoded.
    static func calls(_ busi: BusiPeer, prefix: String) -> [String: [BusiCall]] {
        guard let data = try? Data(contentsOf: busi.logURL) else { return [:] }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let needle = Data("\"\(prefix)-".utf8)
        let calls = data.split(separator: UInt8(ascii: "\n")).compactMap { line -> BusiCall? in
            guard line.range(of: needle) != nil else { return nil }
            return try? decoder.decode(BusiCall.self, from: Data(line))
        }
        return Dictionary(grouping: calls.filter { $0.gid.hasPrefix(prefix) }, by: \.gid)
    }

    static func seenNames(_ log: URL) -> Set<String> {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return Set(text.split(separator: "\n").compactMap { line in
            line.hasPrefix("seen ") ? String(line.dropFirst(5)) : nil
        })
    }

    /// The invariants one transaction must meet once everything has settled.
    static func check(_ transaction: HarnessTransaction, stored: DumpedTransaction?, calls: [BusiCall]) -> [String] {
        guard let stored else {
            return transaction.acked(transaction.creation) ? ["acknowledged \(transaction.creation) but not stored"] : []
        }
        var problems: [String] = []
        guard stored.status == "succeed" || stored.status == "failed" else {
            return ["left unfinished in status \(stored.status)"]
        }
        let finishAcked = transaction.acked(transaction.finish == "abort" ? "Abort" : "Submit")
        let expected: Set<String> = switch transaction.kind {
        case "saga", "csaga", "msgcheck": [transaction.plan == "ok" ? "succeed" : "failed"]
        case "msg": ["succeed"]
        case "tcc", "xa":
            if finishAcked { [transaction.finish == "submit" ? "succeed" : "failed"] }
            else if transaction.plan == "rollback" { ["failed"] }
            else { ["succeed", "failed"] }
        case "workflow":
            finishAcked ? [transaction.finish ?? ""] : ["succeed", "failed"]
        default: []
        }
        if !expected.contains(stored.status) { problems.append("final status \(stored.status), expected \(expected.sorted())") }

        // The coordinator's calls (not the client's own tcc tries and xa actions).
        let coordinatorCalls = calls.filter { !($0.op == "try" || (transaction.kind == "xa" && $0.op == "action")) }
        func ops(_ op: String, _ branch: String? = nil) -> [BusiCall] {
            coordinatorCalls.filter { $0.op == op && (branch == nil || $0.branchId == branch) }
        }
        let succeeded = stored.status == "succeed"
        switch transaction.kind {
        case "saga", "csaga":
            let branches = transaction.kind == "saga" ? ["01", "02"] : ["01", "02", "03"]
            for branch in branches {
                let actions = ops("action", branch), compensations = ops("compensate", branch)
                if succeeded {
                    if actions.isEmpty { problems.append("succeeded without calling action \(branch)") }
                    if !compensations.isEmpty { problems.append("succeeded but compensated \(branch)") }
                } else if !actions.isEmpty {
                    if compensations.isEmpty { problems.append("rolled back without compensating \(branch)") }
                    if let last = actions.map(\.t).max(), let first = compensations.map(\.t).min(), last > first {
                        problems.append("action \(branch) after its compensation")
                    }
                }
            }
            // Order: a step runs only after the steps it depends on are done.
            let dependencies: [(String, [String])] = transaction.kind == "saga" ? [("02", ["01"])] : [("03", ["01", "02"])]
            for (branch, needs) in dependencies {
                guard let first = ops("action", branch).map(\.t).min() else { continue }
                for need in needs where (ops("action", need).map(\.t).max() ?? 0) > first {
                    problems.append("action \(branch) started before action \(need) was done")
                }
            }
            if transaction.kind == "saga", !succeeded,
               let firstCompensation = ops("compensate").map(\.t).min(),
               let lastAction = ops("action").map(\.t).max(), lastAction > firstCompensation {
                problems.append("an action after compensation began")
            }
        case "msg", "msgcheck":
            for branch in ["01", "02"] where succeeded && ops("action", branch).isEmpty {
                problems.append("succeeded without calling action \(branch)")
            }
            if !succeeded && !ops("action").isEmpty { problems.append("failed but called actions") }
        case "tcc", "xa":
            let (commit, rollback) = transaction.kind == "tcc" ? ("confirm", "cancel") : ("commit", "rollback")
            let registered = Set(stored.branches.map(\.branchId))
            for branch in registered.sorted() {
                if succeeded && ops(commit, branch).isEmpty { problems.append("succeeded without \(commit) of \(branch)") }
                if !succeeded && ops(rollback, branch).isEmpty { problems.append("failed without \(rollback) of \(branch)") }
            }
            if succeeded && !ops(rollback).isEmpty { problems.append("succeeded but called \(rollback)") }
            if !succeeded && !ops(commit).isEmpty { problems.append("failed but called \(commit)") }
        default:
            break
        }
        // Stored rows agree with the final status.
        let expectedRows: (op: String, status: String)? = switch (transaction.kind, succeeded) {
        case ("saga", true), ("csaga", true), ("msg", true), ("msgcheck", true): ("action", "succeed")
        case ("tcc", true): ("confirm", "succeed")
        case ("tcc", false): ("cancel", "succeed")
        case ("xa", true): ("commit", "succeed")
        case ("xa", false): ("rollback", "succeed")
        default: nil
        }
        if let expectedRows {
            let wrong = stored.branches.filter { $0.op == expectedRows.op && $0.status != expectedRows.status }
            if !wrong.isEmpty { problems.append("\(expectedRows.op) rows not \(expectedRows.status): \(wrong.map(\.branchId))") }
        }
        return problems
    }
}
