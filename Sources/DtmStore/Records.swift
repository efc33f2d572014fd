import DtmEngine
import Foundation

// Conversions between the model and SQL rows. JSON is encoded on the caller's task; the
// writer thread binds straight from the model values (no array of values per row) and steps.

extension Date {
    /// The stored form of a time: whole microseconds since 1970-01-01 UTC.
    /// Saturates instead of trapping: a date beyond ±292,000 years is stored as the extreme.
    package var microsecondsSince1970: Int64 {
        let value = (timeIntervalSince1970 * 1_000_000).rounded()
        guard value.isFinite else { return value < 0 ? .min : .max }
        return value >= 9.2e18 ? .max : value <= -9.2e18 ? .min : Int64(value)
    }

    package init(microsecondsSince1970 value: Int64) {
        self.init(timeIntervalSince1970: Double(value) / 1_000_000)
    }
}

extension SQLValue {
    static func time(_ date: Date) -> SQLValue { .int(date.microsecondsSince1970) }
    static func time(_ date: Date?) -> SQLValue { date.map(time) ?? .null }
    static func text(_ value: String?) -> SQLValue { value.map(text) ?? .null }
    static func int(_ value: Int64?) -> SQLValue { value.map(int) ?? .null }
}

extension Binder {
    mutating func time(_ date: Date) { int(date.microsecondsSince1970) }

    mutating func time(_ date: Date?) {
        if let date { time(date) } else { null() }
    }
}

extension Row {
    func time(_ column: Int32) -> Date { Date(microsecondsSince1970: int(column)) }
}

package enum GlobalColumns {
    package static let select = """
        id, gid, trans_type, status, query_prepared, protocol, create_time, update_time, finish_time, \
        rollback_time, options, custom_data, next_cron_interval, next_cron_time, owner, ext_data, result, \
        rollback_reason
        """

    /// Binds the row of `insertGlobal`; `options` is `global.options.jsonText`, encoded by the caller.
    static func bind(_ binder: inout Binder, _ global: GlobalTransaction, options: String) {
        binder.text(global.gid)
        binder.text(global.transType.rawValue)
        binder.text(global.status.rawValue)
        binder.text(global.queryPrepared)
        binder.text(global.transProtocol.rawValue)
        binder.time(global.createTime)
        binder.time(global.updateTime)
        binder.time(global.finishTime)
        binder.time(global.rollbackTime)
        binder.text(options)
        binder.text(global.customData)
        binder.int(global.nextCronInterval)
        binder.time(global.nextCronTime)
        binder.text(global.owner)
        binder.text(global.extData)
        binder.text(global.result)
        binder.text(global.rollbackReason)
    }

    static func decode(_ row: borrowing Row) -> GlobalTransaction {
        StoredGlobal(
            id: row.int(0), gid: row.text(1), transType: row.text(2), status: row.text(3),
            queryPrepared: row.text(4), transProtocol: row.text(5), createTime: row.int(6),
            updateTime: row.int(7), finishTime: row.optionalInt(8), rollbackTime: row.optionalInt(9),
            options: row.text(10), customData: row.text(11), nextCronInterval: row.int(12),
            nextCronTime: row.int(13), owner: row.text(14), extData: row.text(15), result: row.text(16),
            rollbackReason: row.text(17)
        ).decoded()
    }
}

/// A `trans_global` row as stored (times in microseconds since 1970), before it is read as a
/// model value. Every store reads its rows through this, so all quarantine the same way.
package struct StoredGlobal {
    package var id: Int64
    package var gid: String
    package var transType: String
    package var status: String
    package var queryPrepared: String
    package var transProtocol: String
    package var createTime: Int64
    package var updateTime: Int64
    package var finishTime: Int64?
    package var rollbackTime: Int64?
    package var options: String
    package var customData: String
    package var nextCronInterval: Int64
    package var nextCronTime: Int64
    package var owner: String
    package var extData: String
    package var result: String
    package var rollbackReason: String

    package init(id: Int64, gid: String, transType: String, status: String, queryPrepared: String,
                 transProtocol: String, createTime: Int64, updateTime: Int64, finishTime: Int64?,
                 rollbackTime: Int64?, options: String, customData: String, nextCronInterval: Int64,
                 nextCronTime: Int64, owner: String, extData: String, result: String, rollbackReason: String) {
        self.id = id
        self.gid = gid
        self.transType = transType
        self.status = status
        self.queryPrepared = queryPrepared
        self.transProtocol = transProtocol
        self.createTime = createTime
        self.updateTime = updateTime
        self.finishTime = finishTime
        self.rollbackTime = rollbackTime
        self.options = options
        self.customData = customData
        self.nextCronInterval = nextCronInterval
        self.nextCronTime = nextCronTime
        self.owner = owner
        self.extData = extData
        self.result = result
        self.rollbackReason = rollbackReason
    }

    /// Never fails: a column that cannot be read as written gets a neutral value and the row
    /// comes back quarantined with the reason, so one bad row cannot stop listings, queries or
    /// the claim of every other transaction.
    package func decoded() -> GlobalTransaction {
        var problems: [String] = []
        func value<T: RawRepresentable>(_ raw: String, _ name: String, fallback: T) -> T where T.RawValue == String {
            if let value = T(rawValue: raw) { return value }
            problems.append("unknown \(name) '\(raw)'")
            return fallback
        }
        var decodedOptions = TransOptions()
        if !options.isEmpty {
            if let decoded = TransOptions(jsonText: options) {
                decodedOptions = decoded
            } else {
                problems.append("cannot decode options '\(options)'")
            }
        }
        var global = GlobalTransaction(
            id: id, gid: gid,
            transType: value(transType, "trans_type", fallback: TransType.saga),
            status: value(status, "status", fallback: GlobalStatus.prepared),
            queryPrepared: queryPrepared,
            transProtocol: value(transProtocol, "protocol", fallback: TransProtocol.http),
            createTime: Date(microsecondsSince1970: createTime), updateTime: Date(microsecondsSince1970: updateTime),
            finishTime: finishTime.map(Date.init(microsecondsSince1970:)),
            rollbackTime: rollbackTime.map(Date.init(microsecondsSince1970:)), options: decodedOptions,
            customData: customData, nextCronInterval: nextCronInterval,
            nextCronTime: Date(microsecondsSince1970: nextCronTime), owner: owner, extData: extData,
            result: result, rollbackReason: rollbackReason)
        global.quarantine = problems.joined(separator: "; ")
        return global
    }
}

/// A `trans_branch_op` row as stored (times in microseconds since 1970), before it is read as a
/// model value: shared by the stores, like `StoredGlobal`.
package struct StoredBranch: Sendable {
    package var id: Int64
    package var gid: String
    package var url: String
    package var binData: [UInt8]
    package var branchID: String
    package var op: String
    package var status: String
    package var createTime: Int64
    package var updateTime: Int64
    package var finishTime: Int64?
    package var rollbackTime: Int64?

    package init(id: Int64, gid: String, url: String, binData: [UInt8], branchID: String, op: String,
                 status: String, createTime: Int64, updateTime: Int64, finishTime: Int64?, rollbackTime: Int64?) {
        self.id = id
        self.gid = gid
        self.url = url
        self.binData = binData
        self.branchID = branchID
        self.op = op
        self.status = status
        self.createTime = createTime
        self.updateTime = updateTime
        self.finishTime = finishTime
        self.rollbackTime = rollbackTime
    }

    /// An unknown status means the row was written by something else: reported, not guessed.
    package func decoded() throws(StoreError) -> BranchRecord {
        guard let status = BranchStatus(rawValue: status) else {
            throw .database("unknown branch status '\(self.status)' in the database")
        }
        return BranchRecord(
            id: id, gid: gid, url: url, binData: binData, branchID: branchID, op: BranchOp(op), status: status,
            createTime: Date(microsecondsSince1970: createTime), updateTime: Date(microsecondsSince1970: updateTime),
            finishTime: finishTime.map(Date.init(microsecondsSince1970:)),
            rollbackTime: rollbackTime.map(Date.init(microsecondsSince1970:)))
    }
}

package enum BranchColumns {
    package static let select = """
        id, gid, url, bin_data, branch_id, op, status, create_time, update_time, finish_time, rollback_time
        """

    /// The row of `branch`, stored under `gid` (the transaction's, whatever the record says).
    static func bind(_ binder: inout Binder, _ branch: BranchRecord, gid: String) {
        binder.text(gid)
        binder.text(branch.url)
        binder.blob(branch.binData)
        binder.text(branch.branchID)
        binder.text(branch.op.rawValue)
        binder.text(branch.status.rawValue)
        binder.time(branch.createTime)
        binder.time(branch.updateTime)
        binder.time(branch.finishTime)
        binder.time(branch.rollbackTime)
    }

    static func decode(_ row: borrowing Row) throws(StoreError) -> BranchRecord {
        try StoredBranch(
            id: row.int(0), gid: row.text(1), url: row.text(2), binData: row.blob(3), branchID: row.text(4),
            op: row.text(5), status: row.text(6), createTime: row.int(7), updateTime: row.int(8),
            finishTime: row.optionalInt(9), rollbackTime: row.optionalInt(10)
        ).decoded()
    }
}

package enum KVColumns {
    package static let select = "id, cat, k, v, version, create_time, update_time"

    static func decode(_ row: borrowing Row) -> KVRecord {
        KVRecord(id: row.int(0), cat: row.text(1), key: row.text(2), value: row.text(3),
                 version: row.int(4), createTime: row.time(5), updateTime: row.time(6))
    }
}

/// A `trans_attempt` row as stored (start time in microseconds since 1970): shared by the stores.
package struct StoredAttempt: Sendable {
    package var id: Int64
    package var gid: String
    package var branchID: String
    package var op: String
    package var url: String
    package var startTime: Int64
    package var durationMs: Int64
    package var result: String
    package var message: String
    package var owner: String

    package init(id: Int64, gid: String, branchID: String, op: String, url: String, startTime: Int64,
                 durationMs: Int64, result: String, message: String, owner: String) {
        self.id = id
        self.gid = gid
        self.branchID = branchID
        self.op = op
        self.url = url
        self.startTime = startTime
        self.durationMs = durationMs
        self.result = result
        self.message = message
        self.owner = owner
    }

    /// A result this build does not know reads as `error`: the history is for people to read,
    /// and one odd row must not hide the others.
    package func decoded() -> BranchAttempt {
        BranchAttempt(id: id, gid: gid, branchID: branchID, op: BranchOp(op), url: url,
                      startTime: Date(microsecondsSince1970: startTime), durationMs: durationMs,
                      result: AttemptResult(rawValue: result) ?? .error, message: message, owner: owner)
    }
}

package enum AttemptColumns {
    package static let select = "id, gid, branch_id, op, url, start_time, duration_ms, result, message, owner"

    static func bind(_ binder: inout Binder, _ attempt: BranchAttempt, gid: String) {
        binder.text(gid)
        binder.text(attempt.branchID)
        binder.text(attempt.op.rawValue)
        binder.text(attempt.url)
        binder.time(attempt.startTime)
        binder.int(attempt.durationMs)
        binder.text(attempt.result.rawValue)
        binder.text(attempt.message)
        binder.text(attempt.owner)
    }

    static func decode(_ row: borrowing Row) -> BranchAttempt {
        StoredAttempt(
            id: row.int(0), gid: row.text(1), branchID: row.text(2), op: row.text(3), url: row.text(4),
            startTime: row.int(5), durationMs: row.int(6), result: row.text(7), message: row.text(8),
            owner: row.text(9)
        ).decoded()
    }
}
