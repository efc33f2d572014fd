import AsyncHTTPClient
import DtmEngine
import DtmFailpoints
import DtmGRPC
import DtmNet
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Calls branches as DTM does: HTTP for `http(s)://` URLs (and for transactions whose protocol
/// is http), JSON-RPC for http(s) URLs naming a `method` in json-rpc transactions, gRPC for
/// `host:port/package.Service/Method` URLs, and gRPC over TLS for
/// `grpcs://host:port/package.Service/Method` URLs.
public struct DtmBranchCaller: BranchCaller {
    let grpc: GRPCBranchCaller
    let http: HTTPBranchCaller

    public init(grpcClient: GRPCClient, httpClient: HTTPClient, logger: Logger) {
        self.grpc = GRPCBranchCaller(client: grpcClient, logger: logger)
        self.http = HTTPBranchCaller(client: httpClient, logger: logger)
    }

    /// gRPC calls carry the request timeout as their deadline (connecting included); HTTP and
    /// JSON-RPC exchanges run under `withDeadline`. Both end early when cancelled.
    public var endsCallsWithinTimeout: Bool { true }

    public func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        Failpoint.hit("branch.\(global.transType.rawValue).\(call.op.rawValue).before")
        defer { Failpoint.hit("branch.\(global.transType.rawValue).\(call.op.rawValue).after") }
        let url = call.url
        if JSONRPCBranchCaller.applies(to: url, of: global) {
            return await JSONRPCBranchCaller(client: http.client).call(call, of: global)
        }
        if url.hasPrefix("http://") || url.hasPrefix("https://") || global.transProtocol == .http {
            return await http.call(call, of: global)
        }
        return await grpc.call(call, of: global)
    }
}

/// gRPC branch calls: the stored payload bytes go out as the request message, with DTM's
/// `dtm-*` metadata and the transaction's branch headers.
struct GRPCBranchCaller: BranchCaller {
    let client: GRPCClient
    let logger: Logger

    /// `host:port/package.Service/Method` → (`host:port`, `/package.Service/Method`, plaintext),
    /// `grpcs://host:port/...` the same over TLS, by the engine's rule (the one Submit and
    /// RegisterBranch check URLs with).
    static func split(_ url: String) -> (target: String, path: String, tls: Bool)? {
        guard let parsed = BranchURL(url), parsed.kind == .grpc else { return nil }
        return (String(parsed.authority), String(parsed.path), parsed.tls)
    }

    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        guard let (target, path, tls) = Self.split(call.url) else {
            return .error(message: "branch URL '\(call.url)' is not host:port/package.Service/Method"
                + (call.url.contains("://") ? " (custom schemes need a registered discovery driver)" : ""))
        }
        var metadata = Metadata()
        metadata.reserveCapacity(5 + global.options.branchHeaders.count)
        metadata.add("dtm-gid", global.gid)
        metadata.add("dtm-trans_type", global.transType.rawValue)
        metadata.add("dtm-branch_id", call.branchID)
        metadata.add("dtm-op", call.op.rawValue)
        metadata.add("dtm-dtm", "")
        if !global.options.branchHeaders.isEmpty {
            for (key, value) in global.options.branchHeaders.sorted(by: { $0.key < $1.key }) {
                metadata.add(key, value)
            }
        }
        do {
            _ = try await client.unary(target: target, path: path, message: call.payload, metadata: metadata,
                                       timeout: .seconds(max(call.requestTimeout, 1)), tls: tls)
            return .success
        } catch {
            return Self.result(of: error)
        }
    }

    /// DTM's reading of a gRPC status (spec 2.4); messages are formatted as Go's gRPC errors,
    /// which is how DTM stores them as rollback reasons (the branch's message clipped to
    /// `Redaction.maxRemoteText` bytes).
    static func result(of error: RPCError) -> BranchResult {
        switch error.code {
        case .aborted where error.message == "ONGOING": .ongoing
        case .aborted: .failure(message: goStyle(error))
        case .failedPrecondition: .ongoing
        default: .error(message: goStyle(error))
        }
    }

    static func goStyle(_ error: RPCError) -> String {
        let name = String(describing: error.code).split(separator: "_")
            .map { $0.prefix(1) + $0.dropFirst().lowercased() }.joined()
        return "rpc error: code = \(name) desc = \(Redaction.clip(error.message))"
    }
}

/// HTTP branch calls: DTM's query parameters, JSON content type, branch headers, and the
/// stored payload as the body (POST when there is one or for XA, else GET).
struct HTTPBranchCaller: BranchCaller {
    let client: HTTPClient
    let logger: Logger
    static let maxResponseBody = 1 << 20

    /// The HTTP client branch calls need: redirects are answers, not instructions (a branch
    /// must not be able to send the coordinator elsewhere), connecting is bounded, and pooled
    /// connections left idle are closed.
    static func clientConfiguration(connectTimeout: Duration = .seconds(3),
                                    idleTimeout: Duration = .seconds(120)) -> HTTPClient.Configuration {
        HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .nanoseconds(connectTimeout.saturatingNanoseconds)),
            connectionPool: .init(idleTimeout: .nanoseconds(idleTimeout.saturatingNanoseconds)))
    }

    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        guard let url = Self.url(for: call, of: global) else {
            return .error(message: "branch URL '\(call.url)' is not a valid http(s) URL")
        }
        let post = !call.payload.isEmpty || global.transType == .xa
        switch await Self.exchange(client, url: url, body: post ? call.payload : nil, of: call, global) {
        case .success(let (status, body)): return Self.result(status: status, body: body)
        case .failure(let error): return .error(message: error.message)
        }
    }

    /// Why an exchange with a branch has no answer (connect, TLS, timeout, a body too large).
    struct ExchangeError: Error {
        var message: String
    }

    /// One request to a branch (POST with `body`, GET without) carrying the transaction's branch
    /// headers; its status and body, all within the call's request timeout.
    static func exchange(_ client: HTTPClient, url: String, body: [UInt8]?, of call: BranchCall,
                         _ global: GlobalTransaction) async -> Result<(Int, String), ExchangeError> {
        var request = HTTPClientRequest(url: url)
        request.method = body == nil ? .GET : .POST
        request.headers = headers(global.options.branchHeaders)
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let timeout = Duration.seconds(max(call.requestTimeout, 1))
        let prepared = request
        do {
            // async-http-client's own deadline ends with the response head; this one also
            // covers the body, so a branch that stalls halfway cannot hold the pass.
            return .success(try await withDeadline(timeout) {
                let response = try await client.execute(prepared, timeout: .nanoseconds(timeout.saturatingNanoseconds))
                let body = try await response.body.collect(upTo: maxResponseBody)
                return (Int(response.status.code), String(buffer: body))
            })
        } catch {
            return .failure(ExchangeError(message: "\(prepared.method) \(url): \(error)"))
        }
    }

    /// The branch URL with DTM's query parameters appended as Go's url.Values encodes them
    /// (keys sorted; `+`, `&`, `=` and spaces escaped), after any query the URL already has.
    static func url(for call: BranchCall, of global: GlobalTransaction) -> String? {
        guard let components = URLComponents(string: call.url), components.scheme != nil, components.host != nil
        else { return nil }
        let parameters = [("branch_id", call.branchID), ("gid", global.gid), ("op", call.op.rawValue),
                          ("trans_type", global.transType.rawValue)]
        let query = parameters.map { "\($0)=\(goQueryEscape($1))" }.joined(separator: "&")
        let fragment = call.url.firstIndex(of: "#").map { String(call.url[$0...]) } ?? ""
        let base = fragment.isEmpty ? call.url : String(call.url.dropLast(fragment.count))
        let existing = components.percentEncodedQuery ?? ""
        if existing.isEmpty {
            return (base.hasSuffix("?") ? base : base + "?") + query + fragment
        }
        return base + "&" + query + fragment
    }

    /// Content-Type JSON, then the transaction's branch headers, each replacing a header of the
    /// same name (as DTM's HTTP client sets them), Content-Type included.
    static func headers(_ branchHeaders: [String: String]) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        for (key, value) in branchHeaders.sorted(by: { $0.key < $1.key }) {
            headers.replaceOrAdd(name: key, value: value)
        }
        return headers
    }

    /// Go's url.QueryEscape: unreserved bytes as they are, space as `+`, the rest `%XX`.
    static func goQueryEscape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                 UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: " "):
                out += "+"
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// DTM's reading of an HTTP answer (spec 4.2), in its order: ONGOING, then FAILURE, then
    /// status. The whole body is read; what is kept (rollback reason, error) is clipped to
    /// `Redaction.maxRemoteText` bytes.
    static func result(status: Int, body: String) -> BranchResult {
        if status == 425 || body.contains("ONGOING") { return .ongoing }
        if status == 409 || body.contains("FAILURE") { return .failure(message: Redaction.clip(body)) }
        if status != 200 { return .error(message: "HTTP \(status): \(Redaction.clip(body))") }
        return .success
    }
}

/// A branch call ran past its request timeout.
struct BranchDeadlineExceeded: Error, CustomStringConvertible {
    let timeout: Duration
    var description: String { "no complete answer within the request timeout of \(timeout)" }
}

/// Runs `operation` under one deadline: when `timeout` passes first, the operation is cancelled
/// and `BranchDeadlineExceeded` is thrown. The operation must honour cancellation (the HTTP
/// client does, for the request and for the body stream).
func withDeadline<T: Sendable>(_ timeout: Duration,
                               _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw BranchDeadlineExceeded(timeout: timeout)
        }
        return value
    }
}

extension Duration {
    /// Whole nanoseconds, saturating at `Int64.max` (NIO's `TimeAmount` traps past it).
    var saturatingNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (total, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflow2 ? (seconds < 0 ? .min : .max) : total
    }
}
