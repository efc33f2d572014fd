import Foundation

/// Deletes an SQLite database file and its side files (WAL, shared memory, rollback journal).
public func removeDatabaseFiles(_ path: String) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        try? FileManager.default.removeItem(atPath: path + suffix)
    }
}
