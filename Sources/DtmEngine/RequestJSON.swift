// Request JSON into the engine's request types, read straight from the body's bytes by
// JSONReader (issue 13: one JSON decoder; Foundation's JSONDecoder cost 13x the time and 4x the
// allocations of this on a 2-step saga body). The acceptance rules are those of DTM's Go
// server (encoding/json into its structs): unknown keys ignored, `null` leaves a field empty,
// a repeated key keeps its last value, struct keys match case-insensitively, map keys exactly.
// Beyond Go, as Foundation's JSONDecoder did: a UTF-8 byte order mark is skipped and a whole
// number may be written `1.0` or `1e3`.

extension JSONReader {
    /// A string, or nil for `null`.
    package mutating func optionalString(_ path: @autoclosure () -> String) throws(JSONError) -> String? {
        switch try peek() {
        case .string: return try string()
        case .null:
            try null()
            return nil
        default: throw JSONError.mismatch(path: path(), expected: .string)
        }
    }

    /// A whole number in Int64's range, or nil for `null`.
    package mutating func optionalInt64(_ path: @autoclosure () -> String) throws(JSONError) -> Int64? {
        switch try peek() {
        case .number:
            guard let value = try int64() else { throw JSONError.mismatch(path: path(), expected: .wholeNumber) }
            return value
        case .null:
            try null()
            return nil
        default: throw JSONError.mismatch(path: path(), expected: .wholeNumber)
        }
    }

    /// true or false, or nil for `null`.
    package mutating func optionalBool(_ path: @autoclosure () -> String) throws(JSONError) -> Bool? {
        switch try peek() {
        case .bool: return try bool()
        case .null:
            try null()
            return nil
        default: throw JSONError.mismatch(path: path(), expected: .bool)
        }
    }

    /// An object of strings (Go's `map[string]string`: a `null` value is ""), or nil for `null`.
    package mutating func stringMap(_ path: @autoclosure () -> String) throws(JSONError) -> [String: String]? {
        switch try peek() {
        case .object:
            var more = try enterObject()
            // Steps hold one or two keys: one allocation instead of a growth step.
            var map = more ? [String: String](minimumCapacity: 2) : [:]
            while more {
                let key = try key()
                map[key] = try optionalString(path().isEmpty ? key : "\(path()).\(key)") ?? ""
                more = try objectContinues()
            }
            return map
        case .null:
            try null()
            return nil
        default: throw JSONError.mismatch(path: path(), expected: .object)
        }
    }

    /// An array of strings as their UTF-8 bytes (`null` elements are empty), or nil for `null`.
    package mutating func byteStrings(_ path: @autoclosure () -> String) throws(JSONError) -> [[UInt8]]? {
        switch try peek() {
        case .array:
            var list: [[UInt8]] = []
            var more = try enterArray()
            if more { list.reserveCapacity(2) }
            while more {
                switch try peek() {
                case .string: list.append(try stringBytes())
                case .null:
                    try null()
                    list.append([])
                default: throw JSONError.mismatch(path: "\(path())[\(list.count)]", expected: .string)
                }
                more = try arrayContinues()
            }
            return list
        case .null:
            try null()
            return nil
        default: throw JSONError.mismatch(path: path(), expected: .array)
        }
    }

    /// Saga/msg steps: an array of string maps (`null` elements are empty maps), or nil for `null`.
    package mutating func stringMaps(_ path: @autoclosure () -> String) throws(JSONError) -> [[String: String]]? {
        switch try peek() {
        case .array:
            var maps: [[String: String]] = []
            var more = try enterArray()
            if more { maps.reserveCapacity(2) }
            while more {
                maps.append(try stringMap("\(path())[\(maps.count)]") ?? [:])
                more = try arrayContinues()
            }
            return maps
        case .null:
            try null()
            return nil
        default: throw JSONError.mismatch(path: path(), expected: .array)
        }
    }
}

/// Reads a JSON request body with `read`. `expecting` names the top-level shape for messages.
/// A syntax error anywhere wins over a type error before it, as in Go (which checks the whole
/// text first); every error becomes `DtmError.invalidArgument` naming the field at fault.
package func decodeJSONBody<Bytes: RandomAccessCollection<UInt8>, T>(
    _ body: Bytes, expecting: String, _ read: (inout JSONReader) throws(JSONError) -> T
) throws(DtmError) -> T {
    let result = body.withContiguousStorageIfAvailable { bytes in
        readJSONBody(bytes, expecting: expecting, read)
    } ?? Array(body).withUnsafeBufferPointer { readJSONBody($0, expecting: expecting, read) }
    return try result.get()
}

private func readJSONBody<T>(_ bytes: UnsafeBufferPointer<UInt8>, expecting: String,
                             _ read: (inout JSONReader) throws(JSONError) -> T) -> Result<T, DtmError> {
    var reader = JSONReader(bytes)
    reader.skipByteOrderMark()
    if reader.atEnd() { return .failure(.invalidArgument("request body: empty; expected \(expecting)")) }
    do throws(JSONError) {
        let value = try read(&reader)
        try reader.end()
        return .success(value)
    } catch .mismatch(let path, let expected) {
        // Is the text JSON at all? Only checked on this error path.
        var check = JSONReader(bytes)
        check.skipByteOrderMark()
        do throws(JSONError) {
            try check.skipValue()
            try check.end()
        } catch {
            return .failure(.invalidArgument(describe(error, expecting: expecting)))
        }
        if path.isEmpty { return .failure(.invalidArgument("request body: expected \(expecting)")) }
        return .failure(.invalidArgument("\(path): expected \(expected)"))
    } catch {
        return .failure(.invalidArgument(describe(error, expecting: expecting)))
    }
}

private func describe(_ error: JSONError, expecting: String) -> String {
    switch error {
    case .syntax(let offset, let reason, let field):
        "request body: not valid JSON (\(reason) at byte \(offset)\(field.isEmpty ? "" : ", in \(field)"))"
    case .mismatch(let path, let expected):
        path.isEmpty ? "request body: expected \(expecting)" : "\(path): expected \(expected)"
    }
}

extension JSONReader {
    /// Members of the top-level object, keys lowercased when they hold ASCII capitals (Go
    /// matches struct fields case-insensitively). A syntax error inside a member's value names the key.
    mutating func structMembers(_ member: (inout JSONReader, String) throws(JSONError) -> Void) throws(JSONError) {
        guard try peek() == .object else { throw JSONError.mismatch(path: "", expected: .object) }
        var more = try enterObject()
        while more {
            var key = try key()
            if key.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) { key = key.lowercased() }
            do throws(JSONError) {
                try member(&self, key)
            } catch .syntax(let offset, let reason, _) {
                throw JSONError.syntax(offset: offset, reason: reason, field: key)
            }
            more = try objectContinues()
        }
    }
}

extension TransRequest {
    /// The HTTP API's trans body (prepare, submit, abort, prepareWorkflow, forceStop,
    /// resetNextCronTime, and JSON-RPC params): DTM's `TransGlobal` JSON. Every key is optional
    /// and may be null (the Python SDK sends null for unset strings). Payloads are JSON texts,
    /// kept as their bytes. The gid is as sent (the HTTP layer removes what DTM removes).
    public init<Bytes: RandomAccessCollection<UInt8>>(jsonBody body: Bytes) throws(DtmError) {
        self = try decodeJSONBody(body, expecting: "a JSON object") { (reader) throws(JSONError) in
            var request = TransRequest(gid: "", transType: "")
            var options = TransOptions()
            try reader.structMembers { (reader, key) throws(JSONError) in
                switch key {
                case "gid": if let value = try reader.optionalString(key) { request.gid = value }
                case "trans_type": if let value = try reader.optionalString(key) { request.transType = value }
                case "steps": if let value = try reader.stringMaps(key) { request.steps = value }
                case "payloads": if let value = try reader.byteStrings(key) { request.payloads = value }
                case "query_prepared": if let value = try reader.optionalString(key) { request.queryPrepared = value }
                case "protocol": if let value = try reader.optionalString(key) { request.transProtocol = value }
                case "custom_data": if let value = try reader.optionalString(key) { request.customData = value }
                case "rollback_reason": if let value = try reader.optionalString(key) { request.rollbackReason = value }
                case "req_extra": if let value = try reader.stringMap(key) { request.reqExtra = value }
                case "wait_result": if let value = try reader.optionalBool(key) { options.waitResult = value }
                case "concurrent": if let value = try reader.optionalBool(key) { options.concurrent = value }
                case "timeout_to_fail": if let value = try reader.optionalInt64(key) { options.timeoutToFail = value }
                case "request_timeout": if let value = try reader.optionalInt64(key) { options.requestTimeout = value }
                case "retry_interval": if let value = try reader.optionalInt64(key) { options.retryInterval = value }
                case "retry_limit": if let value = try reader.optionalInt64(key) { options.retryLimit = value }
                case "retry_count": _ = try reader.optionalInt64(key)  // DTM's in-memory counter: checked, never used
                case "branch_headers": if let value = try reader.stringMap(key) { options.branchHeaders = value }
                default: try reader.skipValue(depth: 1)
                }
            }
            request.options = options
            return request
        }
    }

    /// Parses the gRPC `Steps` text: a JSON array of string maps; "" and `null` mean none.
    public static func parseSteps(_ json: String) throws(DtmError) -> [[String: String]] {
        var json = json
        let result = json.withUTF8 { bytes -> Result<[[String: String]]?, JSONError> in
            var reader = JSONReader(bytes)
            if reader.atEnd() { return .success(nil) }
            return Result { () throws(JSONError) in
                let steps = try reader.stringMaps("steps")
                try reader.end()
                return steps
            }
        }
        switch result {
        case .success(let steps): return steps ?? []
        case .failure(.mismatch(let path, .string)): throw DtmError.invalidArgument("\(path): not a string")
        case .failure(.mismatch(let path, .object)) where path != "steps":
            throw DtmError.invalidArgument("\(path): not a JSON object")
        case .failure: throw DtmError.invalidArgument("steps: not a JSON array of objects")
        }
    }
}

extension BranchRegistration {
    /// The HTTP registerBranch body: a flat object whose values are all strings (or null, read
    /// as ""), DTM's `map[string]string`. gid and status are as sent (the HTTP layer escapes them).
    public init<Bytes: RandomAccessCollection<UInt8>>(jsonBody body: Bytes) throws(DtmError) {
        let data = try decodeJSONBody(body, expecting: "a JSON object whose values are strings") {
            (reader) throws(JSONError) -> [String: String] in
            guard try reader.peek() == .object, let map = try reader.stringMap("") else {
                throw JSONError.mismatch(path: "", expected: .object)
            }
            return map
        }
        self.init(gid: data["gid"] ?? "", transType: data["trans_type"] ?? "", branchID: data["branch_id"] ?? "", data: data)
    }
}
