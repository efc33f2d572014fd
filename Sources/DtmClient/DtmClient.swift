import AsyncHTTPClient
import DtmGRPC
import DtmNet
@_exported import DtmProto
@_exported import struct DtmNet.ClientTLSConfig
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// Where the coordinator is and which of its APIs to speak.
public enum CoordinatorEndpoint: Sendable, Hashable {
    /// The gRPC API (`dtmgimp.Dtm`) at `host:port`, e.g. `"127.0.0.1:36790"`; `"grpcs://host:port"`
    /// speaks it over TLS.
    case grpc(String)
    /// The HTTP JSON API, e.g. `"http://127.0.0.1:36789/api/dtmsvr"` (or `https://`).
    case http(String)
}

/// What a coordinator started with TLS or authentication (README "Security") needs from a client.
public struct CoordinatorCredentials: Sendable, Equatable {
    /// Sent as `authorization: Bearer <token>` with every call to the coordinator, never to a branch.
    public var token: String?
    /// Trusted CA bundle and optional client certificate, for a `grpcs://` or `https://`
    /// coordinator and for TLS branch URLs the SDK calls itself; the system trust store by default.
    public var tls: ClientTLSConfig

    public init(token: String? = nil, tls: ClientTLSConfig = ClientTLSConfig()) {
        self.token = token
        self.tls = tls
    }
}

/// A connection to a DTM coordinator (swift-dtm or DTM itself) and to branch services.
///
/// One client serves many transactions at once; create it once per process and call
/// `shutdown()` when done. Transactions are built from it: `Saga`, `Msg`, `tccGlobalTransaction`,
/// `Workflows`.
public final class DtmClient: Sendable {
    public let endpoint: CoordinatorEndpoint
    /// Longest wait for one call to the coordinator or to a branch.
    public let callTimeout: Duration
    let grpc: GRPCClient
    let http: HTTPClient
    private let ownsGRPC: Bool
    private let ownsHTTP: Bool
    /// `authorization` of the calls to the coordinator.
    private let authorization: String?
    /// Why `credentials.tls` could not be used (a missing or bad PEM file): every HTTPS call fails with it.
    private let tlsProblem: String?

    /// - Parameters:
    ///   - credentials: a token and TLS trust for a coordinator that requires them.
    ///   - grpcClient, httpClient: shared clients to use (they bring their own TLS settings); the
    ///     client makes (and shuts down) its own when nil.
    public init(_ endpoint: CoordinatorEndpoint, callTimeout: Duration = .seconds(10),
                credentials: CoordinatorCredentials = CoordinatorCredentials(),
                grpcClient: GRPCClient? = nil, httpClient: HTTPClient? = nil) {
        self.endpoint = endpoint
        self.callTimeout = callTimeout
        self.ownsGRPC = grpcClient == nil
        self.ownsHTTP = httpClient == nil
        self.authorization = credentials.token.map { "Bearer " + $0 }
        self.grpc = grpcClient ?? GRPCClient(config: GRPCClientConfig(tls: credentials.tls))
        var tlsProblem: String?
        if let httpClient {
            self.http = httpClient
        } else if credentials.tls.isCustomized {
            do {
                let tls = try credentials.tls.makeConfiguration()
                self.http = HTTPClient(eventLoopGroupProvider: .singleton,
                                       configuration: HTTPClient.Configuration(tlsConfiguration: tls))
            } catch {
                tlsProblem = "TLS client settings: \(error)"
                self.http = HTTPClient(eventLoopGroupProvider: .singleton)
            }
        } else {
            self.http = HTTPClient(eventLoopGroupProvider: .singleton)
        }
        self.tlsProblem = tlsProblem
    }

    /// Closes the connections this client opened.
    public func shutdown() async {
        if ownsGRPC { await grpc.shutdown() }
        if ownsHTTP { try? await http.shutdown() }
    }

    /// The coordinator's address as branch calls report it (`dtm` / `dtm-dtm`).
    var coordinatorAddress: String {
        switch endpoint {
        case .grpc(let target): target
        case .http(let url): url
        }
    }

    var isGRPC: Bool {
        if case .grpc = endpoint { return true }
        return false
    }

    // MARK: - The coordinator's API

    /// A new global transaction id from the coordinator.
    public func newGid() async throws(DtmClientError) -> String {
        switch endpoint {
        case .grpc(let target):
            let reply = try await grpcCall(target, "/dtmgimp.Dtm/NewGid", Empty(), as: DtmGidReply.self)
            return reply.gid
        case .http(let base):
            let body = try await httpCall(base + "/newGid", method: .GET, body: nil)
            guard let object = try? JSON.parse(body) as? [String: Any], let gid = object["gid"] as? String else {
                throw .transport("newGid answered without a gid: \(body)")
            }
            return gid
        }
    }

    public func prepare(_ request: DtmRequest) async throws(DtmClientError) {
        try await transCall("Prepare", "prepare", request)
    }

    public func submit(_ request: DtmRequest) async throws(DtmClientError) {
        try await transCall("Submit", "submit", request)
    }

    public func abort(_ request: DtmRequest) async throws(DtmClientError) {
        try await transCall("Abort", "abort", request)
    }

    public func registerBranch(_ request: DtmBranchRequest) async throws(DtmClientError) {
        switch endpoint {
        case .grpc(let target):
            _ = try await grpcCall(target, "/dtmgimp.Dtm/RegisterBranch", request, as: Empty.self)
        case .http(let base):
            var body = request.data
            body["gid"] = request.gid
            body["trans_type"] = request.transType
            body["branch_id"] = request.branchID
            if !request.op.isEmpty { body["op"] = request.op }
            body["data"] = String(decoding: request.busiPayload, as: UTF8.self)
            _ = try await httpCall(base + "/registerBranch", method: .POST, body: Array(JSON.text(body).utf8))
        }
    }

    /// Registers a workflow (or reads back the stored one) and its recorded branch results.
    public func prepareWorkflow(_ request: DtmRequest) async throws(DtmClientError) -> DtmProgressesReply {
        switch endpoint {
        case .grpc(let target):
            return try await grpcCall(target, "/dtmgimp.Dtm/PrepareWorkflow", request, as: DtmProgressesReply.self)
        case .http(let base):
            let body = try await httpCall(base + "/prepareWorkflow", method: .POST, body: Self.transBody(request))
            guard let object = try? JSON.parse(body) as? [String: Any] else {
                throw .transport("prepareWorkflow answered something that is not a JSON object: \(body)")
            }
            return Self.progressesReply(object)
        }
    }

    private func transCall(_ grpcMethod: String, _ httpRoute: String, _ request: DtmRequest) async throws(DtmClientError) {
        switch endpoint {
        case .grpc(let target):
            _ = try await grpcCall(target, "/dtmgimp.Dtm/\(grpcMethod)", request, as: Empty.self)
        case .http(let base):
            _ = try await httpCall(base + "/" + httpRoute, method: .POST, body: Self.transBody(request))
        }
    }

    // MARK: - Branch calls made by the SDK (TCC try, msg back-check, workflow steps)

    /// Calls a branch service directly, as the coordinator would but with `dtm` set: a gRPC URL
    /// `host:port/package.Service/Method` gets the `dtm-*` metadata, an `http(s)://` URL the query
    /// parameters (POST with a body, GET without). Returns the response body.
    public func callBranch(_ url: String, payload: [UInt8], info: TransInfo,
                           headers: [String: String] = [:]) async throws(DtmClientError) -> [UInt8] {
        if url.hasPrefix("http://") || url.hasPrefix("https://") {
            guard var components = URLComponents(string: url) else {
                throw .invalidArgument("branch URL '\(url)' is not a URL")
            }
            components.queryItems = (components.queryItems ?? []) + info.queryItems.map { URLQueryItem(name: $0.0, value: $0.1) }
            guard let full = components.string else { throw .invalidArgument("branch URL '\(url)' is not a URL") }
            let body = try await httpExchange(full, method: payload.isEmpty ? .GET : .POST,
                                              body: payload.isEmpty ? nil : payload, headers: headers)
            return Array(body.utf8)
        }
        let (tls, address) = Self.grpcsPrefixed(url) ? (true, url.dropFirst("grpcs://".count)) : (false, Substring(url))
        guard let slash = address.firstIndex(of: "/") else {
            throw .invalidArgument("gRPC branch URL '\(url)' is not [grpcs://]host:port/package.Service/Method")
        }
        let target = String(address[..<slash]), path = String(address[slash...])
        do {
            let response = try await grpc.unary(target: target, path: path, message: payload,
                                                metadata: info.metadata(headers: headers), timeout: callTimeout, tls: tls)
            return response.message
        } catch {
            throw DtmClientError(error)
        }
    }

    // MARK: - Transport

    private func grpcCall<Response: ProtoMessage>(_ target: String, _ path: String, _ request: some ProtoMessage,
                                                  as: Response.Type) async throws(DtmClientError) -> Response {
        let response: GRPCResponse
        let (address, tls) = Self.grpcTarget(target)
        var metadata = Metadata()
        if let authorization { metadata.add("authorization", authorization) }
        do {
            response = try await grpc.unary(target: address, path: path, message: request.encode(), metadata: metadata,
                                            timeout: callTimeout, tls: tls)
        } catch {
            throw DtmClientError(error)
        }
        do {
            return try Response(decoding: response.message)
        } catch {
            throw .transport("\(path) answered an undecodable \(Response.protoName): \(error)")
        }
    }

    /// `grpcs://host:port` (the scheme in any case, as the coordinator reads branch URLs) is
    /// `host:port` over TLS.
    static func grpcTarget(_ target: String) -> (address: String, tls: Bool) {
        grpcsPrefixed(target) ? (String(target.dropFirst("grpcs://".count)), true) : (target, false)
    }

    static func grpcsPrefixed(_ url: String) -> Bool { url.prefix("grpcs://".count).lowercased() == "grpcs://" }

    private func httpCall(_ url: String, method: HTTPMethod, body: [UInt8]?) async throws(DtmClientError) -> String {
        try await httpExchange(url, method: method, body: body, headers: authorization.map { ["Authorization": $0] } ?? [:])
    }

    /// One HTTP exchange; a 200 without FAILURE or ONGOING in its body is the only success.
    private func httpExchange(_ url: String, method: HTTPMethod, body: [UInt8]?,
                              headers: [String: String]) async throws(DtmClientError) -> String {
        if let tlsProblem, url.hasPrefix("https://") { throw .transport("\(method) \(url): \(tlsProblem)") }
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let status: Int
        let text: String
        do {
            let response = try await http.execute(request, timeout: Self.timeAmount(callTimeout))
            status = Int(response.status.code)
            text = String(buffer: try await response.body.collect(upTo: 4 << 20))
        } catch {
            throw .transport("\(method) \(url): \(error)")
        }
        if let error = DtmClientError(httpStatus: status, body: text) { throw error }
        return text
    }

    private static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(Int64(clamping: seconds).multipliedReportingOverflow(by: 1_000_000_000).partialValue
                            + attoseconds / 1_000_000_000)
    }

    /// DTM's HTTP trans body (spec 1.4) for a `DtmRequest`.
    static func transBody(_ request: DtmRequest) -> [UInt8] {
        var body: [String: Any] = ["gid": request.gid, "trans_type": request.transType]
        if !request.steps.isEmpty, let steps = try? JSON.parse(request.steps) { body["steps"] = steps }
        if !request.binPayloads.isEmpty {
            body["payloads"] = request.binPayloads.map { String(decoding: $0, as: UTF8.self) }
        }
        if !request.customedData.isEmpty { body["custom_data"] = request.customedData }
        if !request.queryPrepared.isEmpty { body["query_prepared"] = request.queryPrepared }
        if !request.rollbackReason.isEmpty { body["rollback_reason"] = request.rollbackReason }
        if !request.reqExtra.isEmpty { body["req_extra"] = request.reqExtra }
        if let options = request.transOptions {
            if options.waitResult { body["wait_result"] = true }
            if options.timeoutToFail != 0 { body["timeout_to_fail"] = options.timeoutToFail }
            if options.retryInterval != 0 { body["retry_interval"] = options.retryInterval }
            if options.requestTimeout != 0 { body["request_timeout"] = options.requestTimeout }
            if options.retryLimit != 0 { body["retry_limit"] = options.retryLimit }
            if !options.branchHeaders.isEmpty { body["branch_headers"] = options.branchHeaders }
        }
        return Array(JSON.text(body).utf8)
    }

    /// The HTTP prepareWorkflow answer (spec 1.7) as the gRPC reply.
    static func progressesReply(_ object: [String: Any]) -> DtmProgressesReply {
        let transaction = (object["transaction"] as? [String: Any]).map { t in
            DtmTransaction(gid: t["gid"] as? String ?? "", status: t["status"] as? String ?? "",
                           rollbackReason: t["rollback_reason"] as? String ?? "", result: t["result"] as? String ?? "")
        }
        let progresses = (object["progresses"] as? [[String: Any]] ?? []).map { p in
            DtmProgress(status: p["status"] as? String ?? "",
                        binData: (p["bin_data"] as? String).flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) } ?? [],
                        branchID: p["branch_id"] as? String ?? "", op: p["op"] as? String ?? "")
        }
        return DtmProgressesReply(transaction: transaction, progresses: progresses)
    }
}

extension TransOptions {
    var proto: DtmTransOptions {
        DtmTransOptions(waitResult: waitResult, timeoutToFail: timeoutToFail, retryInterval: retryInterval,
                        branchHeaders: branchHeaders, requestTimeout: requestTimeout, retryLimit: retryLimit)
    }
}
