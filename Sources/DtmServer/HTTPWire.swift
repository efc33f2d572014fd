import DtmEngine
import Foundation

// The HTTP API's JSON: request bodies into engine requests (spec 1.4, 1.5) and stored
// records into DTM's response objects (spec 1.6, 8.2). Bad input becomes
// `DtmError.invalidArgument` with a message naming the field.

/// The trans body of prepare / submit / abort / prepareWorkflow / forceStop /
/// resetNextCronTime. Every key is optional and may be null (the Python SDK sends null for
/// unset strings); unknown keys are ignored, as DTM's Go decoding does.
struct HTTPTransBody: Decodable {
    var gid = ""
    var transType = ""
    var steps: [[String: String]] = []
    var payloads: [String] = []
    var queryPrepared = ""
    var transProtocol = ""
    var customData = ""
    var rollbackReason = ""
    var options = TransOptions()
    var reqExtra: [String: String] = [:]

    enum Key: String, CodingKey {
        case gid, steps, payloads, concurrent
        case transType = "trans_type", queryPrepared = "query_prepared", transProtocol = "protocol"
        case customData = "custom_data", rollbackReason = "rollback_reason", reqExtra = "req_extra"
        case waitResult = "wait_result", timeoutToFail = "timeout_to_fail", requestTimeout = "request_timeout"
        case retryInterval = "retry_interval", branchHeaders = "branch_headers", retryLimit = "retry_limit"
        case retryCount = "retry_count"
    }

    init(from decoder: any Decoder) throws {
        let body = try decoder.container(keyedBy: Key.self)
        func string(_ key: Key) throws -> String { try body.decodeIfPresent(String.self, forKey: key) ?? "" }
        func integer(_ key: Key) throws -> Int64 {
            do {
                return try body.decodeIfPresent(Int64.self, forKey: key) ?? 0
            } catch let error as DecodingError {
                throw error
            } catch {
                // Foundation's own error for a fraction or an out-of-range number; it would
                // surface as "not valid JSON" without the field's name.
                throw DecodingError.typeMismatch(Int64.self, .init(codingPath: [key], debugDescription: "\(error)"))
            }
        }
        func flag(_ key: Key) throws -> Bool { try body.decodeIfPresent(Bool.self, forKey: key) ?? false }
        func map(_ key: Key) throws -> [String: String] {
            try body.decodeIfPresent([String: String?].self, forKey: key)?.mapValues { $0 ?? "" } ?? [:]
        }
        gid = try string(.gid)
        transType = try string(.transType)
        steps = try body.decodeIfPresent([[String: String?]?].self, forKey: .steps)?
            .map { ($0 ?? [:]).mapValues { $0 ?? "" } } ?? []
        payloads = try body.decodeIfPresent([String?].self, forKey: .payloads)?.map { $0 ?? "" } ?? []
        queryPrepared = try string(.queryPrepared)
        transProtocol = try string(.transProtocol)
        customData = try string(.customData)
        rollbackReason = try string(.rollbackReason)
        reqExtra = try map(.reqExtra)
        options = TransOptions(waitResult: try flag(.waitResult), timeoutToFail: try integer(.timeoutToFail),
                               retryInterval: try integer(.retryInterval), branchHeaders: try map(.branchHeaders),
                               requestTimeout: try integer(.requestTimeout), retryLimit: try integer(.retryLimit),
                               concurrent: try flag(.concurrent))
        _ = try integer(.retryCount)  // DTM's in-memory counter: checked, never used
    }

    /// The engine's request: gid sanitised as DTM does, payload texts as bytes.
    var request: TransRequest {
        TransRequest(gid: dtmEscape(gid), transType: transType, steps: steps, payloads: payloads.map { Array($0.utf8) },
                     queryPrepared: queryPrepared, transProtocol: transProtocol, customData: customData,
                     options: options, reqExtra: reqExtra, rollbackReason: rollbackReason)
    }
}

extension TransRequest {
    /// Decodes an HTTP trans body.
    package init(httpBody bytes: [UInt8]) throws(DtmError) {
        self = try decodeBody(HTTPTransBody.self, bytes, expecting: "a JSON object").request
    }
}

extension BranchRegistration {
    /// Decodes the registerBranch body: a flat object whose values are all strings (or null).
    package init(httpBody bytes: [UInt8]) throws(DtmError) {
        let map = try decodeBody([String: String?].self, bytes, expecting: "a JSON object whose values are strings")
            .mapValues { $0 ?? "" }
        var data = map
        if let status = data["status"] { data["status"] = dtmEscape(status) }
        self.init(gid: dtmEscape(map["gid"] ?? ""), transType: map["trans_type"] ?? "",
                  branchID: map["branch_id"] ?? "", data: data)
    }
}

/// DTM removes these from received gids and statuses (they could break its SQL and logs).
func dtmEscape(_ text: String) -> String {
    func removed(_ scalar: Unicode.Scalar) -> Bool { scalar == "\n" || scalar == "\r" || scalar == ";" }
    guard text.unicodeScalars.contains(where: removed) else { return text }
    var kept = String.UnicodeScalarView()
    kept.append(contentsOf: text.unicodeScalars.filter { !removed($0) })
    return String(kept)
}

/// Decodes a JSON body; any problem becomes a message naming the field at fault.
func decodeBody<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], expecting: String) throws(DtmError) -> T {
    if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
        throw DtmError.invalidArgument("request body: empty; expected \(expecting)")
    }
    do {
        return try JSONDecoder().decode(type, from: Data(bytes))
    } catch let error as DecodingError {
        throw DtmError.invalidArgument(describe(error, expecting: expecting))
    } catch {
        throw DtmError.invalidArgument("request body: \(error)")
    }
}

private func describe(_ error: DecodingError, expecting: String) -> String {
    func path(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
        }
        return text
    }
    switch error {
    case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
        if context.codingPath.isEmpty { return "request body: expected \(expecting)" }
        return "\(path(context.codingPath)): expected \(describe(type))"
    case .keyNotFound(let key, let context):
        return "\(path(context.codingPath + [key])): missing"
    case .dataCorrupted(let context):
        if context.codingPath.isEmpty { return "request body: not valid JSON (\(context.debugDescription))" }
        return "\(path(context.codingPath)): \(context.debugDescription)"
    @unknown default:
        return "request body: \(error)"
    }
}

private func describe(_ type: Any.Type) -> String {
    switch type {
    case is String.Type, is String?.Type: "a string"
    case is Int64.Type: "a whole number"
    case is Bool.Type: "true or false"
    case is [Any].Type, is [String?].Type, is [[String: String?]?].Type: "an array"
    default: "an object"
    }
}

// MARK: - Response objects

extension JSONText {
    /// A global transaction as DTM's `TransGlobalStore` marshals (spec 1.6): fields in
    /// declaration order, `omitempty` ones left out when empty, the options embedded.
    init(_ global: GlobalTransaction) {
        var object = JSONObject(modelBase: global.id, global.createTime, global.updateTime)
        object.omitEmpty("gid", global.gid)
        object.omitEmpty("trans_type", global.transType.rawValue)
        object.omitEmpty("status", global.status.rawValue)
        object.omitEmpty("query_prepared", global.queryPrepared)
        object.omitEmpty("protocol", global.transProtocol.rawValue)
        object.omitEmpty("finish_time", global.finishTime)
        object.omitEmpty("rollback_time", global.rollbackTime)
        object.omitEmpty("result", global.result)
        object.omitEmpty("rollback_reason", global.rollbackReason)
        object.omitEmpty("options", global.options.jsonText)
        object.omitEmpty("custom_data", global.customData)
        object.omitEmpty("next_cron_interval", global.nextCronInterval)
        object.omitEmpty("next_cron_time", global.nextCronTime)
        object.omitEmpty("owner", global.owner)
        object.omitEmpty("ext_data", global.extData)
        // swift-dtm's own: why the stored row cannot be driven (see "Limits and failure behaviour").
        object.omitEmpty("quarantine", global.quarantine)
        for (key, value) in JSONText.optionMembers(global.options) { object.add(key, value) }
        self = object.json
    }

    /// The options as embedded members of the transaction object (Go embeds the struct).
    private static func optionMembers(_ options: TransOptions) -> [(String, JSONText)] {
        var object = JSONObject()
        object.omitEmpty("wait_result", options.waitResult)
        object.omitEmpty("timeout_to_fail", options.timeoutToFail)
        object.omitEmpty("request_timeout", options.requestTimeout)
        object.omitEmpty("retry_interval", options.retryInterval)
        object.omitEmpty("branch_headers", options.branchHeaders)
        object.add("concurrent", .bool(options.concurrent))
        object.omitEmpty("retry_limit", options.retryLimit)
        return object.members
    }

    /// A branch row as DTM's `TransBranchStore` marshals: `bin_data` in base64.
    init(_ branch: BranchRecord) {
        var object = JSONObject(modelBase: branch.id, branch.createTime, branch.updateTime)
        object.omitEmpty("gid", branch.gid)
        object.omitEmpty("url", branch.url)
        object.omitEmpty("bin_data", Data(branch.binData).base64EncodedString())
        object.omitEmpty("branch_id", branch.branchID)
        object.omitEmpty("op", branch.op.rawValue)
        object.omitEmpty("status", branch.status.rawValue)
        object.omitEmpty("finish_time", branch.finishTime)
        object.omitEmpty("rollback_time", branch.rollbackTime)
        self = object.json
    }

    /// A kv row as DTM's `KVStore` marshals (no `omitempty`).
    init(_ kv: KVRecord) {
        var object = JSONObject(modelBase: kv.id, kv.createTime, kv.updateTime)
        for (key, value) in [("cat", kv.cat), ("k", kv.key), ("v", kv.value)] { object.add(key, .string(value)) }
        object.add("version", .int(kv.version))
        self = object.json
    }
}
