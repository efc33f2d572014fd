import DtmEngine
import Foundation
import Hummingbird
import NIOCore

/// DTM's HTTP JSON API (spec 1.2, 1.3): the routes DTM's HTTP SDKs call under
/// `/api/dtmsvr`, answered from the same engine and store as the gRPC service.
public struct DtmHTTPAPI: Sendable {
    /// Requests with a larger body are refused with 413 before anything is decoded.
    public static let maxBodySize = 4 << 20
    public static let prefix = "/api/dtmsvr"

    let engine: Coordinator
    let admin: CoordinatorAdmin
    let topics: TopicRegistry
    let gids: GidGenerator
    /// nil: every client is served (DTM's behaviour). Otherwise every route but `/api/ping`
    /// and `/api/openapi.json` needs `Authorization: Bearer <token>` (401 without).
    let auth: Authenticator?
    /// `/query` and `/all` show branch header values and URL userinfo as `[redacted]`.
    let redactQuery: Bool

    public init(engine: Coordinator, admin: CoordinatorAdmin, topics: TopicRegistry, gids: GidGenerator = GidGenerator(),
                auth: Authenticator? = nil, redactQuery: Bool = false) {
        self.engine = engine
        self.admin = admin
        self.topics = topics
        self.gids = gids
        self.auth = auth
        self.redactQuery = redactQuery
    }

    /// The router serving every route, with JSON answers for unknown paths and methods.
    /// `observability`, when given, counts and times every request and serves `GET /api/metrics`.
    public func makeRouter(observability: HTTPObservability? = nil) -> Router<BasicRequestContext> {
        let router = Router()
        var routes = self.routes
        let auth = self.auth
        if let observability {
            routes.append(observability.metricsRoute)
            router.add(middleware: RequestMetrics(metrics: observability.metrics, routes: routes))
        }
        router.add(middleware: UnroutedAnswer(routes: routes, auth: auth))
        for route in routes {
            router.on(RouterPath(route.path), method: route.method) { request, context in
                await route.respond(to: request, context: context, auth: auth)
            }
        }
        return router
    }

    // MARK: - Routes

    var routes: [APIRoute] {
        let engine = self.engine, admin = self.admin, topics = self.topics, gids = self.gids
        let redact = redactQuery
        @Sendable func shown(_ global: GlobalTransaction) -> JSONText {
            JSONText(redact ? Redaction.global(global) : global)
        }
        @Sendable func shownBranch(_ branch: BranchRecord) -> JSONText {
            JSONText(redact ? Redaction.branch(branch) : branch)
        }
        let p = Self.prefix
        var routes: [APIRoute] = [
            APIRoute(.get, "\(p)/version") { _ throws(DtmError) in .object([("version", .string(swiftDtmVersion))]) },
            APIRoute(.get, "\(p)/newGid") { call throws(DtmError) in
                .sorted(["gid": .string(call.principal.newGid(gids)), "dtm_result": .string(dtmSuccess)])
            },
            APIRoute(.post, "\(p)/prepare") { call throws(DtmError) in
                try await engine.prepare(call.trans())
                return nil
            },
            APIRoute(.post, "\(p)/submit") { call throws(DtmError) in
                try await engine.submit(call.trans())
                return nil
            },
            APIRoute(.post, "\(p)/abort") { call throws(DtmError) in
                try await engine.abort(call.trans())
                return nil
            },
            APIRoute(.post, "\(p)/forceStop") { call throws(DtmError) in
                try await engine.forceStop(gid: call.trans().gid)
                return nil
            },
            APIRoute(.post, "\(p)/resetNextCronTime") { call throws(DtmError) in
                try await engine.resetNextCronTime(gid: call.trans().gid)
                await admin.wake()
                return nil
            },
            APIRoute(.post, "\(p)/prepareWorkflow") { call throws(DtmError) in
                let progress = try await engine.prepareWorkflow(call.trans())
                return .sorted(["transaction": JSONText(progress.transaction),
                                "progresses": .array(progress.progresses.map(JSONText.init))])
            },
            APIRoute(.get, "\(p)/query") { call throws(DtmError) in
                try call.principal.permit(gid: call.query("gid"))
                let (global, branches) = try await admin.query(gid: call.query("gid"))
                return .sorted(["transaction": global.map(shown) ?? .null,
                                "branches": .array(branches.map(shownBranch))])
            },
            APIRoute(.get, "\(p)/all") { call throws(DtmError) in
                let gid = call.query("gid")
                let position = try call.optionalInteger("position"), limit = try call.integer("limit", default: 100)
                let createdFrom = try call.epochMilliseconds("createTimeStart")
                let createdTo = try call.epochMilliseconds("createTimeEnd")
                if !gid.isEmpty {
                    try call.principal.permit(gid: gid)
                    try CoordinatorAdmin.check(limit: Int(clamping: limit))
                    let found = try await admin.find(gid: gid)
                    return .sorted(["transactions": found.map { .array([shown($0)]) } ?? .null,
                                    "next_position": .string(call.query("position"))])
                }
                try call.principal.permitUnrestricted("listing transactions")
                let page = try await admin.list(status: call.query("status"), transType: call.query("transType"),
                                                createdFrom: createdFrom, createdTo: createdTo, position: position,
                                                limit: Int(clamping: limit))
                return .sorted(["transactions": .array(page.rows.map(shown)),
                                "next_position": .string(page.nextPosition)])
            },
            APIRoute(.get, "\(p)/resetCronTime") { call throws(DtmError) in
                try call.principal.permitUnrestricted("resetCronTime")
                let result = try await admin.resetCronTime(timeout: try call.optionalInteger("timeout"),
                                                           limit: Int(clamping: try call.integer("limit", default: 100)))
                return .sorted(["succeed_count": .int(Int64(result.succeeded)), "has_remaining": .bool(result.hasRemaining)])
            },
            APIRoute(.get, "\(p)/subscribe") { call throws(DtmError) in
                try call.principal.permitUnrestricted("subscribe")
                try await topics.subscribe(topic: call.query("topic"), url: call.query("url"), remark: call.query("remark"))
                return nil
            },
            APIRoute(.get, "\(p)/unsubscribe") { call throws(DtmError) in
                try call.principal.permitUnrestricted("unsubscribe")
                try await topics.unsubscribe(topic: call.query("topic"), url: call.query("url"))
                return nil
            },
            APIRoute(.delete, "\(p)/topic/:topicName") { call throws(DtmError) in
                try call.principal.permitUnrestricted("deleting a topic")
                try await topics.delete(topic: call.topicName)
                return nil
            },
            APIRoute(.get, "\(p)/scanKV") { call throws(DtmError) in
                try call.principal.permitUnrestricted("scanKV")
                let page = try await admin.scanKV(cat: call.query("cat"), position: try call.optionalInteger("position"),
                                                  limit: Int(clamping: try call.integer("limit", default: 100)))
                return .sorted(["kv": .array(page.rows.map(JSONText.init)), "next_position": .string(page.nextPosition)])
            },
            APIRoute(.get, "\(p)/queryKV") { call throws(DtmError) in
                try call.principal.permitUnrestricted("queryKV")
                let rows = try await admin.findKV(cat: call.query("cat"), key: call.query("key"))
                return .sorted(["kv": .array(rows.map(JSONText.init))])
            },
            // Open with authentication on: it describes the public API only, as reflection does.
            APIRoute(.get, "/api/openapi.json", document: openAPIDocument, isOpen: true),
        ]
        // Old SDKs register tcc and xa branches under their own names.
        for alias in ["registerBranch", "registerXaBranch", "registerTccBranch"] {
            routes.append(APIRoute(.post, "\(p)/\(alias)") { call throws(DtmError) in
                let registration = try BranchRegistration(httpBody: call.body)
                try call.principal.permit(gid: registration.gid)
                try await engine.registerBranch(registration)
                return nil
            })
        }
        // DTM's JSON-RPC 2.0 endpoint (JSONRPCAPI.swift).
        routes.append(jsonRPCRoute)
        // The admin JSON API behind the /admin page (AdminAPI.swift).
        routes += adminRoutes
        // The admin web UI's static files (AdminUI.swift); its data comes from /api/admin/....
        routes.append(contentsOf: AdminUI.routes)
        // DTM's liveness route, which here also tells whether the store can take writes:
        // 503 with the reason when it cannot (read-only, full, locked, failing).
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete, .head, .options] {
            routes.append(APIRoute(method, "/api/ping", isOpen: true) { _ throws(DtmError) in
                if case .unhealthy(let reason) = await admin.health() {
                    throw DtmError.unavailable("store unhealthy: \(reason)")
                }
                return .object([("msg", .string("pong"))])
            })
        }
        return routes
    }
}

/// The version `/api/dtmsvr/version` reports.
public let swiftDtmVersion = "swift-dtm-0.1.0"

let dtmSuccess = "SUCCESS"

/// The committed OpenAPI 3 document of this API (Sources/DtmServer/openapi.json).
let openAPIDocument = PackageResources.openapi_json

// MARK: - Requests and answers

/// What a route handler sees of a request.
struct APICall: Sendable {
    var queryItems: [String: String]
    var topicName: String
    /// The `:gid` segment of admin routes, percent-decoded.
    var pathGid: String = ""
    var body: [UInt8]
    /// Who sent it (`.unrestricted` when authentication is off).
    var principal: Principal = .unrestricted

    /// The trans body, refused when its gid is outside the caller's prefix.
    func trans() throws(DtmError) -> TransRequest {
        let request = try TransRequest(httpBody: body)
        try principal.permit(gid: request.gid)
        return request
    }

    /// A query parameter; missing and empty are the same, as for Go's `c.Query`.
    func query(_ name: String) -> String { queryItems[name] ?? "" }

    func optionalInteger(_ name: String) throws(DtmError) -> Int64? {
        let text = query(name)
        if text.isEmpty { return nil }
        guard let value = Int64(text) else {
            throw DtmError.invalidArgument("\(name): expected a whole number, got '\(text)'")
        }
        return value
    }

    func integer(_ name: String, default value: Int64) throws(DtmError) -> Int64 {
        try optionalInteger(name) ?? value
    }

    /// DTM's time filters: epoch milliseconds, truncated to whole seconds.
    func epochMilliseconds(_ name: String) throws(DtmError) -> Date? {
        guard let value = try optionalInteger(name) else { return nil }
        guard RequestLimits.epochMilliseconds.contains(value) else {
            throw DtmError.invalidArgument("\(name): epoch milliseconds out of range (got \(value))")
        }
        return Date(timeIntervalSince1970: TimeInterval(value / 1000))
    }

    /// Go's url.ParseQuery: `+` is a space, percent escapes decoded, the first value wins,
    /// malformed pairs skipped.
    static func parseQuery(_ query: String?) -> [String: String] {
        var items: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ text: Substring) -> String? {
                text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            }
            guard let key = decode(parts[0]), let value = parts.count > 1 ? decode(parts[1]) : "" else { continue }
            if items[key] == nil { items[key] = value }
        }
        return items
    }
}

/// A JSON answer: status and body.
struct HTTPAnswer {
    var status: HTTPResponse.Status
    var body: JSONText
    var headers: HTTPFields

    init(status: HTTPResponse.Status, body: JSONText, headers: HTTPFields = [:]) {
        self.status = status
        self.body = body
        self.headers = headers
    }

    static let success = HTTPAnswer(status: .ok, body: .object([("dtm_result", .string(dtmSuccess))]))

    /// Outcomes of the coordinator as DTM's HTTP API reports them (spec 1.2), in one place.
    /// FAILURE and ONGOING keep DTM's 409 / 425 with `dtm_result`; where DTM answers 500 for
    /// a client's mistake this answers a 4xx that names it.
    init(_ error: DtmError) {
        switch error {
        case .failure(let message):
            self.init(status: .conflict, body: Self.message(message, result: "FAILURE"))
        case .ongoing(let message):
            self.init(status: .tooEarly, body: Self.message(message, result: "ONGOING"))
        case .invalidArgument(let message):
            self.init(status: .badRequest, body: Self.message(message))
        case .notFound(let message):
            self.init(status: .notFound, body: Self.message(message))
        case .storage, .internal:
            // As DTM: a storage conflict (duplicate branch, a status changed concurrently) is a
            // 500, which SDKs retry; a 409 would tell them the transaction failed for good.
            self.init(status: .internalServerError, body: Self.message(error.message))
        case .overloaded(let message):
            self.init(status: .serviceUnavailable, body: Self.message(message), headers: [.retryAfter: "1"])
        case .unavailable(let message):
            self.init(status: .serviceUnavailable, body: Self.message(message))
        case .permissionDenied(let message):
            self.init(status: .forbidden, body: Self.message(message))
        }
    }

    /// A request without a valid token: 401 with `WWW-Authenticate`, as RFC 6750 asks.
    init(_ failure: AuthFailure) {
        let challenge = failure == .missing ? #"Bearer realm="dtm""# : #"Bearer realm="dtm", error="invalid_token""#
        self.init(status: .unauthorized, body: Self.message(failure.description),
                  headers: [.wwwAuthenticate: challenge])
    }

    /// Problems found before a handler runs.
    init(_ failure: RequestFailure) {
        switch failure {
        case .bodyTooLarge(let limit):
            self.init(status: .contentTooLarge, body: Self.message("request body: larger than \(limit) bytes"))
        case .unreadableBody(let reason):
            self.init(status: .badRequest, body: Self.message("request body: \(reason)"))
        case .unknownPath(let path):
            self.init(status: .notFound, body: Self.message("no route for \(path)"))
        case .methodNotAllowed(let method, let path, let allowed):
            let names = allowed.map(\.rawValue).joined(separator: ", ")
            self.init(status: .methodNotAllowed, body: Self.message("\(method.rawValue) is not allowed on \(path) (use \(names))"),
                      headers: [.allow: names])
        }
    }

    private static func message(_ text: String, result: String? = nil) -> JSONText {
        .sorted(["message": .string(text)].merging(result.map { ["dtm_result": .string($0)] } ?? [:]) { $1 })
    }

    var response: Response {
        var headers = self.headers
        headers[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body.text)))
    }
}

enum RequestFailure: Error {
    case bodyTooLarge(Int)
    case unreadableBody(String)
    case unknownPath(String)
    case methodNotAllowed(HTTPRequest.Method, String, [HTTPRequest.Method])
}

/// One route: method, path pattern and what answers it.
struct APIRoute: Sendable {
    typealias Handler = @Sendable (APICall) async throws(DtmError) -> JSONText?

    let method: HTTPRequest.Method
    let path: String
    /// Served without authentication (`/api/ping`, the OpenAPI document).
    let isOpen: Bool
    private let answer: @Sendable (APICall) async -> Response

    /// A JSON route: nil from the handler is DTM's `{"dtm_result":"SUCCESS"}`.
    init(_ method: HTTPRequest.Method, _ path: String, isOpen: Bool = false, _ handler: @escaping Handler) {
        self.method = method
        self.path = path
        self.isOpen = isOpen
        self.answer = { call in
            do throws(DtmError) {
                guard let body = try await handler(call) else { return HTTPAnswer.success.response }
                return HTTPAnswer(status: .ok, body: body).response
            } catch {
                return HTTPAnswer(error).response
            }
        }
    }

    /// A page made on each request (`/api/metrics`; behind authentication when it is on).
    init(_ method: HTTPRequest.Method, _ path: String, contentType: String,
         page: @escaping @Sendable () async -> [UInt8]) {
        self.method = method
        self.path = path
        self.isOpen = false
        self.answer = { _ in
            Response(status: .ok, headers: [.contentType: contentType],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: await page())))
        }
    }

    /// A route that writes its own response (the JSON-RPC endpoint's envelope, the admin UI's files).
    init(_ method: HTTPRequest.Method, _ path: String, isOpen: Bool = false,
         raw: @escaping @Sendable (APICall) async -> Response) {
        self.method = method
        self.path = path
        self.isOpen = isOpen
        self.answer = raw
    }

    /// A fixed JSON document.
    init(_ method: HTTPRequest.Method, _ path: String, document: [UInt8], isOpen: Bool = false) {
        self.method = method
        self.path = path
        self.isOpen = isOpen
        self.answer = { _ in
            Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: document)))
        }
    }

    func respond(to request: Request, context: BasicRequestContext, auth: Authenticator?) async -> Response {
        var principal = Principal.unrestricted
        if !isOpen, let auth {
            // Before the body is read: a request without a valid token costs nothing more.
            switch await auth.authenticate(request.headers[.authorization]) {
            case .success(let who): principal = who
            case .failure(let failure): return HTTPAnswer(failure).response
            }
        }
        var body: [UInt8] = []
        if method == .post {
            do {
                body = Array(buffer: try await request.body.collect(upTo: DtmHTTPAPI.maxBodySize))
            } catch is NIOTooManyBytesError {
                return HTTPAnswer(.bodyTooLarge(DtmHTTPAPI.maxBodySize)).response
            } catch {
                return HTTPAnswer(.unreadableBody("\(error)")).response
            }
        }
        let topic = context.parameters.get("topicName") ?? "", gid = context.parameters.get("gid") ?? ""
        return await answer(APICall(queryItems: APICall.parseQuery(request.uri.query),
                                    topicName: topic.removingPercentEncoding ?? topic,
                                    pathGid: gid.removingPercentEncoding ?? gid, body: body, principal: principal))
    }

    /// Whether `path` (no query) matches this route's pattern; `:name` matches one segment.
    func matches(_ path: String) -> Bool {
        let pattern = self.path.split(separator: "/", omittingEmptySubsequences: false)
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard pattern.count == parts.count else { return false }
        return zip(pattern, parts).allSatisfy { $0.hasPrefix(":") ? !$1.isEmpty : $0 == $1 }
    }
}

/// Answers requests no route took: 405 with `Allow` for a known path, 404 otherwise,
/// both in the API's JSON envelope.
struct UnroutedAnswer: RouterMiddleware {
    typealias Context = BasicRequestContext
    let routes: [APIRoute]
    let auth: Authenticator?

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path
            // With authentication on, a client without a token learns nothing about paths.
            if let auth, case .failure(let failure) = await auth.authenticate(request.headers[.authorization]) {
                return HTTPAnswer(failure).response
            }
            let allowed = routes.filter { $0.matches(path) }.map(\.method)
            if allowed.isEmpty { return HTTPAnswer(.unknownPath(path)).response }
            return HTTPAnswer(.methodNotAllowed(request.method, path, allowed)).response
        }
    }
}
