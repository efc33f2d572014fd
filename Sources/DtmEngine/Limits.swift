import Foundation

/// Bounds on what one request may ask of the coordinator. A request beyond one is refused
/// with INVALID_ARGUMENT / HTTP 400 naming the field, and nothing is stored, so every stored
/// row stays small enough to read back and drive.
public struct RequestLimits: Sendable, Equatable {
    /// Steps of a saga or msg (each saga step is two branch rows).
    public var maxSteps: Int
    /// Bytes of `custom_data`.
    public var maxCustomDataBytes: Int
    /// Entries of `branch_headers`.
    public var maxBranchHeaders: Int
    /// Bytes of all `branch_headers` names and values together.
    public var maxBranchHeaderBytes: Int
    /// `retry_limit` (immediate retries of a saga action).
    public var maxRetryLimit: Int64
    /// `request_timeout` in seconds: a branch call holds a pass slot at most this long.
    public var maxRequestTimeout: Int64
    /// Bytes of a branch URL or query_prepared URL.
    public var maxURLBytes: Int
    /// Bytes of `rollback_reason` given by a client (Abort, workflow submit).
    public var maxReasonBytes: Int
    /// Where branch and back-check URLs may point (`--branch-allow`); nil allows any host.
    /// A URL outside it is refused with PERMISSION_DENIED / HTTP 403 and nothing is stored.
    public var branchAllowList: BranchAllowList? = nil

    public init(maxSteps: Int = 1000, maxCustomDataBytes: Int = 64 << 10, maxBranchHeaders: Int = 64,
                maxBranchHeaderBytes: Int = 16 << 10, maxRetryLimit: Int64 = 1_000_000,
                maxRequestTimeout: Int64 = 3600, maxURLBytes: Int = 2048, maxReasonBytes: Int = 4096) {
        self.maxSteps = maxSteps
        self.maxCustomDataBytes = maxCustomDataBytes
        self.maxBranchHeaders = maxBranchHeaders
        self.maxBranchHeaderBytes = maxBranchHeaderBytes
        self.maxRetryLimit = maxRetryLimit
        self.maxRequestTimeout = maxRequestTimeout
        self.maxURLBytes = maxURLBytes
        self.maxReasonBytes = maxReasonBytes
    }
}

/// Where a branch URL sends its calls (spec 4.1).
public enum BranchTarget: Sendable, Equatable {
    /// An `http://` or `https://` URL.
    case http
    /// `host:port/package.Service/Method`: `authority` is `host:port`, `path` `/package.Service/Method`.
    /// The same with a `grpcs://` prefix is a gRPC target over TLS (see `usesTLS`).
    case grpc(authority: String, path: String)

    /// The prefix of gRPC branch URLs called over TLS.
    public static let grpcTLSPrefix = "grpcs://"

    /// Whether `url` is a `grpcs://` gRPC target, called over TLS.
    public static func usesTLS(_ url: String) -> Bool {
        url.utf8.count > grpcTLSPrefix.utf8.count && url.lowercased().hasPrefix(grpcTLSPrefix)
    }

    /// Classifies `url`; nil when it is neither form (other schemes, unix sockets, spaces,
    /// control characters, a gRPC target without port or method).
    public static func of(_ url: String) -> BranchTarget? {
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        let lower = url.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty,
                  components.user == nil, components.password == nil else { return nil }
            return .http
        }
        let url = usesTLS(url) ? String(url.dropFirst(grpcTLSPrefix.count)) : url
        guard !url.contains("://"), let slash = url.firstIndex(of: "/") else { return nil }
        let authority = String(url[..<slash])
        let path = String(url[slash...])
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[1].isEmpty, !parts[2].isEmpty,
              let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        let host = authority[..<colon]
        let bracketed = host.hasPrefix("[") && host.hasSuffix("]") && host.count > 2
        guard bracketed || (!host.isEmpty && host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" }))
        else { return nil }
        return .grpc(authority: authority, path: path)
    }
}

extension Validation {
    /// gid, branch_id and other keys: 1…`max` bytes of printable text. NUL, control and
    /// format characters, whitespace and U+FFFD (the mark of bytes that were not UTF-8) are
    /// refused rather than cut or repaired, so two clients' ids can never collide in storage.
    static func identifier(_ value: String, field: String, max: Int) throws(DtmError) {
        if value.isEmpty { throw DtmError.invalidArgument("\(field): must not be empty") }
        let count = value.utf8.count
        if count > max { throw DtmError.invalidArgument("\(field): \(count) bytes, at most \(max) allowed") }
        var offset = 0
        for scalar in value.unicodeScalars {
            if let problem = Self.unprintable(scalar) {
                throw DtmError.invalidArgument(
                    "\(field): \(problem) (U+\(String(scalar.value, radix: 16, uppercase: true))) at byte \(offset); "
                    + "ids must be printable text without spaces")
            }
            offset += String(scalar).utf8.count
        }
    }

    private static func unprintable(_ scalar: Unicode.Scalar) -> String? {
        if scalar == "\0" { return "NUL" }
        if scalar == "\u{FFFD}" { return "replacement character (the input was not UTF-8)" }
        if scalar.properties.isWhitespace { return "whitespace" }
        switch scalar.properties.generalCategory {
        case .control: return "control character"
        case .format, .surrogate, .privateUse, .unassigned: return "invisible or unassigned character"
        default: return nil
        }
    }

    /// A branch or back-check URL: empty (no call), `http(s)://host...`, or for gRPC
    /// transactions also `host:port/package.Service/Method`.
    static func url(_ url: String, field: String, transProtocol: TransProtocol,
                    limits: RequestLimits) throws(DtmError) {
        if url.isEmpty { return }
        if url.utf8.count > limits.maxURLBytes {
            throw DtmError.invalidArgument("\(field): \(url.utf8.count) bytes, at most \(limits.maxURLBytes) allowed")
        }
        switch BranchTarget.of(url) {
        case .http?: return try fence(url, field: field, limits: limits)
        case .grpc? where transProtocol == .grpc: return try fence(url, field: field, limits: limits)
        case .grpc?:
            throw DtmError.invalidArgument(
                "\(field): '\(url)' is a gRPC target but the transaction's protocol is \(transProtocol.rawValue); "
                + "use an http(s):// URL or protocol grpc")
        case nil:
            let shown = url.count > 80 ? String(url.prefix(80)) + "…" : url
            throw DtmError.invalidArgument(
                "\(field): '\(shown.debugDescription.dropFirst().dropLast())' is not a branch URL: expected "
                + "http://host/path or https://host/path"
                + (transProtocol == .grpc ? " or host:port/package.Service/Method (grpcs://host:port/... for TLS)" : ""))
        }
    }

    /// The allow-list on the host as written; a host name only address rules could allow is
    /// left to the call-time check, which sees what it resolves to.
    private static func fence(_ url: String, field: String, limits: RequestLimits) throws(DtmError) {
        guard let list = limits.branchAllowList else { return }
        guard let endpoint = BranchEndpoint(url: url) else {
            throw DtmError.permissionDenied("\(field): '\(url)' is refused by the branch allow-list: no host and port")
        }
        if case .refused(let why) = list.verdict(host: endpoint.host, port: endpoint.port) {
            throw DtmError.permissionDenied("\(field): '\(url)' is refused by the branch allow-list (--branch-allow): \(why)")
        }
    }

    /// Text a client gives for storage (rollback reasons): bounded and without NUL.
    static func text(_ value: String, field: String, max: Int) throws(DtmError) {
        if value.utf8.count > max {
            throw DtmError.invalidArgument("\(field): \(value.utf8.count) bytes, at most \(max) allowed")
        }
        if value.utf8.contains(0) { throw DtmError.invalidArgument("\(field): must not contain NUL") }
    }

    /// Characters besides letters and digits that an HTTP header name (a token) may hold.
    private static let httpTokenPunctuation = Set("!#$%&'*+-.^_`|~".utf8)

    /// branch_headers: bounded in number and size; names are HTTP tokens, values carry no
    /// line breaks or NUL (they become HTTP headers and gRPC metadata).
    static func branchHeaders(_ headers: [String: String], limits: RequestLimits) throws(DtmError) {
        if headers.count > limits.maxBranchHeaders {
            throw DtmError.invalidArgument(
                "branch_headers: \(headers.count) headers, at most \(limits.maxBranchHeaders) allowed")
        }
        var total = 0
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
            total += name.utf8.count + value.utf8.count
            guard !name.isEmpty, name.utf8.allSatisfy({ byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || httpTokenPunctuation.contains(byte)
            }) else {
                throw DtmError.invalidArgument("branch_headers: '\(name)' is not a valid header name")
            }
            if value.utf8.contains(where: { $0 == 0 || $0 == 0x0A || $0 == 0x0D }) {
                throw DtmError.invalidArgument("branch_headers.\(name): value must not contain CR, LF or NUL")
            }
            // gRPC sends `-bin` metadata as base64 of bytes: the value must be that already.
            if name.lowercased().hasSuffix("-bin") {
                let padded = value + String(repeating: "=", count: (4 - value.utf8.count % 4) % 4)
                if Data(base64Encoded: padded) == nil {
                    throw DtmError.invalidArgument("branch_headers.\(name): a -bin header's value must be base64")
                }
            }
        }
        if total > limits.maxBranchHeaderBytes {
            throw DtmError.invalidArgument(
                "branch_headers: \(total) bytes, at most \(limits.maxBranchHeaderBytes) allowed")
        }
    }
}
