import DtmEngine
import DtmPostgres
import DtmStore
import DtmTestSupport
import Foundation
import Logging
import Testing

/// A database file under the temporary directory, unique per test.
struct TemporaryDatabase: Sendable {
    let path: String

    init(_ name: String = "store") {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("dtm-\(name)-\(UUID().uuidString).sqlite").path
    }

    /// Removes the file and SQLite's side files.
    func remove() { removeDatabaseFiles(path) }
}

/// A store under test and how to dispose of it.
struct OpenedStore: Sendable {
    let store: any TransactionStore
    let dispose: @Sendable () async -> Void
}

/// Makes an empty store. The conformance suite runs once per factory in `storeFactories`:
/// a new implementation (e.g. PostgreSQL on a fresh schema) is tested by adding one here.
struct StoreFactory: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable () async throws -> OpenedStore

    var testDescription: String { name }

    static let sqlite = StoreFactory(name: "SQLite") {
        let file = TemporaryDatabase("conformance")
        let store = try openSQLiteStore(file.path)
        return OpenedStore(store: store) {
            store.close()
            file.remove()
        }
    }
}

extension StoreFactory {
    /// The engine's in-memory store, which the engine's own tests run on.
    static let inMemory = StoreFactory(name: "in-memory") {
        OpenedStore(store: InMemoryStore()) {}
    }
}

extension StoreFactory {
    /// A schema of its own in this test process's PostgreSQL database (on the shared throw-away
    /// cluster), dropped afterwards. A schema per store instead of a database per store: creating
    /// a database copies and fsyncs a template, a second or more each under load.
    static let postgres = StoreFactory(name: "PostgreSQL") {
        let database = try await PostgresTestDatabase.shared()
        let schema = "s_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased())"
        let store = try openPostgresStore(database.url + "?sslmode=disable&schema=\(schema)")
        guard await store.waitUntilReady(timeout: .seconds(60)) else {
            await store.close()
            throw StoreError.database("PostgreSQL store in \(database.url) did not become ready")
        }
        return OpenedStore(store: store) {
            await store.close()
            _ = try? await database.cluster.psql("DROP SCHEMA IF EXISTS \(schema) CASCADE", database: database.name)
        }
    }
}

/// One database for the store tests of this process, on the shared cluster; it goes with the cluster.
enum PostgresTestDatabase {
    private static let holder = Holder()

    private actor Holder {
        var task: Task<TestDatabase, any Error>?
        func get() async throws -> TestDatabase {
            if let task { return try await task.value }
            let task = Task { try await TestPostgres.shared().createDatabase() }
            self.task = task
            return try await task.value
        }
    }

    static func shared() async throws -> TestDatabase { try await holder.get() }
}

/// A PostgresStore that logs only warnings and errors (everything with DTM_PG_DEBUG set).
func openPostgresStore(_ url: String) throws(StoreError) -> PostgresStore {
    var logger = Logger(label: "dtm.store.postgres")
    logger.logLevel = ProcessInfo.processInfo.environment["DTM_PG_DEBUG"] != nil ? .trace : .warning
    return try PostgresStore(url: url, logger: logger)
}

let storeFactories: [StoreFactory] = [.sqlite, .inMemory, .postgres]

/// Runs `body` with a fresh store from `factory` and disposes of it afterwards.
func withStore(_ factory: StoreFactory,
               _ body: (any TransactionStore) async throws -> Void) async throws {
    let opened = try await factory.make()
    do {
        try await body(opened.store)
    } catch {
        await opened.dispose()
        throw error
    }
    await opened.dispose()
}

/// An SQLiteStore that logs only warnings and errors, to keep test output readable.
func openSQLiteStore(_ path: String) throws(StoreError) -> SQLiteStore {
    var logger = Logger(label: "dtm.store.sqlite")
    logger.logLevel = .warning
    return try SQLiteStore(path: path, logger: logger)
}

/// Runs `body` with an SQLiteStore on a temporary file, removed afterwards.
func withSQLiteStore(_ body: (SQLiteStore, TemporaryDatabase) async throws -> Void) async throws {
    let file = TemporaryDatabase()
    defer { file.remove() }
    let store = try openSQLiteStore(file.path)
    defer { store.close() }
    try await body(store, file)
}

/// A fixed time at microsecond precision, which stores keep exactly.
let t0 = Date(timeIntervalSince1970: 1_700_000_000.123456)

/// `t0` moved by whole seconds.
func at(_ seconds: Int) -> Date { Date(timeIntervalSince1970: 1_700_000_000.123456 + Double(seconds)) }

func sampleGlobal(_ gid: String, status: GlobalStatus = .prepared, type: TransType = .saga,
                  created: Date = t0, nextCron: Date? = nil) -> GlobalTransaction {
    GlobalTransaction(gid: gid, transType: type, status: status, createTime: created,
                      options: TransOptions(retryInterval: 10), nextCronInterval: 10,
                      nextCronTime: nextCron ?? at(10))
}

func sampleBranches(_ gid: String, count: Int = 2, op: BranchOp = .action) -> [BranchRecord] {
    (0..<count).map { index in
        BranchRecord(gid: gid, url: "grpc://busi:58081/busi.Busi/Step\(index)",
                     binData: [0, UInt8(index), 0, 255], branchID: "0\(index + 1)", op: op, createTime: t0)
    }
}

/// Records as a store returns them, minus the store-assigned ids.
protocol StoreAssignedID {
    var id: Int64? { get set }
}

extension StoreAssignedID {
    var withoutID: Self {
        var copy = self
        copy.id = nil
        return copy
    }
}

extension GlobalTransaction: StoreAssignedID {}
extension BranchRecord: StoreAssignedID {}
extension KVRecord: StoreAssignedID {}

/// Runs a store call and captures its typed outcome, for checks on the error case.
func outcome<T>(_ call: () async throws(StoreError) -> T) async -> Result<T, StoreError> {
    do throws(StoreError) {
        return .success(try await call())
    } catch {
        return .failure(error)
    }
}

extension Result where Failure == StoreError {
    var error: StoreError? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

extension StoreError {
    var isNotFound: Bool { if case .notFound = self { true } else { false } }
    var isUniqueConflict: Bool { if case .uniqueConflict = self { true } else { false } }
    var isDatabase: Bool { if case .database = self { true } else { false } }
}
