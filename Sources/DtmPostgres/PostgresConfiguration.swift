import DtmEngine
import Foundation

/// Where and how to reach PostgreSQL, read from a libpq-style URL:
///
///     postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAM=VALUE&...]
///
/// Parameters: `sslmode` (`disable`, `prefer` (default), `require`, `verify-full`),
/// `pool_max_conns` (connections per coordinator, default 20), `connect_timeout` (seconds,
/// default 10), `operation_timeout` (seconds a store call may wait for a connection and its
/// statements, default 10), `host` (a directory holding the server's unix socket, instead of TCP),
/// `application_name` (shown in `pg_stat_activity`, default `swift-dtm`), `schema` (DTM's `Store.Schema`: the tables live in this schema, created if missing; default:
/// the database's search path, normally `public`).
/// Anything else is refused: a misspelt parameter must not be silently ignored.
public struct PostgresConfiguration: Sendable, Equatable {
    public enum TLSMode: String, Sendable, Equatable {
        /// Plain TCP.
        case disable
        /// TLS when the server offers it, without verifying its certificate (libpq's default).
        case prefer
        /// TLS or no connection, without verifying the certificate.
        case require
        /// TLS with the certificate verified against the system's roots and the host name.
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    /// A directory with the server's `.s.PGSQL.PORT` socket; when set, `host` is ignored.
    public var socketDirectory: String?
    public var username: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    public var maxConnections: Int
    public var connectTimeout: Duration
    public var operationTimeout: Duration
    /// The schema holding the tables (an SQL identifier: letters, digits, underscores).
    public var schema: String?
    /// How the connections name themselves to the server (`pg_stat_activity.application_name`).
    public var applicationName = "swift-dtm"

    public init(host: String = "127.0.0.1", port: Int = 5432, socketDirectory: String? = nil,
                username: String, password: String? = nil, database: String, tls: TLSMode = .prefer,
                maxConnections: Int = 20, connectTimeout: Duration = .seconds(10),
                operationTimeout: Duration = .seconds(10), schema: String? = nil) {
        self.host = host
        self.port = port
        self.socketDirectory = socketDirectory
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
        self.maxConnections = maxConnections
        self.connectTimeout = connectTimeout
        self.operationTimeout = operationTimeout
        self.schema = schema
    }

    /// Whether `store` names a PostgreSQL database rather than an SQLite file.
    public static func isPostgresURL(_ store: String) -> Bool {
        store.hasPrefix("postgres://") || store.hasPrefix("postgresql://")
    }

    /// Parses a `postgres://` or `postgresql://` URL; every problem is named in the error.
    public init(url: String) throws(StoreError) {
        guard Self.isPostgresURL(url), let components = URLComponents(string: url) else {
            throw .database("not a PostgreSQL URL: expected postgres://user:password@host:port/database")
        }
        guard let user = components.user.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw .database("the PostgreSQL URL names no user (postgres://USER@host/database)")
        }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        guard let database = path.removingPercentEncoding, !database.isEmpty, !database.contains("/") else {
            throw .database("the PostgreSQL URL names no database (postgres://user@host/DATABASE)")
        }
        self.init(host: components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1",
                  port: components.port ?? 5432, username: user,
                  password: components.password.flatMap { $0.removingPercentEncoding }, database: database)
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else {
                    throw .database("sslmode '\(value)' is not one of disable, prefer, require, verify-full")
                }
                tls = mode
            case "pool_max_conns":
                guard let count = Int(value), (1...1000).contains(count) else {
                    throw .database("pool_max_conns '\(value)' is not a number from 1 to 1000")
                }
                maxConnections = count
            case "connect_timeout":
                connectTimeout = try Self.seconds(value, "connect_timeout")
            case "operation_timeout":
                operationTimeout = try Self.seconds(value, "operation_timeout")
            case "host":
                guard value.hasPrefix("/") else {
                    throw .database("host '\(value)' in the query must be a socket directory (an absolute path)")
                }
                socketDirectory = value
            case "application_name":
                guard !value.isEmpty, value.utf8.count <= 63, value.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F }) else {
                    throw .database("application_name '\(value)' must be 1 to 63 printable ASCII characters")
                }
                applicationName = value
            case "schema":
                guard Self.isIdentifier(value) else {
                    throw .database("schema '\(value)' is not a plain SQL identifier "
                                    + "(a letter or _, then letters, digits or _; at most 63)")
                }
                schema = value
            default:
                throw .database("unknown PostgreSQL URL parameter '\(item.name)' (known: sslmode, pool_max_conns, "
                                + "connect_timeout, operation_timeout, host, schema, application_name)")
            }
        }
    }

    private static func seconds(_ value: String, _ name: String) throws(StoreError) -> Duration {
        guard let seconds = Int(value), (1...3600).contains(seconds) else {
            throw .database("\(name) '\(value)' is not a whole number of seconds from 1 to 3600")
        }
        return .seconds(seconds)
    }

    static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 63,
              first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && $0.properties.isAlphabetic)
            || ("0"..."9").contains($0) }
    }

    /// The URL without its password, for logs and errors.
    public var redactedURL: String {
        let query = [socketDirectory.map { "host=\($0)" }, schema.map { "schema=\($0)" }].compactMap { $0 }
        let server = socketDirectory == nil ? "\(host):\(port)" : ""
        return "postgres://\(username)\(password == nil ? "" : ":***")@\(server)/\(database)"
            + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }
}
