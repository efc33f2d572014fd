import DtmEngine
import Foundation
import Hummingbird

/// The admin JSON API under `/api/admin` (the data of the `/admin` web page): transactions with
/// filters and paging, one transaction with its branches, its attempt history and why it is not
/// finished, and the force-stop and retry-now buttons. Behind the same authentication as every
/// other route. Errors answer `{"error": "..."}` with the HTTP status of the API's error mapping.
extension DtmHTTPAPI {
    static let adminPrefix = "/api/admin/transactions"
    /// Page size of the listing when `limit` is not given.
    static let adminDefaultLimit: Int64 = 50

    var adminRoutes: [APIRoute] {
        let engine = self.engine, admin = self.admin, redact = redactQuery
        let p = Self.adminPrefix
        return [
            APIRoute.admin(.get, p) { call throws(DtmError) in
                let filter = try AdminListFilter(call)
                if let prefix = call.principal.gidPrefix, !filter.gidPrefix.hasPrefix(prefix) {
                    throw DtmError.permissionDenied(
                        "gid_prefix: must start with this client's prefix '\(prefix)' (JWT claim \(DtmClaims.gidPrefixClaim))")
                }
                let page = try await admin.list(filter.query)
                return .object([("transactions", .array(page.rows.map(AdminJSON.summary))),
                                ("next_position", .string(page.nextPosition))])
            },
            APIRoute.admin(.get, "\(p)/:gid") { call throws(DtmError) in
                try call.principal.permit(gid: call.pathGid)
                let detail = try await admin.detail(gid: call.pathGid)
                return AdminJSON.detail(detail, redact: redact)
            },
            APIRoute.admin(.post, "\(p)/:gid/force-stop") { call throws(DtmError) in
                try call.principal.permit(gid: call.pathGid)
                try await engine.forceStop(gid: call.pathGid)
                return nil
            },
            APIRoute.admin(.post, "\(p)/:gid/retry-now") { call throws(DtmError) in
                try call.principal.permit(gid: call.pathGid)
                try await admin.retryNow(gid: call.pathGid)
                return nil
            },
        ]
    }
}

extension APIRoute {
    /// An admin route: nil from the handler is `{"dtm_result":"SUCCESS"}`; errors are `{"error": "..."}`.
    static func admin(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping Handler) -> APIRoute {
        APIRoute(method, path, raw: { call in
            do throws(DtmError) {
                guard let body = try await handler(call) else { return HTTPAnswer.success.response }
                return HTTPAnswer(status: .ok, body: body).response
            } catch {
                let mapped = HTTPAnswer(error)
                return HTTPAnswer(status: mapped.status, body: .object([("error", .string(error.message))]),
                                  headers: mapped.headers).response
            }
        })
    }
}

/// The listing's query parameters, checked.
struct AdminListFilter {
    var gidPrefix: String
    var query: GlobalQuery

    /// Query parameter `name` as one of `T`'s values; nil when absent or empty (any).
    private static func oneOf<T: RawRepresentable & CaseIterable>(_: T.Type, _ name: String, _ call: APICall)
        throws(DtmError) -> T? where T.RawValue == String {
        let text = call.query(name)
        if text.isEmpty { return nil }
        guard let value = T(rawValue: text) else {
            throw DtmError.invalidArgument("\(name): must be one of "
                + T.allCases.map(\.rawValue).joined(separator: ", ") + " (got '\(text)')")
        }
        return value
    }

    init(_ call: APICall) throws(DtmError) {
        let status = try Self.oneOf(GlobalStatus.self, "status", call)
        let transType = try Self.oneOf(TransType.self, "trans_type", call)
        let limit = try call.integer("limit", default: DtmHTTPAPI.adminDefaultLimit)
        guard (1...Int64(CoordinatorAdmin.maxLimit)).contains(limit) else {
            throw DtmError.invalidArgument("limit: must be between 1 and \(CoordinatorAdmin.maxLimit) (got \(limit))")
        }
        let position = try call.optionalInteger("position")
        gidPrefix = call.query("gid_prefix")
        query = GlobalQuery(status: status, transType: transType, createdFrom: try Self.time(call, "created_from"),
                            createdTo: try Self.time(call, "created_to"), gidPrefix: gidPrefix,
                            position: position, limit: Int(limit))
    }

    /// An RFC 3339 time (`2026-11-29T18:00:00Z`, fraction and offset allowed); nil when absent.
    static func time(_ call: APICall, _ name: String) throws(DtmError) -> Date? {
        let text = call.query(name)
        if text.isEmpty { return nil }
        guard let date = parseRFC3339(text) else {
            throw DtmError.invalidArgument("\(name): expected an RFC 3339 time such as 2026-01-31T08:00:00Z (got '\(text)')")
        }
        return date
    }

    static func parseRFC3339(_ text: String) -> Date? {
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        if let date = plain.date(from: text) { return date }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return fractional.date(from: text)
    }
}

/// One transaction as the admin page shows it.
public struct TransactionDetail: Sendable {
    public var global: GlobalTransaction
    public var branches: [BranchRecord]
    /// Oldest first.
    public var attempts: [BranchAttempt]
    /// The retry interval and timeout that apply (the transaction's own, else the server's).
    public var retryInterval: Int64
    public var timeoutToFail: Int64
    /// nil for a finished transaction.
    public var pending: PendingExplanation?
}

/// Why a transaction is not finished.
public struct PendingExplanation: Sendable, Equatable {
    public var nextRetryTime: Date
    public var lastError: String
    public var retryCount: Int
    public var leaseOwner: String
    /// Until when `leaseOwner` holds the transaction (its next_cron_time: the lease and the retry
    /// time are the same column); nil without an owner.
    public var leaseUntil: Date?
    /// One sentence for people.
    public var explanation: String
}

extension CoordinatorAdmin {
    /// A page of transactions, newest first.
    func list(_ query: GlobalQuery) async throws(DtmError) -> Page<GlobalTransaction> {
        let rows = try await storage { () async throws(StoreError) in try await store.scanGlobals(query) }
        return Page(rows: rows, nextPosition: rows.count < query.limit ? "" : rows.last?.id.map(String.init) ?? "")
    }

    /// Everything the admin page shows of one transaction; `.notFound` for an unknown gid.
    public func detail(gid: String) async throws(DtmError) -> TransactionDetail {
        let (found, branches, attempts) = try await storage { () async throws(StoreError) in
            guard let global = try await store.findGlobal(gid: gid) else {
                return (GlobalTransaction?.none, [BranchRecord](), [BranchAttempt]())
            }
            return (global, try await store.findBranches(gid: gid), try await store.findAttempts(gid: gid))
        }
        guard let global = found else { throw DtmError.notFound("no transaction with gid '\(gid)'") }
        return TransactionDetail(global: global, branches: branches, attempts: attempts,
                                 retryInterval: global.resetInterval(config),
                                 timeoutToFail: global.effectiveTimeout(config),
                                 pending: Self.pending(global, attempts: attempts, config: config, now: clock.now()))
    }

    /// Makes an unfinished transaction due now and wakes the retry loop. `.notFound` for an
    /// unknown gid; `.failure` (409) for a finished one, which nothing would drive.
    public func retryNow(gid: String) async throws(DtmError) {
        guard let global = try await find(gid: gid) else {
            throw DtmError.notFound("no transaction with gid '\(gid)'")
        }
        if global.status.isFinished {
            throw DtmError.failure("transaction '\(gid)' is \(global.status.rawValue): a finished transaction is not retried")
        }
        try await storage { () async throws(StoreError) in try await store.resetNextCronTime(gid: gid, now: clock.now()) }
        await wake()
    }

    /// Why `global` is not finished, from its stored state and attempt history; nil once finished.
    static func pending(_ global: GlobalTransaction, attempts: [BranchAttempt], config: EngineConfig,
                        now: Date) -> PendingExplanation? {
        guard !global.status.isFinished else { return nil }
        let failed = attempts.filter { $0.result != .success }
        let last = attempts.last
        let lastError = failed.last.map { $0.message.isEmpty ? $0.result.rawValue.uppercased() : $0.message } ?? ""
        let at = JSONText.rfc3339(global.nextCronTime)
        var sentence: String
        if global.isQuarantined {
            sentence = "quarantined: its stored row cannot be read (\(global.quarantine)); force-stop ends it"
        } else if global.status == .prepared {
            sentence = global.transType == .msg
                ? "prepared: waiting for the client to submit (at \(at) the coordinator asks its query_prepared URL)"
                : "prepared: waiting for the client to submit (timeout at \(at))"
        } else if global.nextCronTime <= now {
            sentence = "due since \(at): waiting for a coordinator to pick it up"
        } else if let last, last.result != .success {
            let count = attempts.count { $0.branchID == last.branchID && $0.op == last.op }
            let what = last.branchID == "00" && last.op != .action
                ? "the \(last.op == .msg ? "query_prepared check" : "workflow resume")"
                : "branch \(last.branchID) \(last.op)"
            sentence = "waiting for retry at \(at) after \(what) answered \(last.result.rawValue.uppercased()) "
                + "(attempt \(count))"
        } else if !global.owner.isEmpty {
            sentence = "leased by coordinator \(global.owner) until \(at)"
        } else {
            sentence = "waiting for the next check at \(at)"
        }
        if global.status == .aborting && !global.rollbackReason.isEmpty {
            sentence += "; aborting because: \(clipText(global.rollbackReason, max: BranchAttempt.maxMessageBytes))"
        }
        return PendingExplanation(nextRetryTime: global.nextCronTime, lastError: lastError, retryCount: failed.count,
                                  leaseOwner: global.owner, leaseUntil: global.owner.isEmpty ? nil : global.nextCronTime,
                                  explanation: sentence)
    }

    private func storage<T>(_ body: () async throws(StoreError) -> T) async throws(DtmError) -> T {
        do { return try await body() } catch { throw DtmError.storage(error) }
    }
}

/// The admin API's JSON shapes (member order fixed, times RFC 3339 UTC or "" when unset).
enum AdminJSON {
    static func time(_ date: Date?) -> JSONText { .string(date.map(JSONText.rfc3339) ?? "") }

    static func summaryMembers(_ global: GlobalTransaction) -> [(String, JSONText)] {
        [
            ("gid", .string(global.gid)), ("trans_type", .string(global.transType.rawValue)),
            ("status", .string(global.status.rawValue)), ("create_time", time(global.createTime)),
            ("update_time", time(global.updateTime)), ("finish_time", time(global.finishTime)),
            ("next_cron_time", time(global.nextCronTime)), ("owner", .string(global.owner)),
            ("rollback_reason", .string(global.rollbackReason)),
        ]
    }

    static func summary(_ global: GlobalTransaction) -> JSONText {
        .object(summaryMembers(global))
    }

    static func detail(_ detail: TransactionDetail, redact: Bool) -> JSONText {
        let global = detail.global
        let retryCount = detail.attempts.count { $0.result != .success }
        let transaction = summaryMembers(global) + [
            ("retry_interval", .int(detail.retryInterval)),
            ("next_cron_interval", .int(global.nextCronInterval)),
            ("timeout_to_fail", .int(detail.timeoutToFail)),
            ("retry_limit", .int(global.options.retryLimit)),
            ("retry_count", .int(Int64(retryCount))),
            ("custom_data", .string(global.customData)),
        ]
        let url: (String) -> String = { redact ? Redaction.url($0) : $0 }
        let branches = detail.branches.map { branch -> JSONText in
            .object([("branch_id", .string(branch.branchID)), ("op", .string(branch.op.rawValue)),
                     ("url", .string(url(branch.url))), ("status", .string(branch.status.rawValue)),
                     ("create_time", time(branch.createTime)), ("finish_time", time(branch.finishTime))])
        }
        let attempts = detail.attempts.map { attempt -> JSONText in
            .object([("branch_id", .string(attempt.branchID)), ("op", .string(attempt.op.rawValue)),
                     ("url", .string(url(attempt.url))), ("start_time", time(attempt.startTime)),
                     ("duration_ms", .int(attempt.durationMs)), ("result", .string(attempt.result.rawValue)),
                     ("error", .string(attempt.message)), ("owner", .string(attempt.owner))])
        }
        let pending: JSONText = detail.pending.map { pending in
            .object([("next_retry_time", time(pending.nextRetryTime)), ("last_error", .string(pending.lastError)),
                     ("retry_count", .int(Int64(pending.retryCount))), ("lease_owner", .string(pending.leaseOwner)),
                     ("lease_until", time(pending.leaseUntil)), ("explanation", .string(pending.explanation))])
        } ?? .null
        return .object([("transaction", .object(transaction)), ("branches", .array(branches)),
                        ("attempts", .array(attempts)), ("pending", pending)])
    }
}
