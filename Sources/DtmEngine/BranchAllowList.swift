import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4
/// address, so a rule for `10.0.0.0/8` cannot be bypassed by writing the address as IPv6.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 bytes (IPv6), network order.
    public let bytes: [UInt8]

    /// Parses a numeric address (brackets around IPv6 allowed); nil for anything else,
    /// host names included.
    public init?(_ text: some StringProtocol) {
        var text = String(text)
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(bytes: withUnsafeBytes(of: &v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        self.init(bytes: withUnsafeBytes(of: &v6) { Array($0) })
    }

    /// From 4 or 16 raw bytes; nil for another length.
    public init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4:
            self.bytes = bytes
        case 16:
            let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
            self.bytes = mapped ? Array(bytes[12...]) : bytes
        default:
            return nil
        }
    }

    public var isIPv4: Bool { bytes.count == 4 }

    public var description: String {
        if isIPv4 { return bytes.map(String.init).joined(separator: ".") }
        var groups: [String] = []
        for index in stride(from: 0, to: 16, by: 2) {
            groups.append(String(UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]), radix: 16))
        }
        return groups.joined(separator: ":")
    }
}

/// One entry of the branch allow-list (`--branch-allow`): a host name (`busi.internal`,
/// `*.svc.cluster.local`), an address or network (`10.1.2.3`, `10.0.0.0/8`, `fd00::/8`),
/// each optionally with a port (`busi.internal:8080`, `10.0.0.0/8:443`, `[fd00::/8]:443`).
public struct BranchAllowRule: Sendable, Hashable, CustomStringConvertible {
    public enum Host: Sendable, Hashable {
        /// A DNS name, lowercased, without a trailing dot; `*.` prefix matches any subdomain.
        case name(String)
        /// A network: the address's first `prefixLength` bits.
        case network(IPAddress, prefixLength: Int)
    }

    public let host: Host
    /// nil allows every port.
    public let port: Int?
    /// The rule as written (shown in refusals).
    public let text: String

    /// A rule that cannot be read; the message says why.
    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    public init(parsing raw: String) throws(ParseError) {
        let text = raw.trimmingCharacters(in: .whitespaces)
        func fail(_ why: String) -> ParseError { ParseError(description: "branch allow rule '\(text)': \(why)") }
        guard !text.isEmpty else { throw fail("empty") }
        var hostPart = Substring(text)
        var port: Int?
        if hostPart.hasPrefix("[") {
            guard let close = hostPart.firstIndex(of: "]") else { throw fail("unclosed '['") }
            let rest = hostPart[hostPart.index(after: close)...]
            hostPart = hostPart[hostPart.index(after: hostPart.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let value = Int(rest.dropFirst()) else { throw fail("expected ':port' after ']'") }
                port = value
            }
        } else if hostPart.filter({ $0 == ":" }).count == 1, let colon = hostPart.lastIndex(of: ":") {
            guard let value = Int(hostPart[hostPart.index(after: colon)...]) else { throw fail("port is not a number") }
            port = value
            hostPart = hostPart[..<colon]
        }
        if let port, !(1...65535).contains(port) { throw fail("port must be 1...65535") }
        if let slash = hostPart.firstIndex(of: "/") {
            guard let address = IPAddress(hostPart[..<slash]), let bits = Int(hostPart[hostPart.index(after: slash)...]),
                  (0...(address.bytes.count * 8)).contains(bits) else {
                throw fail("not an address/prefix-length network")
            }
            host = .network(address, prefixLength: bits)
        } else if let address = IPAddress(hostPart) {
            host = .network(address, prefixLength: address.bytes.count * 8)
        } else {
            let name = BranchAllowList.normalized(hostName: hostPart)
            let labels = name.hasPrefix("*.") ? name.dropFirst(2) : Substring(name)
            guard !labels.isEmpty, labels.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" })
            else { throw fail("not a host name, address or network") }
            host = .name(name)
        }
        self.port = port
        self.text = text
    }

    public var description: String { text }

    func allows(port candidate: Int) -> Bool { port == nil || port == candidate }

    func matches(name: String) -> Bool {
        guard case .name(let pattern) = host else { return false }
        if pattern.hasPrefix("*.") { return name.hasSuffix(pattern.dropFirst()) && name.count > pattern.count - 1 }
        return name == pattern
    }

    func matches(address: IPAddress) -> Bool {
        guard case .network(let network, let bits) = host, network.bytes.count == address.bytes.count else { return false }
        var remaining = bits
        for (a, b) in zip(network.bytes, address.bytes) where remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xFF : ~(0xFF >> UInt8(remaining))
            if a & mask != b & mask { return false }
            remaining -= 8
        }
        return true
    }
}

/// Where branch and back-check calls may go (`--branch-allow`). Checked when a URL is
/// accepted (Submit, Prepare, RegisterBranch, topic subscribers) on the host as written, and
/// again by the server right before each call on the addresses the host resolves to.
public struct BranchAllowList: Sendable, Hashable, CustomStringConvertible {
    public let rules: [BranchAllowRule]

    public init(rules: [BranchAllowRule]) { self.rules = rules }

    /// Parses rules (blank entries and `#` comments skipped).
    public init(parsing texts: [String]) throws(BranchAllowRule.ParseError) {
        var rules: [BranchAllowRule] = []
        for text in texts {
            let line = text.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            if line.allSatisfy(\.isWhitespace) { continue }
            rules.append(try BranchAllowRule(parsing: String(line)))
        }
        self.rules = rules
    }

    public var description: String { rules.map(\.text).joined(separator: ", ") }

    /// The verdict on a host and port.
    public enum Verdict: Sendable, Equatable {
        /// A rule allows it.
        case allowed(rule: String)
        /// A host name no name rule names, while address rules exist: the addresses it resolves
        /// to decide, at call time.
        case resolveFirst
        /// Refused; the text says why.
        case refused(String)
    }

    /// The verdict on `host` (as written in a URL) and `port`.
    public func verdict(host: String, port: Int) -> Verdict {
        if let address = IPAddress(host) { return verdict(addresses: [address], host: host, port: port) }
        let name = Self.normalized(hostName: host)
        if let rule = rules.first(where: { $0.matches(name: name) && $0.allows(port: port) }) {
            return .allowed(rule: rule.text)
        }
        if rules.contains(where: { if case .network = $0.host { $0.allows(port: port) } else { false } }) {
            return .resolveFirst
        }
        return .refused("host '\(host)' port \(port) matches no rule (allowed: \(self))")
    }

    /// The verdict on the addresses `host` resolved to: every one must be allowed.
    public func verdict(addresses: [IPAddress], host: String, port: Int) -> Verdict {
        guard !addresses.isEmpty else { return .refused("host '\(host)' resolved to no address") }
        var allowedBy = ""
        for address in addresses {
            guard let rule = rules.first(where: { $0.matches(address: address) && $0.allows(port: port) }) else {
                let shown = IPAddress(host) == nil ? "host '\(host)' resolves to \(address)" : "address \(address)"
                return .refused("\(shown) port \(port), outside every rule (allowed: \(self))")
            }
            allowedBy = rule.text
        }
        return .allowed(rule: allowedBy)
    }

    static func normalized(hostName: some StringProtocol) -> String {
        var name = hostName.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        return name
    }
}

/// The host and port a branch URL calls, as written: `http(s)://host[:port]/…` (port 80 or
/// 443 by default) or gRPC `host:port/package.Service/Method`. Brackets of IPv6 hosts removed.
public struct BranchEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init?(url: String) {
        guard let parsed = BranchURL(url) else { return nil }
        self.init(parsed)
    }

    public init(_ url: BranchURL) {
        host = String(url.host)
        port = url.port
    }
}
