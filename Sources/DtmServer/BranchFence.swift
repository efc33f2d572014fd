import DtmEngine
import Foundation
import Logging
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The last check before a branch or back-check call leaves the coordinator, whatever the
/// store holds (rows written by another DTM, or before the allow-list changed):
/// - always: only `http://`, `https://` and gRPC `host:port/…` targets (no `http+unix://`,
///   `unix:` or other schemes, no userinfo);
/// - with an allow-list: the host as written, and a host name's resolved addresses, must be
///   inside it. A refused call is a branch error (logged, retried like a network error).
struct FencedBranchCaller: BranchCaller {
    let inner: any BranchCaller
    let allowList: BranchAllowList?
    let resolve: @Sendable (String, Int) async -> Result<[IPAddress], ResolutionError>

    init(inner: any BranchCaller, allowList: BranchAllowList?,
         resolve: @escaping @Sendable (String, Int) async -> Result<[IPAddress], ResolutionError> = resolveAddresses) {
        self.inner = inner
        self.allowList = allowList
        self.resolve = resolve
    }

    /// Resolving a host name for the allow-list has no deadline of its own.
    var endsCallsWithinTimeout: Bool { allowList == nil && inner.endsCallsWithinTimeout }

    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        if let refusal = await refusal(for: call.url) {
            return .error(message: "branch call refused: \(refusal)")
        }
        return await inner.call(call, of: global)
    }

    /// Why `url` may not be called now; nil when it may.
    func refusal(for url: String) async -> String? {
        guard let parsed = BranchURL(url) else {
            return "'\(Redaction.url(url))' is not an http(s) URL or a gRPC host:port/package.Service/Method target"
        }
        guard let allowList else { return nil }
        let endpoint = BranchEndpoint(parsed)
        switch allowList.verdict(host: endpoint.host, port: endpoint.port) {
        case .allowed: return nil
        case .refused(let why): return "the branch allow-list refuses \(why)"
        case .resolveFirst:
            switch await resolve(endpoint.host, endpoint.port) {
            case .failure(let error):
                return "cannot resolve host '\(endpoint.host)' to check it against the branch allow-list: \(error)"
            case .success(let addresses):
                if case .refused(let why) = allowList.verdict(addresses: addresses, host: endpoint.host, port: endpoint.port) {
                    return "the branch allow-list refuses \(why)"
                }
                return nil
            }
        }
    }
}

struct ResolutionError: Error, CustomStringConvertible {
    let description: String
}

/// getaddrinfo on NIO's blocking-work pool (never on the cooperative pool).
@Sendable func resolveAddresses(host: String, port: Int) async -> Result<[IPAddress], ResolutionError> {
    do {
        return try await NIOThreadPool.singleton.runIfActive { () -> Result<[IPAddress], ResolutionError> in
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            #if canImport(Glibc)
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            #else
            hints.ai_socktype = SOCK_STREAM
            #endif
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &list)
            guard status == 0 else { return .failure(ResolutionError(description: String(cString: gai_strerror(status)))) }
            defer { freeaddrinfo(list) }
            var addresses: [IPAddress] = []
            var next = list
            while let entry = next?.pointee {
                if let address = entry.ai_addr {
                    switch Int32(address.pointee.sa_family) {
                    case AF_INET:
                        address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                            var raw = $0.pointee.sin_addr
                            if let ip = IPAddress(bytes: withUnsafeBytes(of: &raw) { Array($0) }) { addresses.append(ip) }
                        }
                    case AF_INET6:
                        address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                            var raw = $0.pointee.sin6_addr
                            if let ip = IPAddress(bytes: withUnsafeBytes(of: &raw) { Array($0) }) { addresses.append(ip) }
                        }
                    default:
                        break
                    }
                }
                next = entry.ai_next
            }
            return .success(addresses)
        }
    } catch {
        return .failure(ResolutionError(description: "resolver unavailable: \(error)"))
    }
}

/// What may be shown of secrets and remote text (`--redact-query`, logs, rollback reasons).
enum Redaction {
    static let marker = "[redacted]"
    /// Bytes of a remote answer kept in rollback reasons, wait_result errors and logs.
    static let maxRemoteText = 256

    /// `url` with any userinfo (`user:password@`) replaced by the marker.
    static func url(_ url: String) -> String {
        var copy = url
        switch copy.withUTF8({ asciiUserinfo($0) }) {
        case .none: return url
        case .notASCII: break
        case .userinfo(let schemeEnd, let at):
            let utf8 = url.utf8
            return String(url[..<utf8.index(utf8.startIndex, offsetBy: schemeEnd)]) + marker
                + String(url[utf8.index(utf8.startIndex, offsetBy: at)...])
        }
        guard let scheme = url.range(of: "://") else { return url }
        let rest = url[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
        return String(url[..<scheme.upperBound]) + marker + String(rest[at...])
    }

    private enum UserinfoScan {
        /// Not ASCII: read by characters instead.
        case notASCII
        /// No `://`, or no `@` in the authority after it.
        case none
        /// Byte offsets of the end of the first `://` and of the authority's last `@`.
        case userinfo(Int, Int)
    }

    /// Where the userinfo is in ASCII text, by bytes, as `url(_:)` reads any text by characters.
    private static func asciiUserinfo(_ bytes: UnsafeBufferPointer<UInt8>) -> UserinfoScan {
        var schemeEnd = -1
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte >= 0x80 { return .notASCII }
            if schemeEnd < 0, byte == UInt8(ascii: ":"), index + 2 < bytes.count,
               bytes[index + 1] == UInt8(ascii: "/"), bytes[index + 2] == UInt8(ascii: "/") {
                schemeEnd = index + 3
                index += 3
                continue
            }
            index += 1
        }
        guard schemeEnd >= 0 else { return .none }
        var at = -1
        for index in schemeEnd..<bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "/") || byte == UInt8(ascii: "?") || byte == UInt8(ascii: "#") { break }
            if byte == UInt8(ascii: "@") { at = index }
        }
        return at < 0 ? .none : .userinfo(schemeEnd, at)
    }

    /// Branch header values replaced by the marker (names kept: they say what was sent).
    static func headers(_ headers: [String: String]) -> [String: String] {
        headers.mapValues { _ in marker }
    }

    /// A transaction as `/query` and `/all` show it under `--redact-query`.
    static func global(_ global: GlobalTransaction) -> GlobalTransaction {
        var copy = global
        copy.options.branchHeaders = headers(global.options.branchHeaders)
        copy.queryPrepared = url(global.queryPrepared)
        return copy
    }

    static func branch(_ branch: BranchRecord) -> BranchRecord {
        var copy = branch
        copy.url = url(branch.url)
        return copy
    }

    /// Remote text (a branch's response body, a gRPC status message) cut to
    /// `maxRemoteText` bytes on a character boundary, with a marker saying how long it was.
    static func clip(_ text: String, max: Int = maxRemoteText) -> String {
        clipText(text, max: max)
    }

    /// A value for log metadata: clipped (at 1 KiB: remote text in it is clipped before),
    /// userinfo removed, control characters escaped so
    /// that no value can start a line of its own in a text log.
    static func logValue(_ text: String) -> Logger.MetadataValue {
        let redacted = url(text)
        // Printable ASCII within the clip limit (the usual gid, URL or message) is kept as it is.
        if redacted.utf8.count <= 1024, redacted.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            return .string(redacted)
        }
        var out = ""
        for scalar in clip(redacted, max: 1024).unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.properties.generalCategory == .control || scalar == "\u{2028}" || scalar == "\u{2029}" {
                    out += "\\u{\(String(scalar.value, radix: 16))}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return .string(out)
    }
}
