import Foundation

/// Work a request hands to the background after storing it (when wait_result is false).
public struct ScheduledPass: Sendable {
    public var global: GlobalTransaction
    /// The rows the request just wrote, when known (saves a read).
    public var branches: [BranchRecord]?
    /// The admission the request took: held until this pass has run.
    public var permit: AdmissionPermit?
    /// `global` and `branches` are the rows the request just inserted (see `FreshTransactions`).
    public var created: Bool

    public init(global: GlobalTransaction, branches: [BranchRecord]? = nil, permit: AdmissionPermit? = nil,
                created: Bool = false) {
        self.global = global
        self.branches = branches
        self.permit = permit
        self.created = created
    }
}

/// Receives transactions to process in the background, e.g. `{ cron.enqueue($0) }`.
/// It should return quickly: the request waits for it.
public typealias PassScheduler = @Sendable (ScheduledPass) async -> Void

/// The answer of prepareWorkflow: the stored transaction and its progress rows.
public struct WorkflowProgress: Sendable, Equatable {
    public var transaction: GlobalTransaction
    public var progresses: [BranchRecord]

    public init(transaction: GlobalTransaction, progresses: [BranchRecord]) {
        self.transaction = transaction
        self.progresses = progresses
    }
}

/// The coordinator operations behind the gRPC service and the HTTP API (spec 3.3, 3.7, 6.4).
/// Every success means the write is durable; bad input is refused before anything is stored.
public struct Coordinator: Sendable {
    public let driver: TransactionDriver
    public let resolveTopic: TopicResolver
    public let schedule: PassScheduler
    /// Runs a pass in the request (wait_result). The server passes `CronLoop.runNow`, so that the
    /// loop never drives the same gid at the same time, even after the request's lease expired.
    public let runNow: @Sendable (ScheduledPass) async -> PassReport
    /// Bounds the transactions in progress in this process; nil admits everything.
    public let admission: AdmissionGate?

    /// How often an operation re-reads after losing a compare-and-set to a concurrent one.
    static let raceRetries = 3

    public init(driver: TransactionDriver, resolveTopic: TopicResolver? = nil, schedule: @escaping PassScheduler,
                runNow: (@Sendable (ScheduledPass) async -> PassReport)? = nil, admission: AdmissionGate? = nil) {
        self.driver = driver
        self.resolveTopic = resolveTopic ?? storeTopicResolver(driver.store)
        self.schedule = schedule
        self.runNow = runNow ?? { pass in
            await driver.process(pass.global, branches: pass.branches, created: pass.created)
        }
        self.admission = admission
    }

    private var store: any TransactionStore { driver.store }
    private var now: Date { driver.clock.now() }
    private var config: EngineConfig { driver.config }

    // MARK: - Operations

    /// Creates and starts a transaction, or (gid known) submits a prepared one, or repeats a
    /// submitted one. Workflow: stores the final status the client reports in `reqExtra`.
    public func submit(_ request: TransRequest) async throws(DtmError) {
        if request.transType == TransType.workflow.rawValue { return try await submitWorkflow(request) }
        let checked = try Validation.newTransaction(request, limits: config.limits)
        let permit = try admit()
        let created = try await createIfNew(checked, status: .submitted, permit: permit)
        let wait = request.options.waitResult
        if let created { return try await run(created, wait: wait, submitting: true) }

        for _ in 0..<Self.raceRetries {
            let stored = try await existing(request.gid)
            switch stored.status {
            case .prepared:
                if stored.transType == .msg, let delay = try? MsgCustomData.parse(request.customData).delay, delay > 0 {
                    // As DTM: the pass a Submit starts uses the Submit's custom data, so a delay
                    // set only at Submit (the SDK's DoAndSubmit + SetDelay) postpones the first
                    // delivery to now + delay; the stored row keeps Prepare's custom data.
                    let until = now.addingTimeInterval(Double(delay))
                    guard try await move(stored, to: .submitted, lease: true, nextCronTime: until) != nil else { continue }
                    return
                }
                guard let moved = try await move(stored, to: .submitted, lease: true) else { continue }
                return try await run(ScheduledPass(global: moved, permit: permit), wait: wait, submitting: true)
            case .submitted:
                return try await run(ScheduledPass(global: stored, permit: permit), wait: wait, submitting: true)
            default:
                throw DtmError.failure("current status '\(stored.status.rawValue)', cannot sumbmit. FAILURE")
            }
        }
        throw raceLost(request.gid)
    }

    /// Creates a `prepared` transaction (msg with its branches); repeating it is a no-op.
    public func prepare(_ request: TransRequest) async throws(DtmError) {
        let checked = try Validation.newTransaction(request, limits: config.limits)
        let permit = try admit()
        if try await createIfNew(checked, status: .prepared, permit: permit) != nil { return }
        let stored = try await existing(request.gid)
        if stored.status != .prepared {
            throw DtmError.failure("current status '\(stored.status.rawValue)', cannot prepare. FAILURE")
        }
    }

    /// Rolls back: a prepared msg becomes `failed`; a prepared or aborting tcc/xa becomes
    /// `aborting` (with the request's reason) and its cancel/rollback branches are called.
    public func abort(_ request: TransRequest) async throws(DtmError) {
        try Validation.gid(request.gid)
        try Validation.text(request.rollbackReason, field: "rollback_reason", max: config.limits.maxReasonBytes)
        let permit = try admit()
        for _ in 0..<Self.raceRetries {
            let stored = try await existing(request.gid)
            if stored.transType == .msg && stored.status == .prepared {
                guard try await move(stored, to: .failed) != nil else { continue }
                return
            }
            let abortable = request.transType == TransType.tcc.rawValue || request.transType == TransType.xa.rawValue
            guard abortable, stored.status == .prepared || stored.status == .aborting else {
                throw DtmError.failure("trans type: '\(stored.transType.rawValue)' current status "
                                       + "'\(stored.status.rawValue)', cannot abort. FAILURE")
            }
            guard let moved = try await move(stored, to: .aborting, reason: request.rollbackReason, lease: true)
            else { continue }
            let wait = request.options.waitResult || stored.options.waitResult
            return try await run(ScheduledPass(global: moved, permit: permit), wait: wait, submitting: false)
        }
        throw raceLost(request.gid)
    }

    /// Adds a tcc (cancel + confirm), xa (rollback + commit) or workflow (one progress row)
    /// branch to a `prepared` transaction. A duplicate (gid, branch_id, op) is a storage error.
    public func registerBranch(_ registration: BranchRegistration) async throws(DtmError) {
        let rows = try Self.branchRows(registration, limits: config.limits, now: now)
        let permit = try admit()
        driver.fresh.forget(registration.gid)
        defer { withExtendedLifetime(permit) {} }
        do {
            try await store.appendBranches(gid: registration.gid, expecting: .prepared, branches: rows, now: now)
        } catch .notFound {
            throw DtmError.failure("no trans with gid: \(registration.gid) status: prepared found FAILURE")
        } catch {
            throw DtmError.storage(error)
        }
    }

    /// Creates a `prepared` workflow, or returns the stored one with all its rows, whatever
    /// its status. Nothing is processed: only the cron resumes workflows.
    public func prepareWorkflow(_ request: TransRequest) async throws(DtmError) -> WorkflowProgress {
        let checked = try Validation.newTransaction(request, limits: config.limits)
        guard checked.transType == .workflow else {
            throw DtmError.invalidArgument("trans_type: prepareWorkflow needs 'workflow', got '\(request.transType)'")
        }
        let permit = try admit()
        if let created = try await createIfNew(checked, status: .prepared, permit: permit) {
            return WorkflowProgress(transaction: created.global, progresses: [])
        }
        let stored = try await existing(request.gid, quarantined: true)
        do {
            return WorkflowProgress(transaction: stored, progresses: try await store.findBranches(gid: request.gid))
        } catch {
            throw DtmError.storage(error)
        }
    }

    /// Operator tool: marks an unfinished transaction `failed` without compensating anything.
    public func forceStop(gid: String) async throws(DtmError) {
        try Validation.gid(gid)
        for _ in 0..<Self.raceRetries {
            let stored = try await existing(gid, quarantined: true)
            if stored.isQuarantined && !stored.status.isFinished {
                do {
                    try await store.forceFail(gid: gid, reason: "force-stopped while quarantined: \(stored.quarantine)",
                                              now: now)
                    return
                } catch .notFound {
                    continue
                } catch {
                    throw DtmError.storage(error)
                }
            }
            if stored.status.isFinished {
                throw DtmError.failure("global transaction force stop error. status: \(stored.status.rawValue). "
                                       + "error: FAILURE")
            }
            if try await move(stored, to: .failed) != nil { return }
        }
        throw raceLost(gid)
    }

    /// Operator tool: makes the transaction due now, whatever its status.
    public func resetNextCronTime(gid: String) async throws(DtmError) {
        try Validation.gid(gid)
        driver.fresh.forget(gid)
        do {
            try await store.resetNextCronTime(gid: gid, now: now)
        } catch .notFound {
            throw Self.unknownGid(gid)
        } catch {
            throw DtmError.storage(error)
        }
    }

    // MARK: - Steps

    private func submitWorkflow(_ request: TransRequest) async throws(DtmError) {
        try Validation.gid(request.gid)
        for key in ["rollback_reason", "result"] {
            try Validation.text(request.reqExtra[key] ?? "", field: "req_extra.\(key)",
                                max: key == "result" ? config.limits.maxCustomDataBytes : config.limits.maxReasonBytes)
        }
        let text = request.reqExtra["status"] ?? ""
        guard let status = GlobalStatus(rawValue: text), status.isFinished else {
            throw DtmError.invalidArgument("req_extra.status: must be 'succeed' or 'failed', got '\(text)'")
        }
        var update = GlobalUpdate.transition(to: status, reason: request.reqExtra["rollback_reason"],
                                             result: request.reqExtra["result"], now: now)
        update.transType = .workflow
        driver.fresh.forget(request.gid)
        do {
            try await store.changeStatus(gid: request.gid, from: .prepared, to: status, update: update, now: now)
        } catch .notFound {
            // DTM answers 500 here too (a panic in its handler).
            throw DtmError.storage(.notFound("no trans with gid: \(request.gid) status: prepared found"))
        } catch {
            throw DtmError.storage(error)
        }
    }

    /// Inserts the transaction if the gid is new; nil when it already existed.
    private func createIfNew(_ checked: CheckedRequest, status: GlobalStatus,
                             permit: AdmissionPermit?) async throws(DtmError) -> ScheduledPass? {
        let now = self.now
        let request = checked.request
        var global = GlobalTransaction(gid: request.gid, transType: checked.transType, status: status,
                                       queryPrepared: request.queryPrepared, transProtocol: checked.transProtocol,
                                       createTime: now, options: request.options, customData: request.customData,
                                       rollbackReason: request.rollbackReason)
        global.nextCronInterval = global.resetInterval(config)
        global.nextCronTime = now.addingTimeInterval(Double(global.nextCronInterval))
        global.owner = driver.owner
        let branches = try await generateBranches(checked, now: now)
        // A submitted one goes to its first pass at once. Marked before the insert: whoever finds
        // the row afterwards forgets the mark.
        let handedOver = status == .submitted
        if handedOver { driver.fresh.mark(request.gid) }
        do {
            if try await store.saveNew(global, branches: branches) {
                return ScheduledPass(global: global, branches: branches, permit: permit, created: handedOver)
            }
            if handedOver { driver.fresh.forget(request.gid) }
            return nil
        } catch {
            if handedOver { driver.fresh.forget(request.gid) }
            throw DtmError.storage(error)
        }
    }

    /// The stored transaction; a quarantined one only when `quarantined` (operator tools and
    /// reads), otherwise refused for good.
    private func existing(_ gid: String, quarantined: Bool = false) async throws(DtmError) -> GlobalTransaction {
        // What this request does next may change the row under a pass that has not started.
        driver.fresh.forget(gid)
        let found: GlobalTransaction?
        do { found = try await store.findGlobal(gid: gid) } catch { throw DtmError.storage(error) }
        guard let found else { throw Self.unknownGid(gid) }
        if found.isQuarantined && !quarantined {
            throw DtmError.failure("transaction \(gid) is quarantined (\(found.quarantine)); only forceStop "
                                   + "applies to it. FAILURE")
        }
        return found
    }

    /// A permit for new work, or `.overloaded` when the coordinator holds as much as it may.
    private func admit() throws(DtmError) -> AdmissionPermit? {
        guard let admission else { return nil }
        guard let permit = admission.enter() else {
            throw DtmError.overloaded("coordinator busy: \(admission.limit) transactions in progress "
                                      + "(--max-pending-transactions); retry in a second")
        }
        return permit
    }

    /// CAS from the stored status; nil when someone else changed it first. `lease` pushes
    /// next_cron_time one reset interval ahead, so the cron leaves the request's own pass alone.
    private func move(_ stored: GlobalTransaction, to status: GlobalStatus, reason: String? = nil,
                      lease: Bool = false, nextCronTime: Date? = nil) async throws(DtmError) -> GlobalTransaction? {
        let now = self.now
        var update = GlobalUpdate.transition(to: status, reason: reason, now: now)
        update.transType = stored.transType
        if lease {
            update.nextCronTime = nextCronTime ?? now.addingTimeInterval(Double(stored.resetInterval(config)))
            update.owner = driver.owner
        }
        do {
            try await store.changeStatus(gid: stored.gid, from: stored.status, to: status, update: update, now: now)
        } catch .notFound {
            return nil
        } catch {
            throw DtmError.storage(error)
        }
        var moved = stored
        moved.apply(status: status, update, now: now)
        return moved
    }

    /// Processes now and reports the outcome (wait_result), or hands the work to the scheduler.
    private func run(_ pass: ScheduledPass, wait: Bool, submitting: Bool) async throws(DtmError) {
        guard wait else { return await schedule(pass) }
        let report = await runNow(pass)
        var final = report.global
        if report.lostRace {
            final = (try? await store.findGlobal(gid: final.gid)).flatMap { $0 } ?? final
            // Another coordinator (or request) is driving it: its outcome is not known yet, and a
            // FAILURE would tell the SDK the transaction failed for good.
            if !final.status.isFinished { throw DtmError.ongoing(DtmText.ongoing) }
        } else if let error = report.storeError {
            throw DtmError.storage(error)
        }
        if let error = Self.processingError(report.lastUnsuccessful, final.transType) { throw error }
        if submitting && final.status != .succeed {
            throw DtmError.failure(final.rollbackReason.isEmpty ? "wait result not return success: FAILURE"
                                                                : DtmText.withFailure(final.rollbackReason))
        }
    }

    /// Spec 5.6: tcc and xa report the branch answer that stopped the pass; msg reports
    /// errors but not ONGOING; saga never (its outcome is the final status).
    static func processingError(_ result: BranchResult?, _ transType: TransType) -> DtmError? {
        guard let result, transType == .tcc || transType == .xa || transType == .msg else { return nil }
        switch result {
        case .success: return nil
        case .ongoing: return transType == .msg ? nil : .ongoing(DtmText.ongoing)
        case .failure(let message): return .failure(DtmText.willRetry(DtmText.withFailure(message)))
        case .error(let message): return .internal(DtmText.willRetry(message))
        }
    }

    static func unknownGid(_ gid: String) -> DtmError { .notFound("no TransGlobal with gid: \(gid) found") }

    private func raceLost(_ gid: String) -> DtmError {
        .storage(.notFound("gid \(gid): status kept changing concurrently, try again"))
    }
}
