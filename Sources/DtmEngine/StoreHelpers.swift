import Foundation

extension GlobalUpdate {
    /// The fields DTM writes with a status change: finish_time on `succeed`, rollback_time on
    /// `failed`, and the reason / result only when non-empty.
    public static func transition(to status: GlobalStatus, reason: String? = nil, result: String? = nil,
                                  now: Date) -> GlobalUpdate {
        GlobalUpdate(rollbackReason: reason.flatMap { $0.isEmpty ? nil : $0 },
                     result: result.flatMap { $0.isEmpty ? nil : $0 },
                     finishTime: status == .succeed ? now : nil,
                     rollbackTime: status == .failed ? now : nil)
    }
}

extension GlobalTransaction {
    /// This row after `changeStatus(to: status, update:, now:)` succeeded: what a store
    /// writes and what the engine keeps in memory.
    public mutating func apply(status newStatus: GlobalStatus, _ update: GlobalUpdate, now: Date) {
        status = newStatus
        updateTime = now
        if let value = update.rollbackReason { rollbackReason = value }
        if let value = update.result { result = value }
        if let value = update.finishTime { finishTime = value }
        if let value = update.rollbackTime { rollbackTime = value }
        if let value = update.nextCronInterval { nextCronInterval = value }
        if let value = update.nextCronTime { nextCronTime = value }
        if let value = update.owner { owner = value }
    }
}

extension BranchRecord {
    /// This row after `update` was recorded.
    public mutating func apply(_ update: BranchUpdate, now: Date) {
        status = update.status
        finishTime = update.finishTime
        updateTime = now
    }
}

extension Array where Element == BranchRecord {
    /// Applies updates to the rows they address; updates for missing rows are ignored.
    public mutating func apply(_ updates: [BranchUpdate], now: Date) {
        for update in updates {
            for index in indices where self[index].branchID == update.branchID && self[index].op == update.op {
                self[index].apply(update, now: now)
            }
        }
    }
}
