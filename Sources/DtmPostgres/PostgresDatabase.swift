import DtmEngine
import DtmSync
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
    /// on its own, at the Sync after it: postgres-nio may report it done although that commit
    /// then failed, so a write whose success is acted on goes through `transaction`). Reads may pass `idempotent: true` to be tried again after a lost connection:
    /// after a server restart every idle connection of the pool is dead until the pool hears of it.
    func withConnection<T: Sendable>(
        _ context: String, idempotent: Bool = false, timeout: Duration? = nil,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws(StoreError) -> T {
        try await run(context, timeout: timeout ?? configuration.operationTimeout,
                      retrying: idempotent ? [.stale, .connection] : [.stale], body)
    }

    /// Runs `body` in one transaction (BEGIN … COMMIT), rolled back when it throws; run again
    /// when PostgreSQL aborted it for a serialization failure or a deadlock.
    func transaction<T: Sendable>(
        _ context: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws(StoreError) -> T {
        try await run(context, timeout: configuration.operationTimeout, retrying: [.stale, .conflict]) { connection in
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

    /// One call, run again (up to `Failure.Kind.attempts`) while it fails in a way `retrying`
    /// names; a `StoreError` from `body` or the timeout is never retried.
    private func run<T: Sendable>(
        _ context: String, timeout: Duration, retrying: Set<Failure.Kind>,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws(StoreError) -> T {
        var attempt = 1
        while true {
            do {
                return try await leased(context, timeout, body)
            } catch let error as StoreError {
                throw error
            } catch {
                let failure = Failure(error, context: context)
                guard retrying.contains(failure.kind), attempt < failure.kind.attempts else { throw failure.storeError }
                logger.debug("running a PostgreSQL call again", metadata: [
                    "operation": "\(context)", "attempt": "\(attempt)", "error": "\(failure.message)",
                ])
                if let pause = failure.kind.pause(after: attempt) { try? await Task.sleep(for: pause) }
                attempt += 1
            }
        }
    }

    /// Runs `body` on a pooled connection within `timeout`, counted from the lease request.
    ///
    /// While PostgreSQL is unreachable a call fails after the timeout instead of hanging. A call
    /// whose statement does not come back in time (a server that died without closing the
    /// socket, a network that went silent) gets its connection closed, which fails the statement
    /// at once and makes the pool replace the connection: no call waits on a dead socket. A call
    /// that still finishes within a short grace after the timer (a commit that happened) returns
    /// its result; otherwise the caller gets `.database`, as for any lost connection.
    private func leased<T: Sendable>(
        _ context: String, _ timeout: Duration,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let inUse = ConnectionSlot()
        let work = Task {
            try await self.client.withConnection { connection in
                // The pool can hand out a connection the server closed a moment ago (it hears of
                // the close later), and postgres-nio never answers a statement written to a
                // closed channel. Nothing was sent: safe to run again on another connection.
                guard !connection.isClosed else { throw StaleConnection() }
                inUse.connection.withLock { $0 = connection }
                defer { inUse.connection.withLock { $0 = nil } }
                return try await body(connection)
            }
        }
        let outcome = OneShot<T>()
        let timeoutMessage = "PostgreSQL did not answer \(context) within \(timeout) "
            + "(\(configuration.redactedURL) unreachable or overloaded)"
        let logger = logger
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                outcome.install(continuation)
                let timer = Task {
                    guard (try? await Task.sleep(for: timeout)) != nil, !outcome.isFinished else { return }
                    work.cancel()  // withdraws a lease still waiting in the pool's queue
                    var deadConnection = false
                    if let stuck = inUse.connection.withLock({ $0 }) {
                        // Closed already: the server dropped it around the time the statement was
                        // written, which postgres-nio may never report.
                        deadConnection = stuck.isClosed
                        logger.warning("closing a PostgreSQL connection whose statement did not return in time",
                                       metadata: ["operation": "\(context)", "timeout": "\(timeout)",
                                                  "already_closed": "\(deadConnection)"])
                        Task { try? await stuck.close() }
                    }
                    try? await Task.sleep(for: .seconds(2))
                    outcome.finish(.failure(TimedOut(message: timeoutMessage, deadConnection: deadConnection)))
                }
                Task {
                    let result = await work.result
                    timer.cancel()
                    outcome.finish(result.mapError { $0 })
                }
            }
        } onCancel: {
            work.cancel()
        }
    }
}

/// A pooled connection that turned out to be closed before it was used.
struct StaleConnection: Error {}

/// A call that did not finish within its operation timeout.
struct TimedOut: Error {
    let message: String
    /// Its connection had been closed by the server: a lost connection, not a slow database.
    let deadConnection: Bool
}

/// The connection a call is using, for its timer to close.
private final class ConnectionSlot: Sendable {
    let connection = Locked<PostgresConnection?>(nil)
}

/// Resumes a continuation once, with whichever result comes first.
private final class OneShot<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var result: Result<T, any Error>?
    }
    private let state = Locked(State())

    var isFinished: Bool { state.withLock { $0.result != nil } }

    func install(_ continuation: CheckedContinuation<T, any Error>) {
        let early = state.withLock { state -> Result<T, any Error>? in
            if let result = state.result { return result }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    func finish(_ result: Result<T, any Error>) {
        let continuation = state.withLock { state -> CheckedContinuation<T, any Error>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
    }
}

/// A driver error read for what the store needs to know: which `StoreError` it is and whether
/// trying again is safe. Messages name the SQLSTATE and the server's text, never bound values
/// (they can hold branch headers).
struct Failure {
    /// `stale`: the connection was closed before anything was sent on it.
    enum Kind {
        case conflict, unique, connection, stale, other

        /// How many times a call failing this way is tried in all, when it may be retried. A
        /// stale connection sent nothing, so trying again is always safe; after the server ended
        /// every backend (a restart, `pg_terminate_backend`) each pooled connection may be dead in
        /// turn, so it gets more tries than the pool holds connections by default (20).
        var attempts: Int {
            switch self {
            case .stale: 32
            case .conflict: 8
            default: 4
            }
        }

        /// The wait before the next attempt: none for the first stale connections (take another
        /// one now), then a short one; a growing one while the pool reconnects; random while a
        /// conflicting transaction ends.
        func pause(after attempt: Int) -> Duration? {
            switch self {
            case .stale: attempt < 8 ? nil : .milliseconds(10)
            case .conflict: .milliseconds(Int.random(in: 1...(5 << min(attempt + 1, 6))))
            default: .milliseconds(20 * attempt)
            }
        }
    }
    let kind: Kind
    let message: String

    init(_ error: any Error, context: String) {
        if let timedOut = error as? TimedOut {
            message = timedOut.message
            kind = timedOut.deadConnection ? .connection : .other
            return
        }
        if error is StaleConnection {
            message = "\(context): PostgreSQL connection closed by the server"
            kind = .stale
            return
        }
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
