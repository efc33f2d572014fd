import Hummingbird
import NIOCore

/// The admin web UI at `/admin` (issue 10 item 5): one HTML page, a script and a stylesheet,
/// kept as ordinary files in `Sources/DtmServer/AdminUI/` and embedded in the binary by SwiftPM
/// (`resources: [.embedInCode(...)]`), so there is no front-end build step and nothing to deploy.
///
/// The files hold no data, so they are served without authentication even when the API needs a
/// token; the page reads everything from `/api/admin/...`, which does need it, and asks for a
/// token when an answer is 401. The policy below lets the page run only its own script and
/// style and talk only to this origin: data rendered by the page (gids, URLs, branch errors are
/// attacker-controlled) goes through DOM APIs, and even a slip there could not run inline script.
enum AdminUI {
    /// `Content-Security-Policy` of every admin file.
    static let contentSecurityPolicy = [
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        "connect-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
    ].joined(separator: "; ")

    struct Asset: Sendable {
        let path: String
        let contentType: String
        let bytes: [UInt8]
    }

    /// The page answers `/admin` and `/admin/` (Hummingbird ignores a trailing slash); deep links
    /// such as `/admin/#/tx/<gid>` are fragments the page's script reads.
    static let assets: [Asset] = [
        Asset(path: "/admin", contentType: "text/html; charset=utf-8", bytes: PackageResources.admin_html),
        Asset(path: "/admin/index.html", contentType: "text/html; charset=utf-8", bytes: PackageResources.admin_html),
        Asset(path: "/admin/admin.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.admin_js),
        Asset(path: "/admin/admin.css", contentType: "text/css; charset=utf-8", bytes: PackageResources.admin_css),
    ]

    /// A GET route per file, open without a token.
    static var routes: [APIRoute] {
        assets.map { asset in
            APIRoute(.get, asset.path, isOpen: true, raw: { _ in response(asset) })
        }
    }

    static func response(_ asset: Asset) -> Response {
        var headers: HTTPFields = [
            .contentType: asset.contentType,
            // Embedded files change only with the binary: revalidate on each load (they are small).
            .cacheControl: "no-cache",
            .contentSecurityPolicy: contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
        ]
        if let referrerPolicy = HTTPFields.Element.Name("Referrer-Policy") { headers[referrerPolicy] = "no-referrer" }
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: asset.bytes)))
    }
}
