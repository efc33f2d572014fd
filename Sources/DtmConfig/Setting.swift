/// One setting of `dtm`, declared once: its YAML key (DTM's spelling), the environment variable
/// and the flag derived from it (or given), the default, the help line and what values it takes.
/// `DtmSettings.Catalog` holds every declaration; the loader, `--help`, `check-config` and the
/// error messages all read from there.
public struct Setting<Value: Sendable>: Sendable {
    /// The key in the YAML file, e.g. `HttpPort`.
    public let key: String
    /// The environment variable, by DTM's rule (`HttpPort` → `HTTP_PORT`) unless given.
    public let environmentVariable: String
    /// The flag without its dashes, e.g. `http-port` (`--http-port`).
    public let flag: String
    public let defaultValue: Value
    public let help: String
    /// What values are accepted, as error messages and `--help` say it.
    public let allowed: String
    /// Shown redacted by `check-config` and in errors (a password inside a PostgreSQL URL).
    public let isSecret: Bool
    /// How the command line gives it: a value, nothing (a switch), or one value per repetition.
    public let form: SettingForm
    let parse: @Sendable (String) -> Value?
    let render: @Sendable (Value) -> String

    public init(_ key: String, flag: String? = nil, environmentVariable: String? = nil, default defaultValue: Value,
                allowed: String, secret: Bool = false, form: SettingForm = .value, help: String,
                parse: @escaping @Sendable (String) -> Value?, render: @escaping @Sendable (Value) -> String) {
        self.key = key
        self.flag = flag ?? Self.kebabCase(key)
        self.environmentVariable = environmentVariable ?? Self.dtmEnvironmentName(key)
        self.defaultValue = defaultValue
        self.help = help
        self.allowed = allowed
        self.isSecret = secret
        self.form = form
        self.parse = parse
        self.render = render
    }

    /// DTM's `toUnderscoreUpper`: a capital starting a new word after lowercase or after a
    /// run of capitals begins a new underscore-separated word (`MaxGrpcConnections` →
    /// `MAX_GRPC_CONNECTIONS`, `HTTPPort` → `HTTP_PORT`).
    static func dtmEnvironmentName(_ key: String) -> String {
        words(key).map { $0.uppercased() }.joined(separator: "_")
    }

    static func kebabCase(_ key: String) -> String {
        words(key).map { $0.lowercased() }.joined(separator: "-")
    }

    private static func words(_ key: String) -> [String] {
        let characters = Array(key)
        var words: [String] = []
        var current = ""
        for (index, character) in characters.enumerated() {
            if character == "_" || character == "." || character == "-" {
                if !current.isEmpty { words.append(current) }
                current = ""
                continue
            }
            if character.isUppercase, let previous = current.last {
                let nextIsLower = index + 1 < characters.count && characters[index + 1].isLowercase
                if previous.isLowercase || previous.isNumber || (previous.isUppercase && nextIsLower) {
                    words.append(current)
                    current = ""
                }
            }
            current.append(character)
        }
        if !current.isEmpty { words.append(current) }
        return words
    }
}

extension Setting where Value: FixedWidthInteger {
    /// A whole number in `range`.
    public init(_ key: String, flag: String? = nil, environmentVariable: String? = nil, default defaultValue: Value,
                in range: ClosedRange<Value>, unit: String = "", help: String) {
        let suffix = unit.isEmpty ? "" : " (\(unit))"
        let allowed = range.upperBound == Value.max
            ? "a whole number ≥ \(range.lowerBound)\(suffix)"
            : "a whole number in \(range.lowerBound)...\(range.upperBound)\(suffix)"
        self.init(key, flag: flag, environmentVariable: environmentVariable, default: defaultValue,
                  allowed: allowed, help: help,
                  parse: { text in Value(text.trimmingWhitespace()).flatMap { range.contains($0) ? $0 : nil } },
                  render: { "\($0)" })
    }
}

extension Setting where Value == String {
    /// A string, checked by `check` (nil means any non-empty string).
    public init(_ key: String, flag: String? = nil, environmentVariable: String? = nil, default defaultValue: String,
                allowed: String = "a non-empty string", secret: Bool = false, help: String,
                check: (@Sendable (String) -> Bool)? = nil, redact: (@Sendable (String) -> String)? = nil) {
        self.init(key, flag: flag, environmentVariable: environmentVariable, default: defaultValue,
                  allowed: allowed, secret: secret, help: help,
                  parse: { text in (check ?? { !$0.isEmpty })(text) ? text : nil },
                  render: redact ?? { $0 })
    }
}

extension Setting where Value: Equatable {
    /// One of a fixed set of names (case-insensitive); `aliases` are accepted and not listed.
    public init(_ key: String, flag: String? = nil, environmentVariable: String? = nil, default defaultValue: Value,
                choices: KeyValuePairs<String, Value>, aliases: [String: Value] = [:], help: String) {
        let names = choices.map(\.key)
        var table = aliases
        for (name, value) in choices { table[name] = value }
        let lookup = table
        let reverse = choices.map { ($0.value, $0.key) }
        self.init(key, flag: flag, environmentVariable: environmentVariable, default: defaultValue,
                  allowed: "one of " + names.joined(separator: ", "), help: help,
                  parse: { lookup[$0.trimmingWhitespace().lowercased()] },
                  render: { value in reverse.first { $0.0 == value }?.1 ?? "\(value)" })
    }
}

extension Setting where Value == Bool {
    /// On or off; on the command line `--flag` alone turns it on (`--flag=false` turns it off).
    public init(_ key: String, flag: String? = nil, environmentVariable: String? = nil, default defaultValue: Bool,
                help: String) {
        self.init(key, flag: flag, environmentVariable: environmentVariable, default: defaultValue,
                  allowed: "true or false", form: .switch, help: help,
                  parse: { text in
                      switch text.trimmingWhitespace().lowercased() {
                      case "true", "yes", "on", "1": true
                      case "false", "no", "off", "0": false
                      default: nil
                      }
                  },
                  render: { $0 ? "true" : "false" })
    }
}

extension Setting where Value == [String] {
    /// A list of items, each checked by `check`: the flag repeated, or items separated by commas
    /// (flag, environment variable, or a string in the file); in the file also a YAML list.
    public init(_ key: String, flag: String? = nil, environmentVariable: String? = nil, default defaultValue: [String] = [],
                allowed: String, help: String, check: @escaping @Sendable (String) -> Bool) {
        self.init(key, flag: flag, environmentVariable: environmentVariable, default: defaultValue,
                  allowed: allowed + ", separated by commas", form: .list, help: help,
                  parse: { text in
                      let items = text.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
                      return items.allSatisfy(check) ? items : nil
                  },
                  render: { $0.joined(separator: ",") })
    }
}

/// How a setting's flag takes its value.
public enum SettingForm: Sendable, Equatable {
    /// `--flag VALUE` or `--flag=VALUE`.
    case value
    /// `--flag` alone means true; `--flag=false` is allowed too.
    case `switch`
    /// `--flag VALUE`, repeatable: the values are collected (joined by commas).
    case list
}

/// A declaration without its value type: what the loader and the printers need.
public protocol AnySetting: Sendable {
    var key: String { get }
    var environmentVariable: String { get }
    var flag: String { get }
    var help: String { get }
    var allowed: String { get }
    var isSecret: Bool { get }
    var form: SettingForm { get }
    var defaultText: String { get }
    func parseAny(_ text: String) -> (any Sendable)?
    func renderAny(_ value: any Sendable) -> String
}

extension Setting: AnySetting {
    public var defaultText: String { render(defaultValue) }
    public func parseAny(_ text: String) -> (any Sendable)? { parse(text) }
    public func renderAny(_ value: any Sendable) -> String {
        (value as? Value).map(render) ?? "\(value)"
    }
}

/// Where an effective value came from, strongest first.
public enum SettingOrigin: Sendable, Equatable, CustomStringConvertible {
    case flag(String)
    case environment(String)
    case file(path: String)
    case defaultValue

    public var description: String {
        switch self {
        case .flag(let flag): "flag --\(flag)"
        case .environment(let name): "environment variable \(name)"
        case .file(let path): "file \(path)"
        case .defaultValue: "default"
        }
    }
}

/// Why the configuration cannot be used; the message names the key, the value and what is allowed.
public enum ConfigError: Error, Equatable, CustomStringConvertible {
    case invalidValue(key: String, value: String, origin: SettingOrigin, allowed: String)
    /// Two settings that are valid alone but not together.
    case inconsistent(String)
    case unknownKey(key: String, path: String, known: [String])
    case unknownFlag(String)
    case missingValue(flag: String)
    case unexpectedArgument(String)
    case unreadableFile(path: String, reason: String)
    case malformedFile(path: String, reason: String)

    public var description: String {
        switch self {
        case .invalidValue(let key, let value, let origin, let allowed):
            "invalid \(key) \"\(value)\" (from \(origin)): allowed is \(allowed)"
        case .inconsistent(let message):
            message
        case .unknownKey(let key, let path, let known):
            "unknown key \(key) in \(path); known keys: \(known.joined(separator: ", "))"
        case .unknownFlag(let flag):
            "unknown option \(flag) (dtm --help lists them)"
        case .missingValue(let flag):
            "option \(flag) needs a value"
        case .unexpectedArgument(let argument):
            "unexpected argument \(argument) (dtm takes options and the subcommand check-config)"
        case .unreadableFile(let path, let reason):
            "cannot read the configuration file \(path): \(reason)"
        case .malformedFile(let path, let reason):
            "the configuration file \(path) is not valid YAML of the expected shape: \(reason)"
        }
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
