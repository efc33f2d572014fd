import DtmEngine
import Hummingbird
import NIOCore

/// DTM's JSON-RPC 2.0 endpoint, `POST /api/json-rpc` on the HTTP port (DTM's `api_json_rpc.go`),
/// for the json-rpc mode of DTM's SDKs: methods `newGid`, `prepare`, `submit`, `abort` and
/// `registerBranch` (params are the HTTP API's bodies), plus swift-dtm's `query` (params
/// `{"gid": ...}`). Answers are HTTP 200 with a JSON-RPC response: `result` on success (null
/// where DTM's HTTP API answers SUCCESS), else `error` with JSON-RPC's codes (-32700 parse error,
/// -32600 invalid request, -32601 method not found, -32602 invalid params, -32603 internal error)
/// and DTM's -32901 for FAILURE and -32902 for ONGOING. A refusal for overload is a 503 with
/// `Retry-After`, as on the rest of the API. Batches are not supported (DTM has none).
enum JSONRPC {
    static let path = "/api/json-rpc"

    /// JSON-RPC error codes, JSON-RPC 2.0's and DTM's own (`dtmimp.JrpcCodeFailure`/`Ongoing`).
    enum Code: Int64 {
        case parseError = -32700
        case invalidRequest = -32600
        case methodNotFound = -32601
        case invalidParams = -32602
        case internalError = -32603
        case failure = -32901
        case ongoing = -32902
        /// swift-dtm's: a gid outside the client's JWT prefix (sent with HTTP 403).
        case permissionDenied = -32003
    }

    /// A JSON-RPC error response's `error` member, with the HTTP status it goes out with.
    struct Failure: Error {
        var code: Code
        var message: String
        var status: HTTPResponse.Status = .ok

        init(_ code: Code, _ message: String) {
            self.code = code
            self.message = message
        }

        /// The coordinator's outcomes as JSON-RPC errors.
        init(_ error: DtmError) {
            switch error {
            case .failure(let message): self.init(.failure, message)
            case .ongoing(let message): self.init(.ongoing, message)
            case .invalidArgument(let message), .notFound(let message): self.init(.invalidParams, message)
            case .overloaded(let message):
                self.init(.internalError, message)
                status = .serviceUnavailable
            case .permissionDenied(let message):
                self.init(.permissionDenied, message)
                status = .forbidden
            case .storage, .internal, .unavailable: self.init(.internalError, error.message)
            }
        }
    }

    /// The request's `id`: a non-empty string or a whole number, echoed in the response.
    static func requestID(of request: [String: JSONValue]) -> JSONText? {
        if case .string(let text)? = request["id"], !text.isEmpty { return .string(text) }
        return request["id"]?.integer.map(JSONText.int)
    }

    /// A request body: the envelope's members as values, but `params` as the bytes it spans
    /// in the body (the typed request readers take them from there: no tree, no re-encoding).
    enum Envelope {
        case notJSON
        case notObject
        case object(members: [String: JSONValue], params: Range<Int>?)
    }

    static func envelope(_ body: UnsafeBufferPointer<UInt8>) -> Envelope {
        var reader = JSONReader(body)
        do throws(JSONError) {
            guard try reader.peek() == .object else {
                _ = try reader.value()
                try reader.end()
                return .notObject
            }
            var members: [String: JSONValue] = [:]
            var params: Range<Int>?
            var more = try reader.enterObject()
            while more {
                let key = try reader.key()
                if key == "params" {
                    params = try reader.rawValue()
                } else {
                    members[key] = try reader.value(depth: 1)
                }
                more = try reader.objectContinues()
            }
            try reader.end()
            return .object(members: members, params: params)
        } catch {
            return .notJSON
        }
    }

    /// The response to one request body.
    /// `principal` is the authenticated client: a JWT's gid prefix limits it as on the HTTP API.
    static func answer(_ body: [UInt8], api: DtmHTTPAPI, principal: Principal = .unrestricted) async
        -> (HTTPResponse.Status, String) {
        let request: [String: JSONValue]
        let paramsRange: Range<Int>?
        switch body.withUnsafeBufferPointer(envelope) {
        case .notJSON:
            return respond(id: .null, .failure(Failure(.parseError, "Parse error: the body is not JSON")))
        case .notObject:
            return respond(id: .null, .failure(Failure(.invalidRequest, "Invalid Request: expected a JSON object (batches are not supported)")))
        case .object(let members, let params):
            (request, paramsRange) = (members, params)
        }
        guard request["jsonrpc"] == .string("2.0"), let id = requestID(of: request) else {
            return respond(id: requestID(of: request) ?? .null, .failure(Failure(
                .invalidRequest, #"Invalid Request: "jsonrpc" must be "2.0" and "id" a non-empty string or a whole number"#)))
        }
        guard case .string(let method)? = request["method"] else {
            return respond(id: id, .failure(Failure(.invalidRequest, #"Invalid Request: "method" must be a string"#)))
        }
        let params = paramsRange.map { body[$0] } ?? ArraySlice("null".utf8)
        let result: Result<JSONText, Failure>
        do throws(DtmError) {
            switch method {
            case "newGid":
                result = .success(.sorted(["gid": .string(principal.newGid(api.gids))]))
            case "prepare":
                try await api.engine.prepare(trans(params, principal))
                result = .success(.null)
            case "submit":
                try await api.engine.submit(trans(params, principal))
                result = .success(.null)
            case "abort":
                try await api.engine.abort(trans(params, principal))
                result = .success(.null)
            case "registerBranch":
                let registration = try BranchRegistration(httpBody: params)
                try principal.permit(gid: registration.gid)
                try await api.engine.registerBranch(registration)
                result = .success(.null)
            case "query":
                guard case .object(let members)? = JSONValue.parse(Array(params)), case .string(let gid)? = members["gid"] else {
                    throw DtmError.invalidArgument(#"params: expected {"gid": "..."}"#)
                }
                try principal.permit(gid: gid)
                let (global, branches) = try await api.admin.query(gid: gid)
                result = .success(.sorted(["transaction": global.map(JSONText.init) ?? .null,
                                           "branches": .array(branches.map(JSONText.init))]))
            default:
                result = .failure(Failure(.methodNotFound, "Method not found: \(method)"))
            }
        } catch {
            result = .failure(Failure(error))
        }
        return respond(id: id, result)
    }

    /// The trans body in `params`, refused when its gid is outside the client's prefix.
    private static func trans(_ params: ArraySlice<UInt8>, _ principal: Principal) throws(DtmError) -> TransRequest {
        let request = try TransRequest(httpBody: params)
        try principal.permit(gid: request.gid)
        return request
    }

    /// A JSON-RPC 2.0 response: `result` or `error`, never both.
    static func respond(id: JSONText, _ result: Result<JSONText, Failure>) -> (HTTPResponse.Status, String) {
        switch result {
        case .success(let value):
            return (.ok, JSONText.object([("id", id), ("jsonrpc", .string("2.0")), ("result", value)]).text)
        case .failure(let failure):
            let error = JSONText.object([("code", .int(failure.code.rawValue)), ("message", .string(failure.message))])
            return (failure.status, JSONText.object([("error", error), ("id", id), ("jsonrpc", .string("2.0"))]).text)
        }
    }
}

extension DtmHTTPAPI {
    /// `POST /api/json-rpc`.
    var jsonRPCRoute: APIRoute {
        let api = self
        return APIRoute(.post, JSONRPC.path, raw: { call in
            let (status, text) = await JSONRPC.answer(call.body, api: api, principal: call.principal)
            var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
            if status == .serviceUnavailable { headers[.retryAfter] = "1" }
            return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        })
    }
}
