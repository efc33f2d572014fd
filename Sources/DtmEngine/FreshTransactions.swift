import DtmSync
import Foundation

/// Transactions this process has just created and handed to their first pass, that nothing else
/// in the process has touched since.
///
/// A pass normally starts by reading the transaction back: the copy it was given may be stale
/// (another pass of the gid ran first, an operator stopped it). For a transaction a request has
/// just inserted, the copy is exactly the row it wrote, and that read is the only store access
/// between the request's commit and the first branch call (about 5% of the event loop's work per
/// saga: an SQLite read transaction and a row decode). The read is skipped only while all of this
/// holds:
/// - the row was inserted by this process with the pass's copy (`mark` before the insert, so a
///   request that finds the row afterwards always comes later and can `forget` it);
/// - no other pass of the gid started in this process before this one (each pass start `take`s
///   the mark, so only the first one can find it);
/// - no request or operator tool in this process looked the gid up since (`forget`);
/// - the lease the insert took (owner = this coordinator, next_cron_time a RetryInterval ahead)
///   is still good by more than a second, so no other coordinator can have claimed it.
/// Anything else reads, as before. (An operator tool can still make the row due early: here the
/// retry loop's pass for it takes the mark; on another coordinator sharing the store, that
/// coordinator's pass may run beside this one until the later one's first write fails its owner
/// check, a branch answering both calls, as DTM requires of branches anyway. DTM itself never
/// reads a new transaction back before its first pass.)
public final class FreshTransactions: Sendable {
    /// Marks kept at most; beyond it the set is emptied (only costing reads). A mark lives from a
    /// request's insert to its pass start, so admission control bounds them far below this.
    static let capacity = 200_000
    private let marks = Locked(Set<String>())

    public init() {}

    /// Before inserting `gid`: its first pass may trust the inserted copy.
    func mark(_ gid: String) {
        marks.withLock { marks in
            if marks.count >= Self.capacity { marks.removeAll(keepingCapacity: true) }
            marks.insert(gid)
        }
    }

    /// Something other than the first pass looks at or changes `gid`: passes must read it.
    func forget(_ gid: String) {
        _ = marks.withLock { $0.remove(gid) }
    }

    /// At each pass start: whether `gid` was marked and untouched (the mark is gone afterwards).
    func take(_ gid: String) -> Bool {
        marks.withLock { $0.remove(gid) != nil }
    }

    var count: Int { marks.withLock { $0.count } }
}
