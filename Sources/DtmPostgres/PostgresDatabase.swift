import DtmEngine
import Logging
import NIOSSL
import PostgresNIO

/// The connection pool and the rules every store call follows: a bounded wait, errors mapped to
/// `StoreError`, and transactions retried when PostgreSQL rolled them back for a serialization
/// failure or a deadlock (nothing of theirs was written, so running them again is safe).
///
/// A failure that may have come after the server received a write (the connection dropped
/// mid-statement) is never retried: the caller gets `.database` and the engine's compare-and-set
/// writes and the cron sort out what did happen.
final class PostgresDatabase: Sendable {
    let client: PostgresClient
    let configuration: PostgresConfiguration
    let logger: Logger
    /// Transactions rolled back by PostgreSQL for a conflict are run again up to this many times.
    static let conflictAttempts = 8
    /// Reads that lost their connection are run again up to this many times.
    static let readAttempts = 4

    init(configuration: PostgresConfiguration, logger: Logger) {
        var config: PostgresClient.Configuration
        if let directory = configuration.socketDirectory {
            let socket = directory + "/.s.PGSQL.\(configuration.port)"
            config = .init(unixSocketPath: socket, username: configuration.username,
                           password: configuration.password, database: configuration.database)
        } else {
            config = .init(host: configuration.host, port: configuration.port, username: configuration.username,
                           password: configuration.password, database: configuration.database,
                           tls: Self.tls(configuration.tls))
        }
        config.options.additionalStartupParameters = [("application_name", configuration.applicationName)]
            + (configuration.schema.map { [("search_path", $0)] } ?? [])
        config.options.maximumConnections = configuration.maxConnections
        config.options.connectTimeout = configuration.connectTimeout
        config.options.keepAliveBehavior = .init(frequency: .seconds(30))
        // postgres-nio logs bound values and the start-up message at debug and trace: never below
        // info, whatever the coordinator's level, so branch headers and passwords stay out of logs.
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .info)
        self.client = PostgresClient(configuration: config, backgroundLogger: quiet)
        self.configuration = configuration
        self.logger = quiet
    }

    private static func tls(_ mode: PostgresConfiguration.TLSMode) -> PostgresClient.Configuration.TLS {
        var unverified = TLSConfiguration.makeClientConfiguration()
        unverified.certificateVerification = .none
        switch mode {
        case .disable: return .disable
        case .prefer: return .prefer(unverified)
        case .require: return .require(unverified)
        case .verifyFull: return .require(.makeClientConfiguration())
        }
    }

    /// Runs `body` on one pooled connection, outside any transaction (each statement commits
    /// on its own). Reads may pass `idempotent: true` to be tried again after a lost connection:
    /// after a server restart every idle connection of the pool is dead until the pool hears of it.
    func withConnection<T: Sendable>(
        _ context: String, idempotent: Bool = false, timeout: Duration? = nil,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws(StoreError) -> T {
        var attempt = 1
        while true {
            do {
                return try await withTimeout(context, timeout ?? configuration.operationTimeout) {
                    try await self.client.withConnection { connection in try await body(connection) }
                }
            } catch let error as StoreError {
                throw error
            } catch {
                let failure = Failure(error, context: context)
                if idempotent, failure.kind == .connection, attempt < Self.readAttempts {
                    try? await Task.sleep(for: .milliseconds(20 * attempt))
                    attempt += 1
                    continue
                }
                throw failure.storeError
            }
        }
    }

    /// Runs `body` in one transaction (BEGIN … COMMIT), rolled back when it throws; run again
    /// when PostgreSQL aborted it for a serialization failure or a deadlock.
    func transaction<T: Sendable>(
        _ context: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws(StoreError) -> T {
        var attempt = 1
        while true {
            do {
                return try await withTimeout(context, configuration.operationTimeout) {
                    try await self.client.withConnection { connection in
                        try await connection.query("BEGIN", logger: self.logger)
                        do {
                            let value = try await body(connection)
                            try await connection.query("COMMIT", logger: self.logger)
                            return value
                        } catch {
                            // A rollback that fails leaves a broken connection, which the pool drops.
                            _ = try? await connection.query("ROLLBACK", logger: self.logger)
                            throw error
                        }
                    }
                }
            } catch let error as StoreError {
                throw error
            } catch {
                let failure = Failure(error, context: context)
                if failure.kind == .conflict, attempt < Self.conflictAttempts {
                    logger.debug("transaction conflict, running it again", metadata: [
                        "operation": "\(context)", "attempt": "\(attempt)", "error": "\(failure.message)",
                    ])
                    attempt += 1
                    try? await Task.sleep(for: .milliseconds(Int.random(in: 1...(5 << min(attempt, 6)))))
                    continue
                }
                throw failure.storeError
            }
        }
    }

    /// Bounds the wait for a connection: while PostgreSQL is unreachable a call fails after the
    /// operation timeout instead of hanging. Work that has started is not abandoned: when it
    /// finishes after the timer, its result (a commit that happened) is what the caller gets.
    private func withTimeout<T: Sendable>(
        _ context: String, _ timeout: Duration, _ work: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        return try await withThrowingTaskGroup(of: Outcome<T>.self) { group in
            group.addTask { .finished(try await work()) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return .timedOut
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                switch next {
                case .finished(let value):
                    return value
                case .timedOut where !Task.isCancelled:
                    // Cancels a lease that is still waiting; a statement in flight runs to its end.
                    group.cancelAll()
                    do {
                        if case .finished(let value)? = try await group.next() { return value }
                    } catch {}
                    throw StoreError.database("PostgreSQL did not answer \(context) within \(timeout) "
                                              + "(\(configuration.redactedURL) unreachable or overloaded)")
                case .timedOut:
                    continue
                }
            }
            throw StoreError.database("\(context) was cancelled")
        }
    }

    private enum Outcome<T: Sendable>: Sendable {
        case finished(T)
        case timedOut
    }
}

/// A driver error read for what the store needs to know: which `StoreError` it is and whether
/// trying again is safe. Messages name the SQLSTATE and the server's text, never bound values
/// (they can hold branch headers).
struct Failure {
    enum Kind { case conflict, unique, connection, other }
    let kind: Kind
    let message: String

    init(_ error: any Error, context: String) {
        if let error = error as? PSQLError {
            if let state = error.serverInfo?[.sqlState] {
                let text = error.serverInfo?[.message] ?? ""
                message = "\(context): PostgreSQL error \(state): \(text)"
                switch state {
                case "23505": kind = .unique
                case "40001", "40P01": kind = .conflict
                case "57P01", "57P02", "57P03": kind = .connection
                default: kind = state.hasPrefix("08") ? .connection : .other
                }
                return
            }
            // PSQLError's own description is deliberately vague; its code says what happened.
            let underlying = error.underlying.map { ": \(($0 as? PSQLError).map { "\($0.code)" } ?? "\($0)")" } ?? ""
            message = "\(context): PostgreSQL connection failed (\(error.code))\(underlying)"
            kind = .connection
            return
        }
        if error is CancellationError {
            message = "\(context) was cancelled"
            kind = .other
            return
        }
        message = "\(context): PostgreSQL unreachable: \(error)"
        kind = .connection
    }

    var storeError: StoreError {
        kind == .unique ? .uniqueConflict(message) : .database(message)
    }
}

extension PostgresConnection {
    /// Runs a prepared statement and collects its rows.
    func rows<S: Statement>(_ statement: S, logger: Logger) async throws -> [PostgresRow] {
        var rows: [PostgresRow] = []
        for try await row in try await execute(statement, logger: logger) { rows.append(row) }
        return rows
    }
}
