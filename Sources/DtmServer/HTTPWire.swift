import DtmEngine
import Foundation

// The HTTP API's JSON: request bodies into engine requests (spec 1.4, 1.5) and stored
// records into DTM's response objects (spec 1.6, 8.2). Bad input becomes
// `DtmError.invalidArgument` with a message naming the field.

extension TransRequest {
    /// Decodes an HTTP trans body (DtmEngine's JSON reader), the gid sanitised as DTM does.
    package init<Bytes: RandomAccessCollection<UInt8>>(httpBody bytes: Bytes) throws(DtmError) {
        self = try TransRequest(jsonBody: bytes)
        gid = dtmEscape(gid)
    }
}

extension BranchRegistration {
    /// Decodes the registerBranch body: a flat object whose values are all strings (or null).
    package init<Bytes: RandomAccessCollection<UInt8>>(httpBody bytes: Bytes) throws(DtmError) {
        self = try BranchRegistration(jsonBody: bytes)
        gid = dtmEscape(gid)
        if let status = data["status"] { data["status"] = dtmEscape(status) }
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
