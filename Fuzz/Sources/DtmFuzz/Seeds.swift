import DtmEngine
import DtmGRPC
import DtmProto
import Foundation

/// Reading corpus directories.
public enum Corpus {
    /// The files under `path` (itself when it is a file), sorted, hidden files skipped.
    public static func files(at path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return [] }
        guard isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { path + "/" + $0 }
    }

    public static func read(_ file: String) -> [UInt8] {
        FileManager.default.contents(atPath: file).map { [UInt8]($0) } ?? []
    }
}

/// The seed corpus: valid inputs made by the coordinator's own encoders, plus edge cases.
/// `dtm-fuzz --write-seeds Fuzz/corpus` writes them; the fuzzers grow the corpus from there.
public enum Seeds {
    public static func all() throws -> [String: [(name: String, bytes: [UInt8])]] {
        [
            "http2-server": try http2Server(),
            "grpc-calls": grpcCalls(),
            "grpc-wire": grpcWire(),
            "proto": proto(),
            "http-body": httpBody(),
            "json": json(),
        ]
    }

    /// Writes every seed as `dir/<target>/seed-<name>`; returns how many.
    public static func write(to dir: String) throws -> Int {
        var count = 0
        for (target, seeds) in try all() {
            let folder = dir + "/" + target
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for seed in seeds {
                try Data(seed.bytes).write(to: URL(fileURLWithPath: folder + "/seed-" + seed.name))
                count += 1
            }
        }
        return count
    }

    /// What a real client sends after the connection preface, for each kind of call.
    static func http2Server() throws -> [(name: String, bytes: [UInt8])] {
        func capture(_ start: (GRPCClientConnection) throws -> Void) throws -> [UInt8] {
            let client = try GRPCClientConnection(authority: "fuzz:1")
            try start(client)
            return Array(try client.pendingOutput().dropFirst(FuzzTarget.clientMagic.count))
        }
        var metadata = Metadata()
        metadata.add("dtm-gid", "gid-1")
        metadata.add("trace-bin", binary: [0, 1, 2, 255])
        let echo = try capture { _ = try $0.startCall(path: FuzzRoutes.echo, message: Array("hello".utf8), metadata: metadata) }
        let fail = try capture { _ = try $0.startCall(path: FuzzRoutes.fail, message: Array("no".utf8), timeout: .seconds(2)) }
        let later = try capture { client in
            for index in 0..<3 { _ = try client.startCall(path: FuzzRoutes.later, message: [UInt8(index)]) }
        }
        let unknown = try capture { _ = try $0.startCall(path: "/fuzz.Svc/Missing", message: []) }
        let big = try capture { _ = try $0.startCall(path: FuzzRoutes.echo, message: [UInt8](repeating: 7, count: 1500)) }
        // Byte 0 picks the read size: 0 means all at once.
        return [
            ("echo", [0] + echo), ("echo-split7", [7] + echo), ("fail-timeout", [0] + fail),
            ("three-later", [0] + later), ("three-later-split1", [1] + later), ("unknown", [0] + unknown),
            ("too-big", [0] + big), ("settings-only", [0, 0, 0, 0, 4, 0, 0, 0, 0, 0]),
        ]
    }

    static func grpcCalls() -> [(name: String, bytes: [UInt8])] {
        // op (low 2 bits: 0/1 call, 2 answer, 3 pump; bits 2-3 path), metadata count, ...
        let call: [UInt8] = [0x00, 1, 3] + Array("key".utf8) + [0, 5] + Array("value".utf8) + [5] + Array("hello".utf8) + [1, 3]
        let failCall: [UInt8] = [0x04, 0, 4] + Array("oops".utf8) + [0]
        let laterCall: [UInt8] = [0x08, 0, 1, 9, 0]
        let binCall: [UInt8] = [0x00, 1, 4] + Array("data".utf8) + [1, 3, 0, 1, 255, 2, 1, 2, 0]
        let bigCall: [UInt8] = [0x80, 0, 0, 0]
        return [
            ("echo", call + [3]), ("fail", failCall + [3]), ("later-answered", laterCall + [3, 2, 0, 3]),
            ("later-expired", laterCall + [3, 2, 2, 3]), ("binary-metadata", binCall + [3]),
            ("too-big", bigCall + [3]), ("mixed", call + failCall + laterCall + binCall + [3, 2, 1, 3]),
        ]
    }

    static func grpcWire() -> [(name: String, bytes: [UInt8])] {
        let header: [HeaderField] = [HeaderField("dtm-gid", "g1"), HeaderField("x-bin", "AAEC"),
                                     HeaderField("grpc-timeout", "10S"), HeaderField(":path", "/a/b")]
        var fields: [UInt8] = []
        for field in header {
            fields += [UInt8(field.name.utf8.count)] + Array(field.name.utf8)
            fields += [UInt8(field.value.utf8.count)] + Array(field.value.utf8)
        }
        return [
            ("frame", [0] + Wire.frame(Array("message".utf8))), ("frame-empty", [0, 0, 0, 0, 0, 0]),
            ("frame-compressed", [0, 1, 0, 0, 0, 1, 9]), ("frame-short", [0, 0, 0, 0, 9, 1]),
            ("timeout-seconds", [1] + Array("10S".utf8)), ("timeout-max", [1] + Array("99999999H".utf8)),
            ("timeout-nanos", [1] + Array("1n".utf8)), ("message", [2] + Array(" 100% ünïcode\n ".utf8)),
            ("message-escapes", [2] + Array("%41%zz%".utf8)), ("base64", [3] + Array("AAEC/w".utf8)),
            ("base64-padded", [3] + Array("AAEC/w==".utf8)), ("metadata", [4] + fields),
        ]
    }

    static func proto() -> [(name: String, bytes: [UInt8])] {
        let options = DtmTransOptions(waitResult: true, timeoutToFail: 60, retryInterval: 10,
                                      branchHeaders: ["k": "v"], requestTimeout: 5, retryLimit: 3)
        let steps = #"[{"action":"localhost:8080/busi.Busi/TransOut","compensate":"localhost:8080/busi.Busi/TransOutRevert"}]"#
        let request = DtmRequest(gid: "gid-seed", transType: "saga", transOptions: options,
                                 customedData: #"{"concurrent":false}"#, binPayloads: [[1, 2, 3]],
                                 queryPrepared: "", steps: steps, reqExtra: ["status": "submitted"],
                                 rollbackReason: "")
        let branch = DtmBranchRequest(gid: "gid-seed", transType: "tcc", branchID: "01", op: "try",
                                      data: ["confirm": "c", "cancel": "x"], busiPayload: [9, 9])
        let progresses = DtmProgressesReply(
            transaction: DtmTransaction(gid: "g", status: "succeed", rollbackReason: "", result: "r"),
            progresses: [DtmProgress(status: "succeed", binData: [1], branchID: "01", op: "action")])
        // Byte 0 picks the message type, in FuzzTarget.proto's order.
        return [
            ("request", [0] + request.encode()), ("branch", [1] + branch.encode()), ("options", [2] + options.encode()),
            ("gid", [3] + DtmGidReply(gid: "g").encode()), ("progresses", [4] + progresses.encode()),
            ("topic", [7] + DtmTopicRequest(topic: "t", url: "u", remark: "r").encode()),
            ("busi", [8] + BusiReqGrpc(amount: 30, transOutResult: "SUCCESS", transInResult: "").encode()),
            ("workflow", [10] + WorkflowData(data: [1, 2]).encode()), ("empty", [11]),
            ("unknown-field", [0, 0xf8, 0x01, 0x01]),
        ]
    }

    static func httpBody() -> [(name: String, bytes: [UInt8])] {
        let bodies = [
            (0, "saga", #"{"gid":"g1","trans_type":"saga","steps":[{"action":"http://localhost:8081/api/TransOut","compensate":"http://localhost:8081/api/TransOutRevert"}],"payloads":["{\"amount\":30}"],"custom_data":"{\"concurrent\":true,\"orders\":{\"0\":[]}}","wait_result":true,"timeout_to_fail":60,"retry_interval":10,"request_timeout":5,"retry_limit":3,"branch_headers":{"a":"b"}}"#),
            (0, "msg", #"{"gid":"g2","trans_type":"msg","steps":[{"action":"http://x/a"}],"payloads":[""],"query_prepared":"http://x/q","custom_data":"{\"delay\":5}"}"#),
            (0, "nulls", #"{"gid":null,"trans_type":null,"steps":null,"payloads":[null],"req_extra":{"a":null}}"#),
            (0, "big-numbers", #"{"gid":"g3","trans_type":"saga","retry_limit":10000000000000000,"timeout_to_fail":1e3}"#),
            (1, "register", #"{"gid":"g1;\n","trans_type":"tcc","branch_id":"01","confirm":"http://x/c","cancel":"http://x/x","status":"pre;pared"}"#),
            (1, "register-nulls", #"{"gid":null,"data":null}"#),
        ]
        return bodies.map { ($0.1, [UInt8($0.0)] + Array($0.2.utf8)) }
    }

    static func json() -> [(name: String, bytes: [UInt8])] {
        [
            ("steps", #"[{"action":"a","compensate":"c"},{"action":"b","data":"x"}]"#),
            ("saga-orders", #"{"concurrent":true,"orders":{"1":[0],"2":[0,1]}}"#),
            ("saga-cycle", #"{"orders":{"0":[1],"1":[0]}}"#),
            ("msg-delay", #"{"delay":10}"#),
            ("workflow", #"{"name":"wf","data":"AAEC"}"#),
            ("options", #"{"wait_result":true,"timeout_to_fail":60,"branch_headers":{"k":"v"},"concurrent":false,"retry_limit":3}"#),
            ("escapes", #"["\u00e9\ud83d\ude00\n\"\\\/", -0.5e-3, 1E+2, true, false, null, {}]"#),
            ("duplicate-keys", #"[{"a":"1","a":"2"}]"#),
            ("deep", String(repeating: "[", count: 600) + String(repeating: "]", count: 600)),
        ].map { ($0.0, Array($0.1.utf8)) }
    }
}
