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
/// is http), gRPC for `host:port/package.Service/Method` URLs.
public struct DtmBranchCaller: BranchCaller {
    let grpc: GRPCBranchCaller
    let http: HTTPBranchCaller

    public init(grpcClient: GRPCClient, httpClient: HTTPClient, logger: Logger) {
        self.grpc = GRPCBranchCaller(client: grpcClient, logger: logger)
        self.http = HTTPBranchCaller(client: httpClient, logger: logger)
    }

    public func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        Failpoint.hit("branch.\(global.transType.rawValue).\(call.op.rawValue).before")
        defer { Failpoint.hit("branch.\(global.transType.rawValue).\(call.op.rawValue).after") }
        let url = call.url
        if url.hasPrefix("http://") || url.hasPrefix("https://") || global.transProtocol == .http {
            return await http.call(call, of: global)
        }
        if global.transProtocol == .jsonRPC {
            return .error(message: "json-rpc branches are not supported by swift-dtm yet: \(url)")
        }
        return await grpc.call(call, of: global)
    }
}

/// gRPC branch calls: the stored payload bytes go out as the request message, with DTM's
/// `dtm-*` metadata and the transaction's branch headers.
struct GRPCBranchCaller: BranchCaller {
    let client: GRPCClient
    let logger: Logger

    /// `host:port/package.Service/Method` → (`host:port`, `/package.Service/Method`).
    static func split(_ url: String) -> (target: String, path: String)? {
        guard !url.contains("://"), let slash = url.firstIndex(of: "/") else { return nil }
        let target = String(url[..<slash])
        let path = String(url[slash...])
        guard !target.isEmpty, path.split(separator: "/").count == 2 else { return nil }
        return (target, path)
    }

    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        guard let (target, path) = Self.split(call.url) else {
            return .error(message: "branch URL '\(call.url)' is not host:port/package.Service/Method"
                + (call.url.contains("://") ? " (custom schemes need a registered discovery driver)" : ""))
        }
        var metadata = Metadata()
        metadata.add("dtm-gid", global.gid)
        metadata.add("dtm-trans_type", global.transType.rawValue)
        metadata.add("dtm-branch_id", call.branchID)
        metadata.add("dtm-op", call.op.rawValue)
        metadata.add("dtm-dtm", "")
        for (key, value) in global.options.branchHeaders.sorted(by: { $0.key < $1.key }) {
            metadata.add(key, value)
        }
        do {
            _ = try await client.unary(target: target, path: path, message: call.payload, metadata: metadata,
                                       timeout: .seconds(max(call.requestTimeout, 1)))
            return .success
        } catch {
            return Self.result(of: error)
        }
    }

    /// DTM's reading of a gRPC status (spec 2.4); messages are formatted as Go's gRPC errors,
    /// which is how DTM stores them as rollback reasons.
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
        return "rpc error: code = \(name) desc = \(error.message)"
    }
}

/// HTTP branch calls: DTM's query parameters, JSON content type, branch headers, and the
/// stored payload as the body (POST when there is one or for XA, else GET).
struct HTTPBranchCaller: BranchCaller {
    let client: HTTPClient
    let logger: Logger
    static let maxResponseBody = 1 << 20

    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        guard var components = URLComponents(string: call.url), components.scheme != nil, components.host != nil else {
            return .error(message: "branch URL '\(call.url)' is not a valid http(s) URL")
        }
        components.queryItems = (components.queryItems ?? []) + [
            URLQueryItem(name: "gid", value: global.gid),
            URLQueryItem(name: "trans_type", value: global.transType.rawValue),
            URLQueryItem(name: "branch_id", value: call.branchID),
            URLQueryItem(name: "op", value: call.op.rawValue),
        ]
        guard let url = components.string else {
            return .error(message: "branch URL '\(call.url)' could not take DTM's query parameters")
        }
        var request = HTTPClientRequest(url: url)
        request.method = !call.payload.isEmpty || global.transType == .xa ? .POST : .GET
        request.headers.add(name: "Content-Type", value: "application/json")
        for (key, value) in global.options.branchHeaders.sorted(by: { $0.key < $1.key }) {
            request.headers.add(name: key, value: value)
        }
        if request.method == .POST { request.body = .bytes(ByteBuffer(bytes: call.payload)) }
        do {
            let response = try await client.execute(request, timeout: .seconds(max(call.requestTimeout, 1)))
            let body = try await response.body.collect(upTo: Self.maxResponseBody)
            return Self.result(status: Int(response.status.code), body: String(buffer: body))
        } catch {
            return .error(message: "\(request.method) \(url): \(error)")
        }
    }

    /// DTM's reading of an HTTP answer (spec 4.2), in its order: ONGOING, then FAILURE, then status.
    static func result(status: Int, body: String) -> BranchResult {
        if status == 425 || body.contains("ONGOING") { return .ongoing }
        if status == 409 || body.contains("FAILURE") { return .failure(message: body) }
        if status != 200 { return .error(message: "HTTP \(status): \(body)") }
        return .success
    }
}
