@testable import DtmEngine
import Testing

@Suite struct BranchAllowListTests {
    let list: BranchAllowList

    init() throws {
        list = try BranchAllowList(parsing: ["10.0.0.0/8", "busi.internal:8080", "*.svc.local", "[fd00::/8]:443",
                                             "# a comment", "", "192.168.1.7:9000"])
    }

    @Test(arguments: [
        ("10.1.2.3", 80, "allow"), ("10.255.0.1", 36790, "allow"), ("11.0.0.1", 80, "refuse"),
        ("::ffff:10.1.2.3", 80, "allow"),  // IPv4-mapped IPv6 is the IPv4 address
        ("::ffff:127.0.0.1", 80, "refuse"),
        ("busi.internal", 8080, "allow"), ("BUSI.internal.", 8080, "allow"),
        // Not allowed by name: what it resolves to decides (10.0.0.0/8 allows any port).
        ("busi.internal", 8081, "resolve"),
        ("a.svc.local", 1, "allow"), ("svc.local", 1, "resolve"),
        ("fd12::1", 443, "allow"), ("fd12::1", 80, "refuse"), ("fe80::1", 443, "refuse"),
        ("192.168.1.7", 9000, "allow"), ("192.168.1.7", 80, "refuse"), ("127.0.0.1", 80, "refuse"),
    ])
    func hosts(host: String, port: Int, expected: String) {
        let verdict = list.verdict(host: host, port: port)
        let got = switch verdict {
        case .allowed: "allow"
        case .refused: "refuse"
        case .resolveFirst: "resolve"
        }
        #expect(got == expected, "\(host):\(port): \(verdict)")
    }

    @Test func hostNamesOnlyAddressRulesCouldAllowWaitForResolution() throws {
        #expect(list.verdict(host: "localhost", port: 80) == .resolveFirst)
        let loopback = try #require(IPAddress("127.0.0.1"))
        guard case .refused(let why) = list.verdict(addresses: [loopback], host: "localhost", port: 80) else {
            Issue.record("localhost resolving to 127.0.0.1 allowed"); return
        }
        #expect(why.contains("localhost") && why.contains("127.0.0.1"))
        // Every address must be allowed, not just one.
        let inside = try #require(IPAddress("10.0.0.1"))
        guard case .refused = list.verdict(addresses: [inside, loopback], host: "two", port: 80) else {
            Issue.record("one address outside allowed"); return
        }
        guard case .allowed = list.verdict(addresses: [inside], host: "one", port: 80) else {
            Issue.record("address inside refused"); return
        }
    }

    @Test func namesOnlyListRefusesOtherNamesAtOnce() throws {
        let names = try BranchAllowList(parsing: ["busi.internal"])
        guard case .refused(let why) = names.verdict(host: "evil.example", port: 80) else {
            Issue.record("evil.example allowed"); return
        }
        #expect(why.contains("evil.example") && why.contains("busi.internal"))
    }

    @Test(arguments: ["10.0.0.0/33", "busi:0", "busi:x", "[fd00::", "bad host", "1.2.3.4/8/9"])
    func badRulesAreRefused(rule: String) {
        #expect(throws: BranchAllowRule.ParseError.self) { try BranchAllowRule(parsing: rule) }
    }

    @Test func endpoints() {
        #expect(BranchEndpoint(url: "http://busi/a") == BranchEndpoint(host: "busi", port: 80))
        #expect(BranchEndpoint(url: "HTTPS://busi/a") == BranchEndpoint(host: "busi", port: 443))
        #expect(BranchEndpoint(url: "http://[::1]:81/a") == BranchEndpoint(host: "::1", port: 81))
        #expect(BranchEndpoint(url: "busi:5000/p.S/M") == BranchEndpoint(host: "busi", port: 5000))
        #expect(BranchEndpoint(url: "http+unix://%2Ftmp%2Fs/a") == nil)
        #expect(BranchEndpoint(url: "unix:/tmp/s/p.S/M") == nil)
        #expect(BranchEndpoint(url: "http://user:pw@busi/a") == nil)
    }

    @Test func submitOutsideTheListIsRefusedBeforeAnythingIsStored() async throws {
        var limits = RequestLimits()
        limits.branchAllowList = list
        let request = TransRequest(gid: "fence-1", transType: "saga",
                                   steps: [["action": "http://10.0.0.1/a", "compensate": "http://192.168.9.9/c"]],
                                   payloads: [[]])
        #expect(throws: DtmError.self) { _ = try Validation.newTransaction(request, limits: limits) }
        do {
            _ = try Validation.newTransaction(request, limits: limits)
        } catch {
            guard case .permissionDenied(let message) = error else { Issue.record("\(error)"); return }
            #expect(message.contains("steps[0].compensate") && message.contains("http://192.168.9.9/c")
                    && message.contains("10.0.0.0/8"))
        }
    }
}

extension BranchEndpoint {
    init(host: String, port: Int) {
        self = BranchEndpoint(url: "http://x:\(port)/")!
        self.host = host
    }
}
