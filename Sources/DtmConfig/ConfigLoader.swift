import Foundation
import Yams

/// What `dtm` was asked to do.
public enum DtmCommand: Sendable, Equatable {
    /// Serve until SIGTERM/SIGINT.
    case run
    /// Validate the configuration, print the effective one, exit.
    case checkConfig
    /// Print the usage and every setting.
    case help
}

/// The command line, the environment and the configuration file, resolved.
public struct LoadedConfig: Sendable {
    public let command: DtmCommand
    public let settings: DtmSettings
    /// The file given with `--config` (or DTM's `-c`), if any.
    public let file: String?
}

/// Reads `dtm`'s settings: flag > environment variable > configuration file > default. Only the
/// winning value of a setting is checked, so a flag can fix a bad value in a shared file.
public enum ConfigLoader {
    /// - Parameters:
    ///   - arguments: the command line without the program name.
    ///   - environment: the process environment (tests pass their own).
    ///   - readFile: reads the configuration file (tests pass their own).
    public static func load(
        arguments: [String], environment: [String: String],
        readFile: (String) throws -> String = { try String(contentsOfFile: $0, encoding: .utf8) }
    ) throws(ConfigError) -> LoadedConfig {
        let line = try CommandLineValues(arguments)
        if line.command == .help { return LoadedConfig(command: .help, settings: DtmSettings(), file: line.file) }
        var raw: [String: (text: String, origin: SettingOrigin)] = [:]
        if let path = line.file {
            let text: String
            do { text = try readFile(path) } catch {
                throw .unreadableFile(path: path, reason: "\(error)")
            }
            for (key, value) in try fileValues(text, path: path) { raw[key] = (value, .file(path: path)) }
        }
        for (key, value) in try environmentValues(environment) { raw[key] = value }
        for (key, value) in line.values { raw[key] = value }

        var settings = DtmSettings()
        for setting in DtmSettings.all {
            guard let (text, origin) = raw[setting.key] else { continue }
            try settings.set(setting, from: text, origin: origin)
        }
        try settings.checkConsistency()
        return LoadedConfig(command: line.command, settings: settings, file: line.file)
    }

    // MARK: - Command line

    struct CommandLineValues {
        var command = DtmCommand.run
        var file: String?
        /// Setting key → (value, origin).
        var values: [String: (String, SettingOrigin)] = [:]

        init(_ arguments: [String]) throws(ConfigError) {
            let byFlag = Dictionary(DtmSettings.all.map { ($0.flag, $0) }, uniquingKeysWith: { first, _ in first })
            var index = 0
            func value(for flag: String, inline: String?) throws(ConfigError) -> String {
                if let inline { return inline }
                index += 1
                guard index < arguments.count else { throw .missingValue(flag: flag) }
                return arguments[index]
            }
            while index < arguments.count {
                let argument = arguments[index]
                var name = argument
                var inline: String?
                if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
                    name = String(argument[..<equals])
                    inline = String(argument[argument.index(after: equals)...])
                }
                switch name {
                case "--help", "-h", "help":
                    command = .help
                case "check-config" where command == .run:
                    command = .checkConfig
                case "--config", "-c":
                    file = try value(for: name, inline: inline)
                default:
                    guard name.hasPrefix("--") else { throw .unexpectedArgument(argument) }
                    guard let setting = byFlag[String(name.dropFirst(2))] else { throw .unknownFlag(name) }
                    switch setting.form {
                    case .value:
                        values[setting.key] = (try value(for: name, inline: inline), .flag(setting.flag))
                    case .switch:
                        values[setting.key] = (inline ?? "true", .flag(setting.flag))
                    case .list:
                        let item = try value(for: name, inline: inline)
                        let earlier = values[setting.key].map { $0.0 + "," } ?? ""
                        values[setting.key] = (earlier + item, .flag(setting.flag))
                    }
                }
                index += 1
            }
        }
    }

    // MARK: - Environment

    /// DTM's variables of its `Store` section (`STORE_DRIVER`, `STORE_HOST`, ...), read when
    /// `STORE` itself is not set.
    static let storeFields = ["Driver", "Host", "Port", "User", "Password", "Db", "Schema", "File"]

    static func environmentValues(_ environment: [String: String]) throws(ConfigError)
        -> [String: (String, SettingOrigin)] {
        var values: [String: (String, SettingOrigin)] = [:]
        for setting in DtmSettings.all {
            // As DTM: an empty variable is not set.
            if let text = environment[setting.environmentVariable], !text.isEmpty {
                values[setting.key] = (text, .environment(setting.environmentVariable))
            }
        }
        let store = DtmSettings.catalog.store
        if values[store.key] == nil {
            var fields: [String: String] = [:]
            for field in storeFields {
                if let text = environment["STORE_" + field.uppercased()], !text.isEmpty { fields[field] = text }
            }
            if !fields.isEmpty {
                let origin = SettingOrigin.environment("STORE_DRIVER")
                values[store.key] = (try storeURL(fromDTMFields: fields, origin: origin), origin)
            }
        }
        return values
    }

    // MARK: - File

    /// The top-level keys of a YAML mapping; an unknown key is refused by name.
    static func fileValues(_ text: String, path: String) throws(ConfigError) -> [String: String] {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw .malformedFile(path: path, reason: "\(error)")
        }
        guard let root else { return [:] }  // an empty (or all-comments) file sets nothing
        guard case .mapping(let mapping) = root else {
            throw .malformedFile(path: path, reason: "the top level must be a mapping of Key: value")
        }
        let known = Dictionary(DtmSettings.all.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        var values: [String: String] = [:]
        for (keyNode, valueNode) in mapping {
            guard let key = keyNode.string else {
                throw .malformedFile(path: path, reason: "a key at line \(keyNode.mark?.line ?? 0) is not a string")
            }
            guard known[key] != nil else {
                throw .unknownKey(key: key, path: path, known: DtmSettings.all.map(\.key))
            }
            switch valueNode {
            case .scalar(let scalar):
                if valueNode.null != nil { continue }  // `Key:` with no value sets nothing
                values[key] = scalar.string
            case .sequence(let items) where known[key]?.form == .list:
                var texts: [String] = []
                for item in items {
                    guard let text = item.string, item.null == nil else {
                        throw .malformedFile(path: path, reason: "\(key) must be a list of single values")
                    }
                    texts.append(text)
                }
                values[key] = texts.joined(separator: ",")
            case .mapping(let fields) where key == DtmSettings.catalog.store.key:
                var strings: [String: String] = [:]
                for (field, value) in fields {
                    guard let name = field.string, storeFields.contains(name) else {
                        throw .unknownKey(key: "Store.\(field.string ?? "?")", path: path,
                                          known: storeFields.map { "Store.\($0)" })
                    }
                    if let text = value.string, value.null == nil { strings[name] = text }
                }
                values[key] = try storeURL(fromDTMFields: strings, origin: .file(path: path))
            default:
                throw .malformedFile(path: path, reason: "\(key) must be a single value")
            }
        }
        return values
    }

    /// DTM's `Store` section as our store string: Driver postgres (Host, Port, User, Password,
    /// Db, Schema) becomes a PostgreSQL URL; Driver sqlite takes File.
    static func storeURL(fromDTMFields fields: [String: String], origin: SettingOrigin) throws(ConfigError) -> String {
        let driver = (fields["Driver"] ?? "").lowercased()
        switch driver {
        case "postgres", "postgresql":
            func encoded(_ text: String) -> String {
                text.addingPercentEncoding(withAllowedCharacters: .urlUserAllowed.subtracting(.init(charactersIn: ":@/"))) ?? text
            }
            let user = fields["User"].map(encoded) ?? ""
            let password = fields["Password"].map { ":" + encoded($0) } ?? ""
            let userinfo = user.isEmpty && password.isEmpty ? "" : "\(user)\(password)@"
            let host = fields["Host"] ?? "localhost"
            let port = fields["Port"] ?? "5432"
            let database = encoded(fields["Db"] ?? "dtm")
            let schema = fields["Schema"].map { "?schema=\($0)" } ?? ""
            return "postgres://\(userinfo)\(host):\(port)/\(database)\(schema)"
        case "sqlite":
            return fields["File"] ?? DtmSettings.catalog.store.defaultValue
        default:
            throw .invalidValue(key: "Store.Driver", value: fields["Driver"] ?? "", origin: origin,
                                allowed: "postgres or sqlite (DTM's mysql, redis and boltdb are not supported)")
        }
    }
}

// MARK: - Printing

extension ConfigLoader {
    /// `dtm --help`: usage and every setting with its flag, key, variable, default and allowed values.
    public static func helpText() -> String {
        var text = """
            swift-dtm: a distributed transaction coordinator that speaks DTM's protocols.

            USAGE: dtm [check-config] [--config <file>] [--<setting> <value>]...

              check-config        validate the configuration, print the effective one, exit (non-zero on error)
              --config, -c <file> a YAML file of settings (keys as below; see dtm.example.yml)
              --help, -h          this text

            Each setting comes from its flag, else its environment variable, else the file, else its default.

            SETTINGS:

            """
        for setting in DtmSettings.all {
            let usage = switch setting.form {
            case .value: "--\(setting.flag) <\(setting.flag)>"
            case .switch: "--\(setting.flag)[=false]"
            case .list: "--\(setting.flag) <\(setting.flag)> (repeatable)"
            }
            text += "  \(usage) (default: \(setting.defaultText))"
                + "  [file: \(setting.key), env: \(setting.environmentVariable)]\n"
            text += "      \(setting.help) Allowed: \(setting.allowed).\n"
        }
        return text
    }

    /// `dtm check-config`: the effective configuration as a YAML file, each line with its origin; secrets redacted.
    public static func effectiveText(_ settings: DtmSettings) -> String {
        let width = DtmSettings.all.map { $0.key.count }.max() ?? 0
        var lines = ["# effective configuration (flag > environment > file > default)"]
        for setting in DtmSettings.all {
            let value = settings.renderedValue(key: setting.key) ?? setting.defaultText
            let shown = Int64(value) != nil ? value : yamlQuoted(value)
            let pad = String(repeating: " ", count: max(0, width - setting.key.count))
            lines.append("\(setting.key):\(pad) \(shown)   # \(settings.origin(key: setting.key))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func yamlQuoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }
}
