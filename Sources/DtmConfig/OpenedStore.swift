import DtmEngine
import DtmPostgres
import DtmStore
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// The store `Store` names, as a service: it is started first and stopped last, after the
/// listeners and the retry loop have stopped writing to it.
public final class OpenedStore: Service, Sendable {
    public let store: any TransactionStore
    /// What logs show: the SQLite path, or the PostgreSQL URL without its password.
    public let description: String
    private let closer: @Sendable () async -> Void
    private let closed = NIOLockedValueBox(false)

    private init(store: any TransactionStore, description: String, close: @escaping @Sendable () async -> Void) {
        self.store = store
        self.description = description
        self.closer = close
    }

    /// Opens an SQLite file, or a PostgreSQL URL. PostgreSQL that is unreachable at start does
    /// not stop the coordinator: it serves (health 503, requests refused) while the store
    /// retries with back-off, and works as soon as the database answers.
    public static func open(_ store: String, logger: Logger) async throws -> OpenedStore {
        guard PostgresConfiguration.isPostgresURL(store) else {
            let sqlite = try SQLiteStore(path: store, logger: logger)
            return OpenedStore(store: sqlite, description: sqlite.path) { sqlite.close() }
        }
        let postgres = try PostgresStore(url: store, logger: logger)
        if await !postgres.waitUntilReady(timeout: .seconds(5)) {
            logger.error("PostgreSQL is not reachable yet; serving with health 503 until it is", metadata: [
                "store": "\(postgres.configuration.redactedURL)"])
        }
        return OpenedStore(store: postgres, description: postgres.configuration.redactedURL) {
            await postgres.close()
        }
    }

    /// Waits for the graceful stop (or cancellation), then closes the store.
    public func run() async {
        try? await gracefulShutdown()
        await close()
    }

    /// Closes the store once; later calls return at once.
    public func close() async {
        let first = closed.withLockedValue { was in defer { was = true }; return !was }
        if first { await closer() }
    }
}
