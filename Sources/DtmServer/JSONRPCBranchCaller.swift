import AsyncHTTPClient
import DtmEngine
import Foundation
import NIOCore

/// json-rpc branch calls (DTM's `getJSONRPCResult`): in a transaction whose protocol is
/// `json-rpc`, an http(s) branch URL naming a method (`http://busi/api/json-rpc?method=TransIn`)
/// is POSTed a JSON-RPC 2.0 request: `method` from the URL, `params` the branch payload (a JSON
/// object) with `gid`, `trans_type`, `branch_id` and `op` added, a fresh `id`. The answer is read
/// as an HTTP answer first (425 / ONGOING, 409 / FAILURE, non-200: spec 4.2), then as a
/// JSON-RPC response: error code -32901 is FAILURE, -32902 ONGOING, any other error is retried,
/// no error is SUCCESS.
struct JSONRPCBranchCaller: BranchCaller {
    let client: HTTPClient

    /// DTM's rule for which calls of a transaction go out as JSON-RPC.
    static func applies(to url: String, of global: GlobalTransaction) -> Bool {
        global.transProtocol == .jsonRPC && (url.hasPrefix("http://") || url.hasPrefix("https://"))
            && url.contains("method")
    }

    func call(_ call: BranchCall, of global: GlobalTransaction) async -> BranchResult {
        let body: [UInt8]
        switch Self.request(for: call, of: global, id: UUID().uuidString) {
        case .success(let bytes): body = bytes
        case .failure(let problem): return .error(message: problem.message)
        }
        switch await HTTPBranchCaller.exchange(client, url: call.url, body: body, of: call, global) {
        case .success(let (status, text)): return Self.result(status: status, body: text)
        case .failure(let error): return .error(message: error.message)
        }
    }

    struct Problem: Error {
        var message: String
    }

    /// The JSON-RPC request body of `call`.
    static func request(for call: BranchCall, of global: GlobalTransaction, id: String) -> Result<[UInt8], Problem> {
        let method = URLComponents(string: call.url)?.queryItems?.first { $0.name == "method" }?.value ?? ""
        var params: [String: JSONValue] = [:]
        if !call.payload.isEmpty {
            guard case .object(let members)? = JSONValue.parse(call.payload) else {
                return .failure(Problem(message: "json-rpc branch \(call.branchID)/\(call.op.rawValue): "
                    + "the payload must be a JSON object (it becomes the JSON-RPC params)"))
            }
            params = members
        }
        params["gid"] = .string(global.gid)
        params["trans_type"] = .string(global.transType.rawValue)
        params["branch_id"] = .string(call.branchID)
        params["op"] = .string(call.op.rawValue)
        let request: JSONValue = .object(["id": .string(id), "jsonrpc": .string("2.0"), "method": .string(method),
                                          "params": .object(params)])
        return .success(Array(request.text.utf8))
    }

    /// DTM's reading of a JSON-RPC branch answer.
    static func result(status: Int, body: String) -> BranchResult {
        let http = HTTPBranchCaller.result(status: status, body: body)
        guard http == .success else { return http }
        guard case .object(let response)? = JSONValue.parse(body) else {
            return .error(message: "the JSON-RPC answer is not a JSON object: \(Redaction.clip(body))")
        }
        let code: JSONValue?
        switch response["error"] {
        case nil, .null?: return .success
        case .object(let error)?: code = error["code"]
        default: code = nil
        }
        switch code {
        case .number(Double(JSONRPC.Code.failure.rawValue))?: return .failure(message: Redaction.clip(body))
        case .number(Double(JSONRPC.Code.ongoing.rawValue))?: return .ongoing
        default: return .error(message: "JSON-RPC error: \(Redaction.clip(body))")
        }
    }
}
