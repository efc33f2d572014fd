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

    /// Whether `url` is a `grpcs://` gRPC target (any case), called over TLS.
    public static func usesTLS(_ url: String) -> Bool {
        var copy = url
        return copy.withUTF8 { BranchURL.hasTLSPrefix($0) }
    }

    /// Classifies `url`; nil when it is neither form (other schemes, unix sockets, spaces,
    /// control characters, a gRPC target without port or method).
    public static func of(_ url: String) -> BranchTarget? {
        guard let parsed = BranchURL(url) else { return nil }
        switch parsed.kind {
        case .http: return .http
        case .grpc: return .grpc(authority: String(parsed.authority), path: String(parsed.path))
        }
    }
}

/// A branch URL read once, byte by byte: which kind of target it is and where its parts are.
/// Accepts exactly the URLs `BranchTarget.of` accepts. The parts are slices of the URL, so
/// reading one costs no copy until it is made a `String`.
///
/// - gRPC (`host:port/package.Service/Method`, optionally `grpcs://` in any case): printable
///   ASCII, no other `://`, a path of exactly two non-empty segments, a port 1...65535 after the
///   authority's last colon (written as Swift's `Int` reads it: an optional `+`, leading zeros),
///   a host of letters, digits, `.`, `-`, `_` or anything in brackets.
/// - HTTP (`http://` or `https://` in any case): a URL that Foundation's `URLComponents` reads with
///   a non-empty host and no userinfo. The common shape (a plain host name or IPv4 address, a
///   port 1...65535, then path, query and fragment of RFC 3986 characters) is read here; anything
///   else (IPv6 literals, percent escapes in the host, `@`, characters outside RFC 3986) is left to
///   `URLComponents`, so both readings agree.
public struct BranchURL: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case http
        case grpc
    }

    public let kind: Kind
    /// `https://` or `grpcs://`.
    public let tls: Bool
    /// The host as written; brackets around an IPv6 literal removed.
    public let host: Substring
    /// The port written, else 80 (http) or 443 (https).
    public let port: Int
    /// gRPC only: `host:port` (brackets kept); empty for HTTP.
    public let authority: Substring
    /// gRPC only: `/package.Service/Method`; empty for HTTP.
    public let path: Substring

    public init?(_ url: String) {
        var copy = url
        guard let scan = copy.withUTF8({ Self.scan($0) }) else { return nil }
        let utf8 = url.utf8
        func slice(_ range: Range<Int>) -> Substring {
            url[utf8.index(utf8.startIndex, offsetBy: range.lowerBound)..<utf8.index(utf8.startIndex, offsetBy: range.upperBound)]
        }
        switch scan {
        case .grpc(let tls, let authority, let host, let port, let pathStart):
            self.init(kind: .grpc, tls: tls, host: slice(host), port: port, authority: slice(authority),
                      path: slice(pathStart..<utf8.count))
        case .http(let tls, let host, let port):
            self.init(kind: .http, tls: tls, host: slice(host), port: port ?? (tls ? 443 : 80),
                      authority: "", path: "")
        case .httpUnusual(let tls):
            guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty,
                  components.user == nil, components.password == nil else { return nil }
            let unbracketed = host.hasPrefix("[") && host.hasSuffix("]") ? host.dropFirst().dropLast() : Substring(host)
            self.init(kind: .http, tls: tls, host: unbracketed, port: components.port ?? (tls ? 443 : 80),
                      authority: "", path: "")
        }
    }

    private init(kind: Kind, tls: Bool, host: Substring, port: Int, authority: Substring, path: Substring) {
        self.kind = kind
        self.tls = tls
        self.host = host
        self.port = port
        self.authority = authority
        self.path = path
    }

    /// Byte offsets of what a scan found.
    enum Scan: Equatable {
        case grpc(tls: Bool, authority: Range<Int>, host: Range<Int>, port: Int, pathStart: Int)
        /// A plain http(s) URL: host range and the port if written.
        case http(tls: Bool, host: Range<Int>, port: Int?)
        /// An http(s) URL of a shape this scan leaves to `URLComponents`.
        case httpUnusual(tls: Bool)
    }

    static func hasTLSPrefix(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        bytes.count > 8 && hasPrefix(bytes, "grpcs://")
    }

    /// Whether `bytes` start with `lowercasePrefix` (ASCII), in any case.
    private static func hasPrefix(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercasePrefix: StaticString) -> Bool {
        let count = lowercasePrefix.utf8CodeUnitCount
        guard bytes.count >= count else { return false }
        let prefix = lowercasePrefix.utf8Start
        for index in 0..<count where lowered(bytes[index]) != prefix[index] { return false }
        return true
    }

    private static func lowered(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    private static func isAlphaNumeric(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: false
        }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        isDigit(byte) || (lowered(byte) >= UInt8(ascii: "a") && lowered(byte) <= UInt8(ascii: "f"))
    }

    static func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> Scan? {
        for byte in bytes where byte <= 0x20 || byte >= 0x7F { return nil }
        if hasPrefix(bytes, "http://") { return scanHTTP(bytes, from: 7, tls: false) }
        if hasPrefix(bytes, "https://") { return scanHTTP(bytes, from: 8, tls: true) }
        let tls = hasTLSPrefix(bytes)
        let start = tls ? 8 : 0
        let end = bytes.count
        // No other scheme, and the authority ends at the first slash.
        var slash = -1
        var index = start
        while index < end {
            let byte = bytes[index]
            if byte == UInt8(ascii: ":"), index + 2 < end, bytes[index + 1] == UInt8(ascii: "/"),
               bytes[index + 2] == UInt8(ascii: "/") { return nil }
            if byte == UInt8(ascii: "/"), slash < 0 { slash = index }
            index += 1
        }
        guard slash >= 0 else { return nil }
        // The path: `/service/method`, both segments non-empty, no third.
        var slashes = 0
        var previous = slash
        for index in (slash + 1)..<end where bytes[index] == UInt8(ascii: "/") {
            slashes += 1
            if slashes > 1 || index == previous + 1 { return nil }
            previous = index
        }
        guard slashes == 1, previous != end - 1 else { return nil }
        // The authority: host, the last colon, a port as `Int` reads it.
        var colon = -1
        for index in start..<slash where bytes[index] == UInt8(ascii: ":") { colon = index }
        guard colon >= 0 else { return nil }
        var digit = colon + 1
        if digit < slash, bytes[digit] == UInt8(ascii: "+") { digit += 1 }
        guard digit < slash else { return nil }
        var port = 0
        while digit < slash {
            let byte = bytes[digit]
            guard isDigit(byte) else { return nil }
            port = port * 10 + Int(byte - UInt8(ascii: "0"))
            guard port <= 65535 else { return nil }
            digit += 1
        }
        guard port >= 1 else { return nil }
        var host = start..<colon
        if host.count > 2, bytes[start] == UInt8(ascii: "["), bytes[colon - 1] == UInt8(ascii: "]") {
            host = (start + 1)..<(colon - 1)
        } else {
            guard !host.isEmpty else { return nil }
            for index in host {
                let byte = bytes[index]
                guard isAlphaNumeric(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
                        || byte == UInt8(ascii: "_") else { return nil }
            }
        }
        return .grpc(tls: tls, authority: start..<slash, host: host, port: port, pathStart: slash)
    }

    /// After `http://` or `https://`: the plain shape, or `.httpUnusual` for `URLComponents`.
    private static func scanHTTP(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, tls: Bool) -> Scan {
        let end = bytes.count
        var index = start
        // Host: unreserved characters only (no `%`, `[`, `@` or sub-delims).
        while index < end {
            let byte = bytes[index]
            guard isAlphaNumeric(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "~") else { break }
            index += 1
        }
        let host = start..<index
        guard !host.isEmpty else { return .httpUnusual(tls: tls) }
        var port: Int?
        if index < end, bytes[index] == UInt8(ascii: ":") {
            index += 1
            let digits = index
            var value = 0
            while index < end, isDigit(bytes[index]), index - digits < 5 {
                value = value * 10 + Int(bytes[index] - UInt8(ascii: "0"))
                index += 1
            }
            guard index > digits, (1...65535).contains(value) else { return .httpUnusual(tls: tls) }
            port = value
        }
        guard index == end || bytes[index] == UInt8(ascii: "/") || bytes[index] == UInt8(ascii: "?")
                || bytes[index] == UInt8(ascii: "#") else { return .httpUnusual(tls: tls) }
        // Path, query, fragment: RFC 3986 pchar, `/`, `?`, and one `#`.
        var fragment = false
        while index < end {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"),
                 UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("),
                 UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"),
                 UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "/"), UInt8(ascii: "?"):
                index += 1
            case UInt8(ascii: "%"):
                guard index + 2 < end, isHexDigit(bytes[index + 1]), isHexDigit(bytes[index + 2]) else {
                    return .httpUnusual(tls: tls)
                }
                index += 3
            case UInt8(ascii: "#") where !fragment:
                fragment = true
                index += 1
            default:
                return .httpUnusual(tls: tls)
            }
        }
        return .http(tls: tls, host: host, port: port)
    }
}

extension Validation {
    /// gid, branch_id and other keys: 1…`max` bytes of printable text. NUL, control and
    /// format characters, whitespace and U+FFFD (the mark of bytes that were not UTF-8) are
    /// refused rather than cut or repaired, so two clients' ids can never collide in storage.
    static func identifier(_ value: String, field: @autoclosure () -> String, max: Int) throws(DtmError) {
        if value.isEmpty { throw DtmError.invalidArgument("\(field()): must not be empty") }
        let count = value.utf8.count
        if count > max { throw DtmError.invalidArgument("\(field()): \(count) bytes, at most \(max) allowed") }
        // Printable ASCII (the usual id) needs no Unicode tables.
        if value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { return }
        var offset = 0
        for scalar in value.unicodeScalars {
            if let problem = Self.unprintable(scalar) {
                throw DtmError.invalidArgument(
                    "\(field()): \(problem) (U+\(String(scalar.value, radix: 16, uppercase: true))) at byte \(offset); "
                    + "ids must be printable text without spaces")
            }
            offset += UTF8.width(scalar)
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
    static func url(_ url: String, field: @autoclosure () -> String, transProtocol: TransProtocol,
                    limits: RequestLimits) throws(DtmError) {
        if url.isEmpty { return }
        if url.utf8.count > limits.maxURLBytes {
            throw DtmError.invalidArgument("\(field()): \(url.utf8.count) bytes, at most \(limits.maxURLBytes) allowed")
        }
        guard let parsed = BranchURL(url) else {
            let shown = url.count > 80 ? String(url.prefix(80)) + "…" : url
            throw DtmError.invalidArgument(
                "\(field()): '\(shown.debugDescription.dropFirst().dropLast())' is not a branch URL: expected "
                + "http://host/path or https://host/path"
                + (transProtocol == .grpc ? " or host:port/package.Service/Method (grpcs://host:port/... for TLS)" : ""))
        }
        if parsed.kind == .grpc && transProtocol != .grpc {
            throw DtmError.invalidArgument(
                "\(field()): '\(url)' is a gRPC target but the transaction's protocol is \(transProtocol.rawValue); "
                + "use an http(s):// URL or protocol grpc")
        }
        try fence(url, parsed, field: field(), limits: limits)
    }

    /// The allow-list on the host as written; a host name only address rules could allow is
    /// left to the call-time check, which sees what it resolves to.
    private static func fence(_ url: String, _ parsed: BranchURL, field: @autoclosure () -> String,
                              limits: RequestLimits) throws(DtmError) {
        guard let list = limits.branchAllowList else { return }
        let endpoint = BranchEndpoint(parsed)
        if case .refused(let why) = list.verdict(host: endpoint.host, port: endpoint.port) {
            throw DtmError.permissionDenied("\(field()): '\(url)' is refused by the branch allow-list (--branch-allow): \(why)")
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
        if headers.isEmpty { return }
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
