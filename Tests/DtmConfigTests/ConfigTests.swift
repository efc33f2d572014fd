import DtmConfig
import Foundation
import Logging
import Testing

/// Loads with a file whose text is given (nil: no `--config`).
private func load(_ arguments: [String] = [], environment: [String: String] = [:], file: String? = nil)
    throws(ConfigError) -> LoadedConfig {
    let withFile = file == nil ? arguments : ["--config", "test.yml"] + arguments
    return try ConfigLoader.load(arguments: withFile, environment: environment, readFile: { _ in file ?? "" })
}

private func loadError(_ arguments: [String] = [], environment: [String: String] = [:], file: String? = nil)
    -> ConfigError? {
    do {
        _ = try load(arguments, environment: environment, file: file)
        return nil
    } catch {
        return error
    }
}

@Suite struct PrecedenceTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let flag: String?, env: String?, file: String?
        let expected: Int, origin: SettingOrigin
        var testDescription: String { "flag \(flag ?? "-") env \(env ?? "-") file \(file ?? "-")" }
    }

    static let cases: [Case] = [
        Case(flag: nil, env: nil, file: nil, expected: 36789, origin: .defaultValue),
        Case(flag: nil, env: nil, file: "1003", expected: 1003, origin: .file(path: "test.yml")),
        Case(flag: nil, env: "1002", file: nil, expected: 1002, origin: .environment("HTTP_PORT")),
        Case(flag: nil, env: "1002", file: "1003", expected: 1002, origin: .environment("HTTP_PORT")),
        Case(flag: "1001", env: nil, file: nil, expected: 1001, origin: .flag("http-port")),
        Case(flag: "1001", env: nil, file: "1003", expected: 1001, origin: .flag("http-port")),
        Case(flag: "1001", env: "1002", file: nil, expected: 1001, origin: .flag("http-port")),
        Case(flag: "1001", env: "1002", file: "1003", expected: 1001, origin: .flag("http-port")),
        // As DTM: an empty variable is not set.
        Case(flag: nil, env: "", file: "1003", expected: 1003, origin: .file(path: "test.yml")),
    ]

    @Test(arguments: cases)
    func flagBeatsEnvironmentBeatsFileBeatsDefault(_ c: Case) throws {
        let loaded = try load(c.flag.map { ["--http-port", $0] } ?? [],
                              environment: c.env.map { ["HTTP_PORT": $0] } ?? [:],
                              file: c.file.map { "HttpPort: \($0)\n" })
        #expect(loaded.settings[\.httpPort] == c.expected)
        #expect(loaded.settings.origin(\.httpPort) == c.origin)
    }

    @Test func onlyTheWinningValueIsChecked() throws {
        let loaded = try load(["--retry-interval=12"], environment: ["RETRY_INTERVAL": "soon"],
                              file: "RetryInterval: -1\n")
        #expect(loaded.settings[\.retryInterval] == 12)
    }

    @Test func noArgumentsIsDTMsDefaults() throws {
        let loaded = try load()
        #expect(loaded.command == .run)
        #expect(loaded.settings[\.store] == "dtm.sqlite")
        let config = loaded.settings.coordinatorConfig(owner: "me")
        #expect(config.grpcPort == 36790)
        #expect(config.httpPort == 36789)
        #expect(config.host == "0.0.0.0")
        #expect(config.engine.retryInterval == 10)
        #expect(config.engine.timeoutToFail == 35)
        #expect(config.engine.requestTimeout == 3)
        #expect(config.engine.transCronInterval == 3)
        #expect(config.maxConcurrentPasses == 512)
        #expect(loaded.settings.shutdownTimeout == .seconds(10))
    }

    /// Every flag `dtm` had before the configuration file keeps its name.
    @Test func everyEarlierFlagStillWorks() throws {
        let flags = ["host": "127.0.0.1", "grpc-port": "1", "http-port": "2", "store": "x.sqlite",
                     "retry-interval": "4", "timeout-to-fail": "40", "request-timeout": "5", "cron-interval": "6",
                     "max-concurrent-passes": "7", "max-retry-interval": "80", "max-pending-transactions": "9",
                     "max-pass-duration": "10", "max-steps": "11", "max-message-size": "2048",
                     "max-header-list-size": "4096", "max-concurrent-streams": "14", "max-grpc-connections": "15",
                     "max-concurrent-calls": "16", "max-concurrent-http-requests": "17", "idle-timeout": "18",
                     "request-receive-timeout": "19", "branch-connect-timeout": "20", "branch-idle-timeout": "21",
                     "log-level": "debug"]
        let loaded = try load(flags.sorted { $0.key < $1.key }.flatMap { ["--\($0.key)", $0.value] })
        let config = loaded.settings.coordinatorConfig(owner: "me")
        #expect(config.host == "127.0.0.1" && config.grpcPort == 1 && config.httpPort == 2)
        #expect(loaded.settings[\.store] == "x.sqlite")
        #expect(config.engine.retryInterval == 4 && config.engine.timeoutToFail == 40)
        #expect(config.engine.requestTimeout == 5 && config.engine.transCronInterval == 6)
        #expect(config.maxConcurrentPasses == 7 && config.engine.maxRetryInterval == 80)
        #expect(config.maxPendingTransactions == 9 && config.engine.maxPassDuration == 10)
        #expect(config.engine.limits.maxSteps == 11 && config.grpc.maxReceiveMessageSize == 2048)
        #expect(config.grpc.http2.maxHeaderListSize == 4096 && config.grpc.http2.maxConcurrentStreams == 14)
        #expect(config.grpc.maxConnections == 15 && config.grpc.maxConcurrentCalls == 16)
        #expect(config.http.maxConcurrentRequests == 17 && config.grpc.idleTimeout == .seconds(18))
        #expect(config.grpc.requestReceiveTimeout == .seconds(19))
        #expect(config.branchClients.connectTimeout == .seconds(20))
        #expect(config.branchClients.idleTimeout == .seconds(21))
        #expect(loaded.settings[\.logLevel] == .debug)
    }

    @Test func commands() throws {
        #expect(try load(["check-config"]).command == .checkConfig)
        #expect(try load(["--help"]).command == .help)
        #expect(try load(["-c", "test.yml", "check-config"], file: "").file == "test.yml")
    }
}

@Suite struct InvalidValueTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let arguments: [String]
        let environment: [String: String]
        let file: String?
        let message: String
        var testDescription: String { message }
        init(_ arguments: [String] = [], env: [String: String] = [:], file: String? = nil, _ message: String) {
            self.arguments = arguments
            self.environment = env
            self.file = file
            self.message = message
        }
    }

    static let cases: [Case] = [
        Case(["--http-port", "abc"],
             #"invalid HttpPort "abc" (from flag --http-port): allowed is a whole number in 0...65535"#),
        Case(env: ["GRPC_PORT": "70000"],
             #"invalid GrpcPort "70000" (from environment variable GRPC_PORT): allowed is a whole number in 0...65535"#),
        Case(file: "LogLevel: loud\n",
             #"invalid LogLevel "loud" (from file test.yml): allowed is one of trace, debug, info, notice, warning, error, critical"#),
        Case(["--retry-interval", "0"],
             #"invalid RetryInterval "0" (from flag --retry-interval): allowed is a whole number ≥ 1 (seconds)"#),
        Case(env: ["TRANS_CRON_INTERVAL": "1.5"],
             #"invalid TransCronInterval "1.5" (from environment variable TRANS_CRON_INTERVAL): allowed is a whole number ≥ 1 (seconds)"#),
        Case(["--max-header-list-size=100"],
             #"invalid MaxHeaderListSize "100" (from flag --max-header-list-size): allowed is a whole number in 1024...4294967295 (bytes)"#),
        Case(file: "MaxConcurrentPasses: 0\n",
             #"invalid MaxConcurrentPasses "0" (from file test.yml): allowed is a whole number ≥ 1"#),
        Case(file: "IdleTimeout: 90000\n",
             #"invalid IdleTimeout "90000" (from file test.yml): allowed is a whole number in 0...86400 (seconds)"#),
        Case(["--shutdown-timeout", "-1"],
             #"invalid ShutdownTimeout "-1" (from flag --shutdown-timeout): allowed is a whole number in 0...3600 (seconds)"#),
        Case(["--host", ""], #"invalid Host "" (from flag --host): allowed is an address or host name"#),
        // The password of a bad PostgreSQL URL is not shown.
        Case(env: ["STORE": "postgres://dtm:hunter2@db/dtm?bogus=1"],
             #"invalid Store "postgres://dtm:***@db/dtm?bogus=1" (from environment variable STORE): allowed is an SQLite file path, or a PostgreSQL URL postgres://user:password@host:port/database[?sslmode=...&schema=...]"#),
        Case(file: "Store:\n  Driver: mysql\n  Host: db\n",
             #"invalid Store.Driver "mysql" (from file test.yml): allowed is postgres or sqlite (DTM's mysql, redis and boltdb are not supported)"#),
        Case(["--retry-interval", "10", "--timeout-to-fail", "5"],
             "TimeoutToFail (5) must be at least RetryInterval (10)"),
        Case(file: "RetryInterval: 100\n", "TimeoutToFail (35) must be at least RetryInterval (100)"),
        Case(["--grpc-port"], "option --grpc-port needs a value"),
        Case(["--grpc-prot", "1"], "unknown option --grpc-prot (dtm --help lists them)"),
        Case(["serve"], "unexpected argument serve (dtm takes options and the subcommand check-config)"),
        Case(file: "HttpPort: [1, 2]\n",
             "the configuration file test.yml is not valid YAML of the expected shape: HttpPort must be a single value"),
        Case(file: "- HttpPort\n",
             "the configuration file test.yml is not valid YAML of the expected shape: the top level must be a mapping of Key: value"),
    ]

    @Test(arguments: cases)
    func messageNamesKeyValueAndWhatIsAllowed(_ c: Case) {
        let error = loadError(c.arguments, environment: c.environment, file: c.file)
        #expect(error.map { "\($0)" } == c.message)
    }

    @Test func unknownKeysInTheFileAreRefusedByName() {
        let error = loadError(file: "HttpPort: 1\nRetryIntervall: 5\n")
        guard case .unknownKey(let key, let path, let known) = error else {
            Issue.record("expected an unknown key error, got \(String(describing: error))")
            return
        }
        #expect(key == "RetryIntervall")
        #expect(path == "test.yml")
        #expect(known.contains("RetryInterval"))
        #expect("\(error!)".hasPrefix("unknown key RetryIntervall in test.yml; known keys: Store, HttpPort"))
        guard case .unknownKey(let nested, _, _) = loadError(file: "Store:\n  Driver: postgres\n  Hots: db\n") else {
            Issue.record("a misspelt Store field was accepted")
            return
        }
        #expect(nested == "Store.Hots")
    }

    @Test func unreadableFile() {
        var error: ConfigError?
        do {
            _ = try ConfigLoader.load(arguments: ["--config", "/nonexistent/dtm.yml"], environment: [:])
        } catch let caught {
            error = caught
        }
        guard case .unreadableFile(let path, _) = error else {
            Issue.record("expected unreadableFile, got \(String(describing: error))")
            return
        }
        #expect(path == "/nonexistent/dtm.yml")
    }
}

@Suite struct FileAndEnvironmentTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    @Test func exampleFileIsValidAndListsEverySetting() throws {
        let path = Self.repository.appendingPathComponent("dtm.example.yml").path
        let loaded = try ConfigLoader.load(arguments: ["check-config", "--config", path], environment: [:])
        #expect(loaded.command == .checkConfig)
        // Its values are the defaults, and it names every setting.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for setting in DtmSettings.all {
            #expect(loaded.settings.origin(key: setting.key) == .file(path: path), "\(setting.key) not set by the example")
            #expect(loaded.settings.renderedValue(key: setting.key) == setting.defaultText, "\(setting.key)")
            #expect(text.contains("\n\(setting.key): "), "dtm.example.yml lacks \(setting.key)")
        }
    }

    @Test func dtmStoreSectionBecomesAPostgresURL() throws {
        let file = """
            Store:
              Driver: 'postgres'
              Host: 'db.example'
              User: 'dtm'
              Password: 'p@ss:word'
              Port: '5433'
              Db: 'dtm'
              Schema: 'dtm_schema'
            """
        let loaded = try load(file: file)
        #expect(loaded.settings[\.store] == "postgres://dtm:p%40ss%3Aword@db.example:5433/dtm?schema=dtm_schema")
        let environment = try load(environment: ["STORE_DRIVER": "postgres", "STORE_HOST": "h", "STORE_USER": "u",
                                                 "STORE_PASSWORD": "pw"])
        #expect(environment.settings[\.store] == "postgres://u:pw@h:5432/dtm")
        #expect(environment.settings.origin(\.store) == .environment("STORE_DRIVER"))
    }

    @Test func checkConfigRedactsThePassword() throws {
        let loaded = try load(["check-config", "--store", "postgres://dtm:hunter2@db:5432/dtm"])
        let text = ConfigLoader.effectiveText(loaded.settings)
        #expect(!text.contains("hunter2"))
        #expect(text.contains("Store:"))
        #expect(text.contains("# flag --store"))
        #expect(text.contains("HttpPort:"))
    }

    @Test(arguments: [("HttpPort", "HTTP_PORT"), ("TransCronInterval", "TRANS_CRON_INTERVAL"),
                      ("MaxConcurrentHttpRequests", "MAX_CONCURRENT_HTTP_REQUESTS"), ("LogLevel", "LOG_LEVEL")])
    func environmentNamesFollowDTM(key: String, variable: String) throws {
        let setting = try #require(DtmSettings.all.first { $0.key == key })
        #expect(setting.environmentVariable == variable)
    }

    @Test func helpListsEverySetting() {
        let help = ConfigLoader.helpText()
        for setting in DtmSettings.all {
            let usage = switch setting.form {
            case .value: "--\(setting.flag) <\(setting.flag)>"
            case .switch: "--\(setting.flag)[=false]"
            case .list: "--\(setting.flag) <\(setting.flag)> (repeatable)"
            }
            #expect(help.contains("\(usage) (default: \(setting.defaultText))"), "\(setting.key)")
            #expect(help.contains(setting.environmentVariable))
        }
    }

    @Test func nullValueSetsNothingAndWarnIsWarning() throws {
        let loaded = try load(file: "HttpPort:\nLogLevel: warn\n# a comment\n")
        #expect(loaded.settings[\.httpPort] == 36789)
        #expect(loaded.settings[\.logLevel] == .warning)
    }
}

/// Switches (`--redact-query`), lists (`--branch-allow`, repeated) and the security and TLS
/// settings as the coordinator gets them.
@Suite struct SwitchListAndSecurityTests {
    @Test func aSwitchNeedsNoValue() throws {
        #expect(try load(["--redact-query", "--http-port", "1"]).settings[\.redactQuery] == true)
        #expect(try load(["--redact-query=false"], file: "RedactQuery: true\n").settings[\.redactQuery] == false)
        #expect(try load(environment: ["REDACT_QUERY": "yes"]).settings[\.redactQuery] == true)
        #expect(try load().settings[\.redactQuery] == false)
        guard case .invalidValue(key: "RedactQuery", value: "maybe", _, _)? = loadError(["--redact-query=maybe"]) else {
            Issue.record("RedactQuery=maybe accepted")
            return
        }
    }

    @Test func aListCollectsRepeatedFlagsCommasAndYAMLLists() throws {
        #expect(try load(["--branch-allow", "10.0.0.0/8", "--branch-allow=busi.local:8080"]).settings[\.branchAllow]
                == ["10.0.0.0/8", "busi.local:8080"])
        #expect(try load(environment: ["BRANCH_ALLOW": "10.0.0.0/8, *.svc"]).settings[\.branchAllow] == ["10.0.0.0/8", "*.svc"])
        #expect(try load(file: "BranchAllow:\n  - 10.0.0.0/8\n  - 'fd00::/8'\n").settings[\.branchAllow]
                == ["10.0.0.0/8", "fd00::/8"])
        // A flag replaces the file's list; it does not add to it.
        #expect(try load(["--branch-allow", "127.0.0.1"], file: "BranchAllow: 10.0.0.0/8\n").settings[\.branchAllow]
                == ["127.0.0.1"])
        guard case .invalidValue(key: "BranchAllow", value: "10.0.0.0/33", _, _)? = loadError(["--branch-allow", "10.0.0.0/33"])
        else {
            Issue.record("a bad allow rule was accepted")
            return
        }
    }

    @Test func securityAndTLSSettingsReachTheCoordinatorConfig() throws {
        let loaded = try load(["--auth-tokens", "/etc/dtm/tokens", "--redact-query", "--tls-cert", "c.pem",
                               "--tls-key", "k.pem", "--tls-reload-interval", "0", "--branch-ca", "ca.pem"])
        let config = loaded.settings.coordinatorConfig(owner: "test")
        #expect(config.security.auth?.tokensFile == "/etc/dtm/tokens")
        #expect(config.security.auth?.jwtHS256SecretFile == nil)
        #expect(config.security.redactQuery)
        #expect(config.tls?.certificateFile == "c.pem" && config.tls?.privateKeyFile == "k.pem")
        #expect(config.tls?.reloadInterval == nil && config.tls?.clientCAFile == nil)
        #expect(config.branchClients.tls.caFile == "ca.pem" && config.branchClients.tls.certificateFile == nil)
        let plain = try load().settings.coordinatorConfig(owner: "test")
        #expect(plain.security.auth == nil && plain.tls == nil && !plain.security.redactQuery)
        #expect(try load().settings.branchAllowList() == nil)
        #expect(try load(["--branch-allow", "10.0.0.0/8"]).settings.branchAllowList() != nil)
    }

    @Test(arguments: [
        (["--tls-cert", "c.pem"], "TlsCert and TlsKey"),
        (["--tls-client-ca", "ca.pem"], "TlsClientCa (--tls-client-ca) needs TlsCert"),
        (["--branch-client-key", "k.pem"], "BranchClientCert and BranchClientKey"),
    ])
    func settingsThatGoTogether(arguments: [String], message: String) {
        guard case .inconsistent(let text)? = loadError(arguments) else {
            Issue.record("\(arguments) accepted")
            return
        }
        #expect(text.contains(message), "\(text)")
    }

    @Test func anUnreadableAllowFileIsNamed() throws {
        let settings = try load(["--branch-allow-file", "/nonexistent/allow"]).settings
        #expect(throws: ConfigError.self) { try settings.branchAllowList() }
        do {
            _ = try settings.branchAllowList()
        } catch {
            #expect(error.description.contains("/nonexistent/allow"))
        }
    }
}
