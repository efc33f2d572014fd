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
            try requireJSONObject(body)
            try checkAccepted(request)
        } else {
            guard let registration = try? BranchRegistration(httpBody: body) else { return }
            try requireJSONObject(body)
            try require(!registration.gid.unicodeScalars.contains { $0 == ";" || $0 == "\n" || $0 == "\r" },
                        "registerBranch kept a character DTM removes from gids")
        }
    }

    /// The typed readers accept only what the tree parser reads as an object (after a BOM), or,
    /// where the tree refuses a number beyond a Double's range that the typed readers skip in an
    /// unknown key (as Go does), what is a JSON object by syntax.
    static func requireJSONObject(_ body: [UInt8]) throws(FuzzFailure) {
        let text = body.starts(with: [0xEF, 0xBB, 0xBF]) ? Array(body.dropFirst(3)) : body
        if case .object? = JSONValue.parse(text) { return }
        let isObject = text.withUnsafeBufferPointer { bytes in
            var reader = JSONReader(bytes)
            return (try? reader.peek()) == .object && (try? reader.skipValue()) != nil && reader.atEnd()
        }
        guard isObject else {
            throw FuzzFailure("a typed reader accepted a body the tree parser refuses: \(String(decoding: body, as: UTF8.self))")
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
    /// and the typed steps reader agrees with the tree.
    static let json = FuzzTarget(
        name: "json",
        summary: "JSONValue parser, the typed steps reader, saga/msg/workflow custom_data, stored options"
    ) { data throws(FuzzFailure) in
        let text = String(decoding: data, as: UTF8.self)
        let value = JSONValue.parse(Array(data))
        if let value {
            let written = value.text
            try require(JSONValue.parse(written) == value, "parse(write(v)) != v for \(written)")
        }
        // The typed steps reader must accept exactly the arrays of string maps (null read as
        // empty), with the same result as the tree.
        let general = JSONValue.parse(text).flatMap(stringMaps)
        if let steps = try? TransRequest.parseSteps(text), text.contains(where: { !$0.isWhitespace }),
           JSONValue.parse(text) != .null {
            try require(steps == general, "parseSteps: \(steps) but parse: \(String(describing: general))")
        } else if let general {
            throw FuzzFailure("parse accepts steps \(general) that parseSteps refuses")
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
            if element == .null {
                maps.append([:])
                continue
            }
            guard case .object(let object) = element else { return nil }
            var map: [String: String] = [:]
            for (key, member) in object {
                switch member {
                case .null: map[key] = ""
                case .string(let string): map[key] = string
                default: return nil
                }
            }
            maps.append(map)
        }
        return maps
    }
}
