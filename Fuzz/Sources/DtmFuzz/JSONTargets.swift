import DtmEngine
import DtmProto
import DtmServer
import Foundation

extension FuzzTarget {
    /// Bodies of the HTTP JSON API: the trans body (submit, prepare, abort, ...) and the
    /// registerBranch body. What is accepted must be storable and read back exactly.
    static let httpBody = FuzzTarget(
        name: "http-body",
        summary: "HTTP JSON API bodies into TransRequest / BranchRegistration, options stored and read back"
    ) { data throws(FuzzFailure) in
        guard let selector = data.first else { return }
        let body = Array(data.dropFirst())
        if selector & 1 == 0 {
            guard let request = try? TransRequest(httpBody: body) else { return }
            try checkAccepted(request)
        } else {
            guard let registration = try? BranchRegistration(httpBody: body) else { return }
            try require(!registration.gid.unicodeScalars.contains { $0 == ";" || $0 == "\n" || $0 == "\r" },
                        "registerBranch kept a character DTM removes from gids")
        }
    }

    /// What a request the engine accepts must satisfy: its options survive the store's JSON
    /// column, and its steps and custom data parse the same way twice.
    static func checkAccepted(_ request: TransRequest) throws(FuzzFailure) {
        try require(!request.gid.unicodeScalars.contains { $0 == ";" || $0 == "\n" || $0 == "\r" } || request.transProtocol == "grpc",
                    "HTTP gid kept a character DTM removes")
        guard (try? Validation.options(request.options, limits: RequestLimits())) != nil else { return }
        let stored = request.options.jsonText
        guard let readBack = TransOptions(jsonText: stored) else {
            throw FuzzFailure("accepted options cannot be read back from the store: \(stored)")
        }
        try require(readBack == request.options, "options changed in the store: \(stored)")
        try require(readBack.jsonText == stored, "options JSON is not stable: \(stored)")
    }

    /// The hand-written JSON parser (steps, custom data, stored options) and the custom data
    /// readers on top of it. Checked against itself: parse -> write -> parse is the identity,
    /// and the fast steps parser agrees with the general one.
    static let json = FuzzTarget(
        name: "json",
        summary: "JSONValue parser, the steps fast path, saga/msg/workflow custom_data, stored options"
    ) { data throws(FuzzFailure) in
        let text = String(decoding: data, as: UTF8.self)
        let value = JSONValue.parse(text)
        if let value {
            var written = ""
            if writeJSON(value, into: &written) {
                try require(JSONValue.parse(written) == value, "parse(write(v)) != v for \(written)")
            }
        }
        // The fast path must accept exactly the arrays of string maps, with the same result.
        let fast = JSONValue.parseStringMaps(text)
        let general = value.flatMap(stringMaps)
        if let fast {
            try require(general == fast, "parseStringMaps: \(fast) but parse: \(String(describing: general))")
        }
        if let steps = try? TransRequest.parseSteps(text), let general {
            try require(steps == general, "parseSteps differs from parse")
        }

        if let saga = try? SagaCustomData.parse(text) {
            for count in [0, 1, 3, 70] { _ = try? saga.check(stepCount: count) }
        }
        if let msg = try? MsgCustomData.parse(text) {
            try require(msg.delay >= 0 && msg.delay <= maxOptionSeconds, "msg delay \(msg.delay) out of range")
        }
        if let workflow = try? WorkflowCustomData.parse(text) {
            let payload = workflow.resumePayload(for: .grpc)
            if !workflow.data.isEmpty {
                let decoded = try? WorkflowData(decoding: payload)
                try require(decoded?.data == workflow.data, "workflow resume payload does not decode to its data")
            }
        }
        if let options = TransOptions(jsonText: text) {
            let stored = options.jsonText
            try require(TransOptions(jsonText: stored) == options, "options do not round-trip: \(text) -> \(stored)")
        }
    }

    private static func stringMaps(_ value: JSONValue) -> [[String: String]]? {
        guard case .array(let elements) = value else { return nil }
        var maps: [[String: String]] = []
        for element in elements {
            guard case .object(let object) = element else { return nil }
            var map: [String: String] = [:]
            for (key, member) in object {
                guard case .string(let string) = member else { return nil }
                map[key] = string
            }
            maps.append(map)
        }
        return maps
    }

    /// Writes `value` as JSON; false when it holds a number JSON cannot spell (infinity).
    private static func writeJSON(_ value: JSONValue, into out: inout String) -> Bool {
        switch value {
        case .null: out += "null"
        case .bool(let flag): out += flag ? "true" : "false"
        case .number(let number):
            guard number.isFinite else { return false }
            out += "\(number)"
        case .string(let string): quote(string, into: &out)
        case .array(let elements):
            out += "["
            for (index, element) in elements.enumerated() {
                if index > 0 { out += "," }
                guard writeJSON(element, into: &out) else { return false }
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (index, (key, member)) in members.enumerated() {
                if index > 0 { out += "," }
                quote(key, into: &out)
                out += ":"
                guard writeJSON(member, into: &out) else { return false }
            }
            out += "}"
        }
        return true
    }

    private static func quote(_ string: String, into out: inout String) {
        out += "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
