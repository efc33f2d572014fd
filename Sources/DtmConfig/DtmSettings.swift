import DtmEngine
import DtmGRPC
import DtmLogging
import DtmNet
import DtmPostgres
import DtmServer
import Foundation
import Logging

/// The effective settings of one `dtm` process: each value with where it came from.
public struct DtmSettings: Sendable {
    /// Every setting of `dtm`, in the order `--help` and `check-config` list them. Adding a
    /// setting is adding one property here: the loader finds it (by reflection), and flag,
    /// environment variable, YAML key, help and checks all come from the declaration.
    public struct Catalog: Sendable {
        public let store = Setting<String>(
            "Store", default: "dtm.sqlite",
            allowed: "an SQLite file path, or a PostgreSQL URL postgres://user:password@host:port/database[?sslmode=...&schema=...]",
            secret: true,
            help: "The durable store: an SQLite database file (created if missing), or a PostgreSQL URL shared by any number of coordinators. In the file also DTM's form (Driver: postgres, Host, Port, User, Password, Db, Schema). A restart on the same store resumes unfinished transactions.",
            check: DtmSettings.isValidStore, redact: DtmSettings.redactedStore)
        public let httpPort = Setting<Int>(
            "HttpPort", default: 36789, in: 0...65535, help: "HTTP JSON API port (0 picks a free port).")
        public let grpcPort = Setting<Int>(
            "GrpcPort", default: 36790, in: 0...65535, help: "gRPC port (0 picks a free port).")
        // Not HOST: shells set that variable to the machine's name.
        public let host = Setting<String>(
            "Host", environmentVariable: "DTM_HOST", default: "0.0.0.0", allowed: "an address or host name",
            help: "Address to listen on.")
        public let retryInterval = Setting<Int64>(
            "RetryInterval", default: 10, in: 1...Int64.max, unit: "seconds",
            help: "Base retry interval (values under 10 are meant for tests).")
        public let timeoutToFail = Setting<Int64>(
            "TimeoutToFail", default: 35, in: 1...Int64.max, unit: "seconds",
            help: "Default timeout of tcc, xa, msg and workflow transactions.")
        public let requestTimeout = Setting<Int64>(
            "RequestTimeout", default: 3, in: 1...Int64.max, unit: "seconds", help: "Timeout of each branch call.")
        public let transCronInterval = Setting<Int64>(
            "TransCronInterval", flag: "cron-interval", default: 3, in: 1...Int64.max, unit: "seconds",
            help: "How long the retry loop sleeps when nothing is due.")
        public let logLevel = Setting<Logger.Level>(
            "LogLevel", default: .info,
            choices: ["trace": .trace, "debug": .debug, "info": .info, "notice": .notice, "warning": .warning,
                      "error": .error, "critical": .critical],
            aliases: ["warn": .warning], help: "Log level (DTM's warn means warning).")
        public let maxRetryInterval = Setting<Int64>(
            "MaxRetryInterval", default: 3600, in: 1...Int64.max, unit: "seconds",
            help: "Longest interval retry back-off may reach (DTM doubles without bound); at least RetryInterval.")
        public let eventLoops = Setting<Int>(
            "EventLoops", default: 0, in: 0...1024,
            help: "Threads serving the network and running transaction passes; 0 means half the cores, at least 1 (the store writer and Swift's task pool use the rest).")
        public let maxConcurrentPasses = Setting<Int>(
            "MaxConcurrentPasses", default: 512, in: 1...Int.max,
            help: "Transactions the retry loop drives at once (a pass mostly waits on branch calls, so this is far above the core count).")
        public let maxPendingTransactions = Setting<Int>(
            "MaxPendingTransactions", default: 10_000, in: 1...Int.max,
            help: "Transactions held in memory at once (requests in progress plus passes waiting to run); beyond it new work is refused with RESOURCE_EXHAUSTED / HTTP 503.")
        public let maxPassDuration = Setting<Int64>(
            "MaxPassDuration", default: 60, in: 1...Int64.max, unit: "seconds",
            help: "How long one pass over a transaction may run (at least its request timeout + 2); then its running branch calls are abandoned and retried later.")
        public let maxSteps = Setting<Int>(
            "MaxSteps", default: 1000, in: 1...Int.max, help: "Steps a saga or msg may have.")
        public let maxMessageSize = Setting<Int>(
            "MaxMessageSize", default: 4 << 20, in: 1024...Int.max, unit: "bytes",
            help: "Largest gRPC message received (requests, and branch responses); a larger request gets RESOURCE_EXHAUSTED.")
        public let maxHeaderListSize = Setting<Int>(
            "MaxHeaderListSize", default: 16 << 10, in: 1024...Int(UInt32.max), unit: "bytes",
            help: "Largest decoded request header list (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).")
        public let maxConcurrentStreams = Setting<Int>(
            "MaxConcurrentStreams", default: 100, in: 1...Int(UInt32.max),
            help: "Concurrent gRPC streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).")
        public let maxGrpcConnections = Setting<Int>(
            "MaxGrpcConnections", default: 1024, in: 1...Int.max,
            help: "Open gRPC connections; one more is answered GOAWAY(ENHANCE_YOUR_CALM) and closed.")
        public let maxConcurrentCalls = Setting<Int>(
            "MaxConcurrentCalls", default: 4096, in: 1...Int.max,
            help: "gRPC calls handled at once over all connections; one more gets RESOURCE_EXHAUSTED with grpc-retry-pushback-ms.")
        public let maxConcurrentHttpRequests = Setting<Int>(
            "MaxConcurrentHttpRequests", default: 4096, in: 1...Int.max,
            help: "HTTP API requests handled at once; one more gets 503 with Retry-After.")
        public let idleTimeout = Setting<Int64>(
            "IdleTimeout", default: 300, in: 0...86_400, unit: "seconds",
            help: "How long a gRPC or HTTP connection may stay without a request before it is closed (gRPC with GOAWAY); 0 never closes.")
        public let requestReceiveTimeout = Setting<Int64>(
            "RequestReceiveTimeout", default: 30, in: 1...86_400, unit: "seconds",
            help: "How long a gRPC request may take to arrive completely after its headers; a slower one gets RESOURCE_EXHAUSTED.")
        public let branchConnectTimeout = Setting<Int64>(
            "BranchConnectTimeout", default: 3, in: 1...86_400, unit: "seconds",
            help: "Wait for a TCP connection to a branch (each call is also bounded by its request timeout).")
        public let branchIdleTimeout = Setting<Int64>(
            "BranchIdleTimeout", default: 120, in: 1...86_400, unit: "seconds",
            help: "How long a pooled connection to a branch may stay unused before it is closed.")
        public let shutdownTimeout = Setting<Int64>(
            "ShutdownTimeout", default: 10, in: 0...3600, unit: "seconds",
            help: "Longest graceful stop on SIGTERM/SIGINT: listeners stop accepting and calls in flight finish, then the retry loop and the store stop; what is left after it is cancelled (unfinished transactions stay in the store).")
        public let logFormat = Setting<LogFormat>(
            "LogFormat", default: .text, choices: ["text": .text, "json": .json],
            help: "Log lines as text (key=value, values escaped) or json (one object per line: ts, level, label, message, metadata).")
        public let finishedDataExpire = Setting<Int64>(
            "FinishedDataExpire", default: 0, in: 0...Int64.max, unit: "seconds",
            help: "Delete finished (succeed/failed) transactions this long after their last change, in small batches; 0 keeps them (DTM's SQL stores keep them too).")
        public let alertRetryLimit = Setting<Int64>(
            "AlertRetryLimit", default: 3, in: 0...Int64.max,
            help: "Alert once a branch error leaves a transaction's retry count (log2 of interval / retry interval) at or above this.")
        public let alertWebHook = Setting<String>(
            "AlertWebHook", default: "", allowed: "an http:// or https:// URL, or empty for none",
            help: "URL alerts are POSTed to as JSON {gid, status, branch, error, retry_count}; empty sends none.",
            check: { $0.isEmpty || $0.hasPrefix("http://") || $0.hasPrefix("https://") })

        // TLS (README "Security"): off while TlsCert and TlsKey are empty.
        public let tlsCert = Setting<String>(
            "TlsCert", default: "", allowed: DtmSettings.optionalFile, help: "Serve both ports over TLS with this PEM certificate (chain); needs TlsKey. Re-read on SIGHUP or when the file changes.",
            check: { _ in true })
        public let tlsKey = Setting<String>(
            "TlsKey", default: "", allowed: DtmSettings.optionalFile, help: "PEM private key of TlsCert.", check: { _ in true })
        public let tlsClientCa = Setting<String>(
            "TlsClientCa", default: "", allowed: DtmSettings.optionalFile,
            help: "Mutual TLS: PEM CA bundle that client certificates must chain to; a client without one is refused during the handshake.",
            check: { _ in true })
        public let tlsReloadInterval = Setting<Int64>(
            "TlsReloadInterval", default: 2, in: 0...86_400, unit: "seconds",
            help: "How often the TLS files are checked for changes; 0 re-reads them only on SIGHUP.")
        public let branchCa = Setting<String>(
            "BranchCa", default: "", allowed: DtmSettings.optionalFile,
            help: "PEM CA bundle that grpcs:// and https:// branch servers must chain to (empty: the system trust store).",
            check: { _ in true })
        public let branchClientCert = Setting<String>(
            "BranchClientCert", default: "", allowed: DtmSettings.optionalFile,
            help: "PEM client certificate for branch servers that require mutual TLS; needs BranchClientKey.",
            check: { _ in true })
        public let branchClientKey = Setting<String>(
            "BranchClientKey", default: "", allowed: DtmSettings.optionalFile, help: "PEM private key of BranchClientCert.",
            check: { _ in true })
        // Security (README "Security"): every option off by default, as in DTM.
        public let authTokens = Setting<String>(
            "AuthTokens", default: "", allowed: DtmSettings.optionalFile,
            help: "Require 'Authorization: Bearer <token>' (HTTP header or gRPC metadata) on every API call but /api/ping, health and reflection; the file holds one token a line (# comments), re-read when it changes.",
            check: { _ in true })
        public let authJwtHs256Secret = Setting<String>(
            "AuthJwtHs256Secret", default: "", allowed: DtmSettings.optionalFile,
            help: "Also accept HS256 JWTs signed with the secret in this file (at least 32 bytes); claim dtm_gid_prefix limits a client to its gids.",
            check: { _ in true })
        public let authJwtRs256PublicKey = Setting<String>(
            "AuthJwtRs256PublicKey", default: "", allowed: DtmSettings.optionalFile,
            help: "Also accept RS256 JWTs verified with the RSA public key (or certificate) PEM in this file; claim dtm_gid_prefix limits a client to its gids.",
            check: { _ in true })
        public let branchAllow = Setting<[String]>(
            "BranchAllow", allowed: "host names, *.domain, addresses or CIDR networks, each optionally with :port (IPv6 in brackets)",
            help: "Allow branch and back-check calls only to these targets (empty: anywhere, as DTM). Host names are checked again after DNS resolution.",
            check: { (try? BranchAllowRule(parsing: $0)) != nil })
        public let branchAllowFile = Setting<String>(
            "BranchAllowFile", default: "", allowed: DtmSettings.optionalFile,
            help: "More BranchAllow rules, one a line (# comments).", check: { _ in true })
        public let redactQuery = Setting<Bool>(
            "RedactQuery", default: false,
            help: "Show branch_headers values and URL userinfo as [redacted] in /query and /all.")
    }

    /// What an optional file setting takes.
    static let optionalFile = "a file path, or empty for none"

    public static let catalog = Catalog()
    /// Every declaration of `Catalog`, in declaration order.
    public static let all: [any AnySetting] = Mirror(reflecting: catalog).children.compactMap {
        $0.value as? any AnySetting
    }

    /// Rules between settings, checked after each value is valid alone.
    static let consistencyRules: [@Sendable (DtmSettings) -> String?] = [
        { settings in
            settings[\.timeoutToFail] >= settings[\.retryInterval] ? nil
                : "TimeoutToFail (\(settings[\.timeoutToFail])) must be at least RetryInterval (\(settings[\.retryInterval]))"
        },
        { settings in
            settings[\.maxRetryInterval] >= settings[\.retryInterval] ? nil
                : "MaxRetryInterval (\(settings[\.maxRetryInterval])) must be at least RetryInterval (\(settings[\.retryInterval]))"
        },
        { settings in
            settings[\.tlsCert].isEmpty == settings[\.tlsKey].isEmpty ? nil : "TlsCert and TlsKey (--tls-cert, --tls-key) go together"
        },
        { settings in
            settings[\.tlsClientCa].isEmpty || !settings[\.tlsCert].isEmpty ? nil : "TlsClientCa (--tls-client-ca) needs TlsCert and TlsKey"
        },
        { settings in
            settings[\.branchClientCert].isEmpty == settings[\.branchClientKey].isEmpty ? nil
                : "BranchClientCert and BranchClientKey (--branch-client-cert, --branch-client-key) go together"
        },
    ]

    var values: [String: any Sendable] = [:]
    var origins: [String: SettingOrigin] = [:]

    /// The defaults.
    public init() {}

    /// The effective value of a setting.
    public subscript<Value>(_ path: KeyPath<Catalog, Setting<Value>>) -> Value {
        let setting = Self.catalog[keyPath: path]
        return values[setting.key] as? Value ?? setting.defaultValue
    }

    /// Where the effective value of a setting came from.
    public func origin<Value>(_ path: KeyPath<Catalog, Setting<Value>>) -> SettingOrigin {
        origins[Self.catalog[keyPath: path].key] ?? .defaultValue
    }

    /// Where the setting named `key` came from.
    public func origin(key: String) -> SettingOrigin { origins[key] ?? .defaultValue }

    /// The effective value of the setting named `key`, rendered (secrets redacted).
    public func renderedValue(key: String) -> String? {
        guard let setting = Self.all.first(where: { $0.key == key }) else { return nil }
        return values[key].map(setting.renderAny) ?? setting.defaultText
    }

    /// Sets the value of `setting` from `text`, or throws naming key, value, origin and what is allowed.
    mutating func set(_ setting: any AnySetting, from text: String, origin: SettingOrigin) throws(ConfigError) {
        guard let value = setting.parseAny(text) else {
            let shown = setting.isSecret ? setting.renderAny(text) : text
            throw .invalidValue(key: setting.key, value: shown, origin: origin, allowed: setting.allowed)
        }
        values[setting.key] = value
        origins[setting.key] = origin
    }

    func checkConsistency() throws(ConfigError) {
        for rule in Self.consistencyRules {
            if let problem = rule(self) { throw .inconsistent(problem) }
        }
    }

    // MARK: - What the settings configure

    /// The coordinator these settings describe; `owner` names this process in leases.
    public func coordinatorConfig(owner: String) -> CoordinatorConfig {
        var limits = RequestLimits()
        limits.maxSteps = self[\.maxSteps]
        let engine = EngineConfig(retryInterval: self[\.retryInterval], timeoutToFail: self[\.timeoutToFail],
                                  requestTimeout: self[\.requestTimeout],
                                  transCronInterval: self[\.transCronInterval],
                                  maxRetryInterval: self[\.maxRetryInterval], limits: limits,
                                  maxPassDuration: self[\.maxPassDuration])
        let idle: Duration? = self[\.idleTimeout] == 0 ? nil : .seconds(self[\.idleTimeout])
        let grpc = GRPCServerConfig(
            maxReceiveMessageSize: self[\.maxMessageSize],
            http2: HTTP2Settings(maxConcurrentStreams: UInt32(clamping: self[\.maxConcurrentStreams]),
                                 maxHeaderListSize: UInt32(clamping: self[\.maxHeaderListSize])),
            maxConnections: self[\.maxGrpcConnections], maxConcurrentCalls: self[\.maxConcurrentCalls],
            idleTimeout: idle, requestReceiveTimeout: .seconds(self[\.requestReceiveTimeout]))
        var config = CoordinatorConfig(
            host: self[\.host], grpcPort: self[\.grpcPort], httpPort: self[\.httpPort], grpc: grpc,
            http: HTTPServerLimits(maxConcurrentRequests: self[\.maxConcurrentHttpRequests], idleTimeout: idle),
            branchClients: BranchClientConfig(connectTimeout: .seconds(self[\.branchConnectTimeout]),
                                              idleTimeout: .seconds(self[\.branchIdleTimeout]),
                                              maxReceiveMessageSize: self[\.maxMessageSize]),
            engine: engine, owner: owner, maxConcurrentPasses: self[\.maxConcurrentPasses],
            maxPendingTransactions: self[\.maxPendingTransactions])
        if !self[\.tlsCert].isEmpty {
            config.tls = ServerTLSConfig(
                certificateFile: self[\.tlsCert], privateKeyFile: self[\.tlsKey],
                clientCAFile: Self.nonEmpty(self[\.tlsClientCa]),
                reloadInterval: self[\.tlsReloadInterval] == 0 ? nil : .seconds(self[\.tlsReloadInterval]))
        }
        let auth = AuthConfig(tokensFile: Self.nonEmpty(self[\.authTokens]),
                              jwtHS256SecretFile: Self.nonEmpty(self[\.authJwtHs256Secret]),
                              jwtRS256PublicKeyFile: Self.nonEmpty(self[\.authJwtRs256PublicKey]))
        config.security = SecurityConfig(auth: auth.isEnabled ? auth : nil, branchAllowList: nil,
                                         redactQuery: self[\.redactQuery])
        config.operations = OperationsConfig(finishedDataExpire: self[\.finishedDataExpire],
                                             alertRetryLimit: self[\.alertRetryLimit],
                                             alertWebHook: self[\.alertWebHook])
        config.branchClients.tls = ClientTLSConfig(caFile: Self.nonEmpty(self[\.branchCa]),
                                                   certificateFile: Self.nonEmpty(self[\.branchClientCert]),
                                                   privateKeyFile: Self.nonEmpty(self[\.branchClientKey]))
        return config
    }

    /// The branch allow-list of `BranchAllow` and the rules in `BranchAllowFile`; nil when
    /// neither is set (calls go anywhere, as in DTM).
    public func branchAllowList() throws(ConfigError) -> BranchAllowList? {
        var rules = self[\.branchAllow]
        let file = self[\.branchAllowFile]
        if !file.isEmpty {
            do {
                rules += try String(contentsOfFile: file, encoding: .utf8).split(whereSeparator: \.isNewline).map(String.init)
            } catch {
                throw .unreadableFile(path: file, reason: "\(error)")
            }
        }
        guard !rules.isEmpty || !file.isEmpty else { return nil }
        do {
            return try BranchAllowList(parsing: rules)
        } catch {
            throw .inconsistent("BranchAllowFile \(file): \(error)")
        }
    }

    private static func nonEmpty(_ text: String) -> String? { text.isEmpty ? nil : text }

    /// The graceful-stop bound.
    public var shutdownTimeout: Duration { .seconds(self[\.shutdownTimeout]) }

    @Sendable static func isValidStore(_ store: String) -> Bool {
        if PostgresConfiguration.isPostgresURL(store) { return (try? PostgresConfiguration(url: store)) != nil }
        return !store.trimmingWhitespace().isEmpty
    }

    @Sendable static func redactedStore(_ store: String) -> String {
        guard PostgresConfiguration.isPostgresURL(store) else { return store }
        if let configuration = try? PostgresConfiguration(url: store) { return configuration.redactedURL }
        // Not a valid URL: still never show what may be a password.
        guard let at = store.lastIndex(of: "@"), let scheme = store.range(of: "://") else { return store }
        let userinfo = store[scheme.upperBound..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return store }
        return String(store[..<colon]) + ":***" + String(store[at...])
    }
}
