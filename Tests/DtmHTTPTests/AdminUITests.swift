import AsyncHTTPClient
import DtmEngine
@testable import DtmServer
import DtmTestSupport
import Foundation
import NIOCore
import Testing

/// The admin UI's files as the HTTP port serves them. The page itself runs in a real browser in
/// InteropTests/AdminUIBrowserTests.swift.
@Suite struct AdminUITests {
    struct Served: Sendable {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]
    }

    static func get(_ port: Int, _ path: String, authorization: String? = nil) async throws -> Served {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 4 << 20)
        var headers: [String: String] = [:]
        for header in response.headers { headers[header.name.lowercased()] = header.value }
        return Served(status: Int(response.status.code), headers: headers, body: Array(buffer: bytes))
    }

    static let files: [(path: String, type: String, bytes: [UInt8])] = [
        ("/admin", "text/html; charset=utf-8", PackageResources.admin_html),
        ("/admin/", "text/html; charset=utf-8", PackageResources.admin_html),
        ("/admin/index.html", "text/html; charset=utf-8", PackageResources.admin_html),
        ("/admin/admin.js", "text/javascript; charset=utf-8", PackageResources.admin_js),
        ("/admin/admin.css", "text/css; charset=utf-8", PackageResources.admin_css),
    ]

    /// With authentication on, the files (no data in them) load without a token; the API does not.
    @Test func filesAreServedWithoutATokenUnderAStrictPolicy() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-admin-ui-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let tokens = folder.appendingPathComponent("tokens")
        try Data("admin-ui-test-token\n".utf8).write(to: tokens)
        var config = CoordinatorConfig(host: "127.0.0.1", grpcPort: 0, httpPort: 0, engine: quickEngine)
        config.security = SecurityConfig(auth: AuthConfig(tokensFile: tokens.path))
        try await withStarted(await CoordinatorServer.start(config, store: InMemoryStore(), branchCaller: RecordingCaller(),
                                                            logger: testLogger)) { coordinator in
            for file in Self.files {
                let served = try await Self.get(coordinator.httpPort, file.path)
                #expect(served.status == 200, "\(file.path)")
                #expect(served.headers["content-type"] == file.type, "\(file.path)")
                #expect(served.body == file.bytes, "\(file.path)")
                let policy = served.headers["content-security-policy"] ?? ""
                #expect(policy.contains("default-src 'none'") && policy.contains("script-src 'self'")
                        && !policy.contains("unsafe"), "\(file.path): \(policy)")
                #expect(served.headers["x-content-type-options"] == "nosniff")
                #expect(served.headers["cache-control"] == "no-cache")
            }
            #expect(try await Self.get(coordinator.httpPort, "/api/dtmsvr/version").status == 401)
            #expect(try await Self.get(coordinator.httpPort, "/admin/other.js").status == 401,
                    "an unknown path tells a client without a token nothing")
            #expect(try await Self.get(coordinator.httpPort, "/api/dtmsvr/version",
                                       authorization: "Bearer admin-ui-test-token").status == 200)
        }
    }

    /// The page relies on the policy forbidding inline script, and renders data only through DOM
    /// APIs (the browser test shows markup in a gid and an error stays text).
    @Test func pageHasNoInlineScriptAndNoHTMLStringSinks() {
        let html = String(decoding: PackageResources.admin_html, as: UTF8.self)
        let script = String(decoding: PackageResources.admin_js, as: UTF8.self)
        let scriptTags = html.components(separatedBy: "<script").dropFirst()
        #expect(scriptTags.count == 1)
        #expect(scriptTags.allSatisfy { $0.hasPrefix(" src=\"/admin/admin.js\"") && $0.contains("></script>") })
        #expect(!html.contains(" style=") && !html.contains(" onclick=") && !html.contains(" onload="))
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            let uses = script.contains(sink)
            #expect(!uses, "admin.js uses \(sink)")
        }
    }
}
