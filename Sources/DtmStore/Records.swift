import DtmEngine
import Foundation

// Conversions between the model and SQL rows. Writes are encoded on the caller's task
// (JSON included), so the writer thread only binds and steps.

extension Date {
    /// The stored form of a time: whole microseconds since 1970-01-01 UTC.
    /// Saturates instead of trapping: a date beyond ±292,000 years is stored as the extreme.
    var microsecondsSince1970: Int64 {
        let value = (timeIntervalSince1970 * 1_000_000).rounded()
        guard value.isFinite else { return value < 0 ? .min : .max }
        return value >= 9.2e18 ? .max : value <= -9.2e18 ? .min : Int64(value)
    }

    init(microsecondsSince1970 value: Int64) {
        self.init(timeIntervalSince1970: Double(value) / 1_000_000)
    }
}

extension SQLValue {
    static func time(_ date: Date) -> SQLValue { .int(date.microsecondsSince1970) }
    static func time(_ date: Date?) -> SQLValue { date.map(time) ?? .null }
    static func text(_ value: String?) -> SQLValue { value.map(text) ?? .null }
    static func int(_ value: Int64?) -> SQLValue { value.map(int) ?? .null }
}

extension Row {
    func time(_ column: Int32) -> Date { Date(microsecondsSince1970: int(column)) }
    func optionalTime(_ column: Int32) -> Date? { optionalInt(column).map(Date.init(microsecondsSince1970:)) }

    /// A column holding the raw value of a model enum; an unknown value means the file was
    /// written by something else, which is reported rather than guessed around.
    func value<T: RawRepresentable>(_ column: Int32, as type: T.Type, _ name: String) throws(StoreError) -> T
        where T.RawValue == String {
        let raw = text(column)
        guard let value = T(rawValue: raw) else { throw .database("unknown \(name) '\(raw)' in the database") }
        return value
    }
}

enum GlobalColumns {
    static let select = """
        id, gid, trans_type, status, query_prepared, protocol, create_time, update_time, finish_time, \
        rollback_time, options, custom_data, next_cron_interval, next_cron_time, owner, ext_data, result, \
        rollback_reason
        """

    static func bindings(_ global: GlobalTransaction) throws(StoreError) -> [SQLValue] {
        [
            .text(global.gid), .text(global.transType.rawValue), .text(global.status.rawValue),
            .text(global.queryPrepared), .text(global.transProtocol.rawValue),
            .time(global.createTime), .time(global.updateTime), .time(global.finishTime),
            .time(global.rollbackTime), .text(global.options.jsonText), .text(global.customData),
            .int(global.nextCronInterval), .time(global.nextCronTime), .text(global.owner),
            .text(global.extData), .text(global.result), .text(global.rollbackReason),
        ]
    }

    /// Never fails: a column that cannot be read as written gets a neutral value and the row
    /// comes back quarantined with the reason, so one bad row cannot stop listings, queries or
    /// the claim of every other transaction.
    static func decode(_ row: borrowing Row) -> GlobalTransaction {
        var problems: [String] = []
        func value<T: RawRepresentable>(_ column: Int32, _ name: String, fallback: T) -> T where T.RawValue == String {
            let raw = row.text(column)
            if let value = T(rawValue: raw) { return value }
            problems.append("unknown \(name) '\(raw)'")
            return fallback
        }
        let optionsText = row.text(10)
        var options = TransOptions()
        if !optionsText.isEmpty {
            if let decoded = TransOptions(jsonText: optionsText) {
                options = decoded
            } else {
                problems.append("cannot decode options '\(optionsText)'")
            }
        }
        var global = GlobalTransaction(
            id: row.int(0), gid: row.text(1),
            transType: value(2, "trans_type", fallback: TransType.saga),
            status: value(3, "status", fallback: GlobalStatus.prepared),
            queryPrepared: row.text(4),
            transProtocol: value(5, "protocol", fallback: TransProtocol.http),
            createTime: row.time(6), updateTime: row.time(7), finishTime: row.optionalTime(8),
            rollbackTime: row.optionalTime(9), options: options,
            customData: row.text(11), nextCronInterval: row.int(12), nextCronTime: row.time(13),
            owner: row.text(14), extData: row.text(15), result: row.text(16), rollbackReason: row.text(17))
        global.quarantine = problems.joined(separator: "; ")
        return global
    }
}

enum BranchColumns {
    static let select = """
        id, gid, url, bin_data, branch_id, op, status, create_time, update_time, finish_time, rollback_time
        """

    /// The row of `branch`, stored under `gid` (the transaction's, whatever the record says).
    static func bindings(_ branch: BranchRecord, gid: String) -> [SQLValue] {
        [
            .text(gid), .text(branch.url), .blob(branch.binData), .text(branch.branchID),
            .text(branch.op.rawValue), .text(branch.status.rawValue), .time(branch.createTime),
            .time(branch.updateTime), .time(branch.finishTime), .time(branch.rollbackTime),
        ]
    }

    static func decode(_ row: borrowing Row) throws(StoreError) -> BranchRecord {
        BranchRecord(
            id: row.int(0), gid: row.text(1), url: row.text(2), binData: row.blob(3),
            branchID: row.text(4), op: BranchOp(row.text(5)),
            status: try row.value(6, as: BranchStatus.self, "branch status"),
            createTime: row.time(7), updateTime: row.time(8), finishTime: row.optionalTime(9),
            rollbackTime: row.optionalTime(10))
    }
}

enum KVColumns {
    static let select = "id, cat, k, v, version, create_time, update_time"

    static func decode(_ row: borrowing Row) -> KVRecord {
        KVRecord(id: row.int(0), cat: row.text(1), key: row.text(2), value: row.text(3),
                 version: row.int(4), createTime: row.time(5), updateTime: row.time(6))
    }
}
