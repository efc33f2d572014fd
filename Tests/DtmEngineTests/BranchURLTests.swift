@testable import DtmEngine
import Foundation
import Testing

/// The byte-level branch URL reading (`BranchURL`, behind `BranchTarget.of`, `usesTLS` and
/// `BranchEndpoint`) against the reading it replaced (`URLComponents`, `String` searches),
/// kept here as the reference: both must agree on every input.
@Suite struct BranchURLTests {
    static let odd: [String] = [
        "", "/", "://", "http://", "https://", "http:///a", "http://h", "http://h/", "http://h:80", "http://h:80/a",
        "HTTP://Busi:8080/a?b=c#d", "hTtPs://busi/a", "https://busi:0/a", "http://busi:65535/", "http://busi:65536/",
        "http://busi:99999999999999999999/", "http://busi:/a", "http://busi:+80/a", "http://busi:080/a",
        "http://busi:0080/a", "http://[::1]:81/a", "http://[::1]/a", "http://[fe80::1%25eth0]:81/a", "http://[::1/a",
        "http://[]/a", "http://user@busi/a", "http://user:pw@busi/a", "http://:pw@busi/a", "http://@busi/a",
        "http://busi/a@b", "http://busi/a?x=@y", "http://b%75si/a", "http://b%zzsi/a", "http://busi/a%2",
        "http://busi/a%41%42", "http://busi/a b", "http://busi/a\tb", "http://busi/ä", "http://bü.si/a",
        "http://busi/a#b#c", "http://busi/a#b?c/d", "http://busi/{a}", "http://busi/a|b", "http://busi/a\\b",
        "http://busi/a^b", "http://busi/a`b", "http://busi/\"", "http://busi/<a>", "http://busi?x", "http://busi#x",
        "http://bu_si/a", "http://bu~si/a", "http://bu!si/a", "http://bu$si/a", "http://bu,si/a", "http://-busi/a",
        "http://busi./a", "http://1.2.3.4:5/a", "http://busi:8080:90/a", "http+unix://%2Ftmp%2Fs/a", "ftp://busi/a",
        "busi:5000/p.S/M", "busi:5000/p.S/M/", "busi:5000//M", "busi:5000/p.S/", "busi:5000/p.S", "busi:5000/",
        "busi/p.S/M", ":5000/p.S/M", "busi:/p.S/M", "busi:0/p.S/M", "busi:65535/p.S/M", "busi:65536/p.S/M",
        "busi:+5000/p.S/M", "busi:-5000/p.S/M", "busi:-0/p.S/M", "busi:00005000/p.S/M", "busi:+/p.S/M",
        "busi:5x/p.S/M", "bu si:5000/p.S/M", "bu\u{7f}si:5000/p.S/M", "büsi:5000/p.S/M", "bu@si:5000/p.S/M",
        "user@busi:5000/p.S/M", "a:b:5000/p.S/M", "[::1]:5000/p.S/M", "[]:5000/p.S/M", "[x]:5000/p.S/M",
        "[a]b]:5000/p.S/M", "[:5000/p.S/M", "grpcs://busi:5000/p.S/M", "GRPCS://busi:5000/p.S/M",
        "gRpCs://[::1]:5000/p.S/M", "grpcs://", "grpcs:///p.S/M", "grpcs://busi:5000/p.S/M?x", "grpc://busi:5000/p.S/M",
        "grpcs://grpcs://busi:5000/p.S/M", "busi:5000/p.S/a://b", "busi:5000/p.S/M%41", "unix:/tmp/s/p.S/M",
        "busi_1.x-y:5000/p.S/M", "localhost:50051/busi.Busi/TransOut", "http://localhost:8081/api/busi/TransOut",
        "https://busi.example.com/api/busi/TransIn?gid=a&x=%20#frag", String(repeating: "a", count: 300) + ":1/a/b",
    ]

    @Test(arguments: odd)
    func agreesWithTheReadingItReplaced(_ url: String) {
        Self.expectAgreement(url)
    }

    @Test func agreesOnGeneratedURLs() {
        // Deterministic: the same inputs on every run.
        var random = SplitMix64(seed: 0x5EED_0013)
        let alphabet: [String] = "ab1:/.-_~%@[]?#+!$&'()*,;=AZ09fF \"<>\\^`{|}\u{7f}äé\u{301}".map(String.init) + ["%41", "%zz", "::"]
        let prefixes = ["http://", "https://", "HTTP://", "grpcs://", "", "busi:5000/", "http://busi", "http://busi:80",
                        "busi:", "[::1]:1/"]
        var checked = 0
        for _ in 0..<20_000 {
            var url = prefixes[Int(random.next() % UInt64(prefixes.count))]
            for _ in 0..<Int(random.next() % 14) { url += alphabet[Int(random.next() % UInt64(alphabet.count))] }
            Self.expectAgreement(url)
            checked += 1
        }
        #expect(checked == 20_000)
    }

    @Test func partsOfCommonURLs() throws {
        let grpc = try #require(BranchURL("GRPCS://[::1]:5000/busi.Busi/TransOut"))
        #expect(grpc.kind == .grpc && grpc.tls && grpc.host == "::1" && grpc.port == 5000)
        #expect(grpc.authority == "[::1]:5000" && grpc.path == "/busi.Busi/TransOut")
        let plain = try #require(BranchURL("localhost:50051/busi.Busi/TransOut"))
        #expect(plain.kind == .grpc && !plain.tls && plain.host == "localhost" && plain.port == 50051)
        let http = try #require(BranchURL("HTTPS://busi.internal/api?x=1"))
        #expect(http.kind == .http && http.tls && http.host == "busi.internal" && http.port == 443)
        let ipv6 = try #require(BranchURL("http://[fd00::1]:8080/a"))
        #expect(ipv6.kind == .http && ipv6.host == "fd00::1" && ipv6.port == 8080)
        #expect(BranchURL("http://user:pw@busi/a") == nil)
        #expect(BranchURL("") == nil)
        #expect(BranchURL("busi:5000/p.S/M\u{e9}") == nil)
    }

    static func expectAgreement(_ url: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(BranchTarget.of(url) == Legacy.of(url), "\(url.debugDescription)", sourceLocation: sourceLocation)
        #expect(BranchTarget.usesTLS(url) == Legacy.usesTLS(url), "\(url.debugDescription)",
                sourceLocation: sourceLocation)
        let endpoint = BranchEndpoint(url: url)
        let legacy = Legacy.endpoint(url)
        #expect(endpoint?.host == legacy?.host && endpoint?.port == legacy?.port, "\(url.debugDescription)",
                sourceLocation: sourceLocation)
    }

    /// The reading before byte-level parsing, verbatim.
    enum Legacy {
        static func usesTLS(_ url: String) -> Bool {
            url.utf8.count > BranchTarget.grpcTLSPrefix.utf8.count && url.lowercased().hasPrefix(BranchTarget.grpcTLSPrefix)
        }

        static func of(_ url: String) -> BranchTarget? {
            guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
            let lower = url.lowercased()
            if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
                guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty,
                      components.user == nil, components.password == nil else { return nil }
                return .http
            }
            let url = usesTLS(url) ? String(url.dropFirst(BranchTarget.grpcTLSPrefix.count)) : url
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

        static func endpoint(_ url: String) -> (host: String, port: Int)? {
            switch of(url) {
            case .http?:
                guard let components = URLComponents(string: url), let host = components.host, let scheme = components.scheme
                else { return nil }
                return (unbracketed(host), components.port ?? (scheme.lowercased() == "https" ? 443 : 80))
            case .grpc(let authority, _)?:
                guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...])
                else { return nil }
                return (unbracketed(String(authority[..<colon])), port)
            case nil:
                return nil
            }
        }

        static func unbracketed(_ host: String) -> String {
            host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        }
    }
}

/// A small deterministic generator for test inputs.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
