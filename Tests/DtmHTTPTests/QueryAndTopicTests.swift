import DtmEngine
import DtmGRPC
import DtmNet
import DtmProto
@testable import DtmServer
import DtmStore
import DtmTestSupport
import Foundation
import NIOHTTP1
import Testing

@Suite struct QueryShapeTests {
    /// `/query` answers DTM's field order and omitempty rules, base64 payloads and RFC 3339 times.
    @Test func queryShape() async throws {
        try await withCoordinator { _, api in
            let submit = try await api.post("/api/dtmsvr/submit", #"{"gid":"q1","trans_type":"saga","steps":[{"action":"http://b/a","compensate":"http://b/c"}],"payloads":["{\"amount\":30}"],"wait_result":true,"retry_interval":5,"branch_headers":{"x":"1"}}"#)
            #expect(submit.status == 200, "\(submit)")
            let text = try await api.get("/api/dtmsvr/query?gid=q1").text
            let pattern = #"^\{"branches":\[\{"id":\d+,"create_time":"[^"]+","update_time":"[^"]+","gid":"q1","url":"http://b/c","bin_data":"eyJhbW91bnQiOjMwfQ==","branch_id":"01","op":"compensate","status":"prepared"\},"#
                + #"\{"id":\d+,"create_time":"[^"]+","update_time":"[^"]+","gid":"q1","url":"http://b/a","bin_data":"eyJhbW91bnQiOjMwfQ==","branch_id":"01","op":"action","status":"succeed","finish_time":"[^"]+"\}\],"#
                + #""transaction":\{"id":1,"create_time":"[^"]+","update_time":"[^"]+","gid":"q1","trans_type":"saga","status":"succeed","protocol":"http","finish_time":"[^"]+","#
                + #""options":"\{\\"wait_result\\":true,\\"retry_interval\\":5,\\"branch_headers\\":\{\\"x\\":\\"1\\"\},\\"concurrent\\":false\}","#
                + #""next_cron_interval":5,"next_cron_time":"[^"]+","owner":"[^"]+","wait_result":true,"retry_interval":5,"branch_headers":\{"x":"1"\},"concurrent":false\}\}$"#
            #expect(text.wholeMatch(of: try Regex(pattern)) != nil, "\(text)")
            let time = try #require(try await api.query("q1").transaction["create_time"] as? String)
            #expect(time.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z/) != nil, "\(time)")
        }
    }

    @Test func rfc3339() {
        #expect(JSONText.rfc3339(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00Z")
        #expect(JSONText.rfc3339(Date(timeIntervalSince1970: 951_782_400.25)) == "2000-02-29T00:00:00.25Z")
        #expect(JSONText.rfc3339(Date(timeIntervalSince1970: -1.5)) == "1969-12-31T23:59:58.5Z")
        #expect(JSONText.rfc3339(Date(timeIntervalSince1970: 4_102_444_799.000001)) == "2099-12-31T23:59:59.000001Z")
    }

    /// `/all` pages by id descending; filters by status, type and creation time; `next_position`
    /// is "" once the end is reached.
    @Test func allPagingAndFilters() async throws {
        try await withCoordinator { _, api in
            for index in 1...5 {
                let type = index % 2 == 0 ? "tcc" : "xa"
                #expect(try await api.post("/api/dtmsvr/prepare", #"{"gid":"a\#(index)","trans_type":"\#(type)"}"#).status == 200)
            }
            _ = try await api.post("/api/dtmsvr/forceStop", #"{"gid":"a5"}"#)
            func page(_ query: String) async throws -> ([String], String) {
                let json = try await api.get("/api/dtmsvr/all?\(query)").json
                let gids = (json["transactions"] as? [[String: Any]] ?? []).compactMap { $0["gid"] as? String }
                return (gids, json["next_position"] as? String ?? "?")
            }
            let first = try await page("limit=2")
            #expect(first.0 == ["a5", "a4"])
            let second = try await page("limit=2&position=\(first.1)")
            #expect(second.0 == ["a3", "a2"])
            let last = try await page("limit=2&position=\(second.1)")
            #expect(last.0 == ["a1"] && last.1 == "")
            #expect(try await page("transType=tcc").0 == ["a4", "a2"])
            #expect(try await page("status=failed").0 == ["a5"])
            #expect(try await page("status=bogus").0 == [])
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            #expect(try await page("createTimeStart=\(now - 60_000)&createTimeEnd=\(now + 60_000)").0.count == 5)
            #expect(try await page("createTimeEnd=\(now - 60_000)").0 == [])
            let one = try await api.get("/api/dtmsvr/all?gid=a3&position=7").json
            #expect((one["transactions"] as? [[String: Any]])?.first?["gid"] as? String == "a3")
            #expect(one["next_position"] as? String == "7")
        }
    }

    /// A body over the limit is refused without being decoded, and the server keeps serving.
    @Test func oversizedBody() async throws {
        try await withCoordinator { _, api in
            let padding = String(repeating: "x", count: DtmHTTPAPI.maxBodySize)
            let answer = try await api.post("/api/dtmsvr/submit", #"{"gid":"big","trans_type":"saga","pad":"\#(padding)"}"#)
            #expect(answer.status == 413)
            #expect(answer.text == #"{"message":"request body: larger than 4194304 bytes"}"#)
            #expect(try await api.get("/api/dtmsvr/query?gid=big").text == #"{"branches":[],"transaction":null}"#)
            #expect(try await api.get("/api/ping").status == 200)
        }
    }

    /// Bad requests store nothing.
    @Test func badRequestsStoreNothing() async throws {
        try await withCoordinator { _, api in
            let bodies = [
                #"{"gid":"n1","trans_type":"saga","steps":[{"action":"a","compensate":"c"}]}"#,
                #"{"gid":"n1","trans_type":"saga","steps":[{"action":"a"}],"payloads":["x"],"custom_data":"{\"orders\":{\"0\":[0]},\"concurrent\":true}"}"#,
                #"{"gid":"n1","trans_type":"msg","steps":[{"action":"topic://none"}],"payloads":["x"]}"#,
                #"{"gid":"n1","trans_type":"saga","timeout_to_fail":-1}"#,
                #"{"gid":"n1","trans_type":"saga","protocol":"smtp"}"#,
            ]
            for body in bodies {
                let answer = try await api.post("/api/dtmsvr/submit", body)
                #expect(answer.status == 400, "\(body): \(answer)")
            }
            #expect(try await api.get("/api/dtmsvr/all").text == #"{"next_position":"","transactions":[]}"#)
        }
    }

    /// resetCronTime pulls far-away retries forward; resetNextCronTime one transaction.
    @Test func cronResets() async throws {
        try await withCoordinator { _, api in
            #expect(try await api.post("/api/dtmsvr/prepare", #"{"gid":"c1","trans_type":"tcc","retry_interval":3600}"#).status == 200)
            #expect(try await api.post("/api/dtmsvr/prepare", #"{"gid":"c2","trans_type":"tcc","retry_interval":3600}"#).status == 200)
            let answer = try await api.get("/api/dtmsvr/resetCronTime?timeout=60&limit=1").json
            #expect(answer["succeed_count"] as? Int == 1 && answer["has_remaining"] as? Bool == true, "\(answer)")
            let rest = try await api.get("/api/dtmsvr/resetCronTime?timeout=60").json
            #expect(rest["succeed_count"] as? Int == 1 && rest["has_remaining"] as? Bool == false, "\(rest)")
            #expect(try await api.post("/api/dtmsvr/resetNextCronTime", #"{"gid":"c1"}"#).status == 200)
            let next = try #require(try await api.query("c1").transaction["next_cron_time"] as? String)
            #expect(next <= JSONText.rfc3339(Date().addingTimeInterval(60)))
        }
    }
}

@Suite struct TopicTests {
    /// A msg step addressed to a topic goes to every subscriber, with DTM's branch ids.
    @Test func msgFansOutToSubscribers() async throws {
        try await withStarted(await TestBusi()) { busi in try await withCoordinator(caller: nil) { _, api in
            for path in ["/one", "/two"] {
                let url = busi.url(path).addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
                #expect(try await api.get("/api/dtmsvr/subscribe?topic=orders&url=\(url)&remark=r").status == 200)
            }
            let kv = try await api.get("/api/dtmsvr/queryKV?cat=topics&key=orders").json["kv"] as? [[String: Any]]
            #expect(kv?.first?["version"] as? Int == 2)
            #expect(kv?.first?["v"] as? String == #"[{"url":"\#(busi.url("/one"))","remark":"r"},{"url":"\#(busi.url("/two"))","remark":"r"}]"#)
            let submit = try await api.post("/api/dtmsvr/submit", #"{"gid":"m1","trans_type":"msg","steps":[{"action":"topic://orders"}],"payloads":["{\"n\":1}"],"wait_result":true}"#)
            #expect(submit.status == 200, "\(submit)")
            let (global, branches) = try await api.query("m1")
            #expect(global["status"] as? String == "succeed")
            #expect(branches.map { $0["branch_id"] as? String } == ["01-01", "01-02"])
            for path in ["/one", "/two"] {
                let calls = await busi.requests(path)
                #expect(calls.count == 1 && calls.first?.query["branch_id"]?.hasPrefix("01-") == true)
                #expect(calls.first.map { String(decoding: $0.body, as: UTF8.self) } == #"{"n":1}"#)
            }
            #expect(try await api.get("/api/dtmsvr/unsubscribe?topic=orders&url=\(busi.url("/one"))").status == 200)
            let after = try await api.get("/api/dtmsvr/queryKV?cat=topics&key=orders").json["kv"] as? [[String: Any]]
            #expect(after?.first?["version"] as? Int == 3)
        } }
    }

    /// Concurrent subscribers all land (optimistic versions, re-read on conflict); the version
    /// counts every change, as DTM's TestConcurrentUpdateTopic expects.
    @Test func concurrentSubscribers() async throws {
        try await withStarted(await SQLiteStoreForTests.open()) { database in try await withCoordinator(store: database.store) { _, api in
            let codes = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<20 {
                    group.addTask { try await api.get("/api/dtmsvr/subscribe?topic=c&url=http://b/\(index)").status }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(codes.allSatisfy { $0 == 200 }, "\(codes)")
            for index in 0..<20 {
                #expect(try await api.get("/api/dtmsvr/unsubscribe?topic=c&url=http://b/\(index)").status == 200)
            }
            let kv = try await api.get("/api/dtmsvr/queryKV?cat=topics&key=c").json["kv"] as? [[String: Any]]
            #expect(kv?.first?["version"] as? Int == 40)
            #expect(kv?.first?["v"] as? String == "[]")
            let scan = try await api.get("/api/dtmsvr/scanKV?cat=topics&limit=1").json
            #expect(scan["next_position"] as? String == "1", "a full page points at the next one")
        } }
    }

    /// The gRPC Subscribe / Unsubscribe / DeleteTopic methods share the topic code.
    @Test func grpcTopics() async throws {
        try await withCoordinator { coordinator, api in try await withGRPCClient(coordinator) { client, target in
            func call(_ method: String, _ topic: String, _ url: String) async -> RPCError? {
                do {
                    _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/\(method)",
                                               message: DtmTopicRequest(topic: topic, url: url, remark: "g").encode(),
                                               timeout: .seconds(30))
                    return nil
                } catch {
                    return error
                }
            }
            #expect(await call("Subscribe", "g", "http://b/1") == nil)
            let duplicate = await call("Subscribe", "g", "http://b/1")
            #expect(duplicate?.code == .aborted && duplicate?.message == "this url exists", "\(String(describing: duplicate))")
            #expect(await call("Subscribe", "", "http://b/1")?.code == .invalidArgument)
            let kv = try await api.get("/api/dtmsvr/queryKV?cat=topics&key=g").json["kv"] as? [[String: Any]]
            #expect(kv?.first?["v"] as? String == #"[{"url":"http://b/1","remark":"g"}]"#)
            let missing = await call("Unsubscribe", "g", "http://b/2")
            #expect(missing?.code == .notFound && missing?.message == "no such an url ", "\(String(describing: missing))")
            #expect(await call("Unsubscribe", "g", "http://b/1") == nil)
            #expect(await call("DeleteTopic", "g", "") == nil)
            #expect(await call("DeleteTopic", "g", "")?.code == .notFound)
        } }
    }
}

@Suite struct CrossProtocolTests {
    /// One transaction, two protocols: prepared over HTTP, submitted over gRPC, queried over HTTP.
    @Test func prepareOverHTTPSubmitOverGRPC() async throws {
        try await withStarted(await TestBusi()) { busi in try await withCoordinator(caller: nil) { coordinator, api in
            let prepare = try await api.post("/api/dtmsvr/prepare", #"{"gid":"x1","trans_type":"msg","steps":[{"action":"\#(busi.url("/in"))"}],"payloads":["{\"amount\":7}"],"query_prepared":"\#(busi.url("/qp"))"}"#)
            #expect(prepare.status == 200, "\(prepare)")
            #expect(try await api.status("x1") == "prepared")

            let request = DtmRequest(gid: "x1", transType: "msg", transOptions: DtmTransOptions(waitResult: true))
            _ = try await withGRPCClient(coordinator) { client, target in
                try await client.unary(target: target, path: "/dtmgimp.Dtm/Submit", message: request.encode(),
                                       timeout: .seconds(30))
            }

            let (global, branches) = try await api.query("x1")
            #expect(global["status"] as? String == "succeed")
            #expect(global["protocol"] as? String == "http", "the protocol of the prepare stays")
            #expect(branches.map { $0["status"] as? String } == ["succeed"])
            let calls = await busi.requests("/in")
            #expect(calls.count == 1 && calls.first?.method == "POST")
            #expect(calls.first.map { String(decoding: $0.body, as: UTF8.self) } == #"{"amount":7}"#)
            #expect(calls.first?.query["gid"] == "x1" && calls.first?.query["op"] == "action")
        } }
    }

    /// And the other way: a tcc prepared over gRPC, its branch registered and submitted over HTTP.
    @Test func prepareOverGRPCSubmitOverHTTP() async throws {
        try await withCoordinator { coordinator, api in
            _ = try await withGRPCClient(coordinator) { client, target in
                try await client.unary(target: target, path: "/dtmgimp.Dtm/Prepare",
                                       message: DtmRequest(gid: "x2", transType: "tcc").encode(), timeout: .seconds(30))
            }
            let register = try await api.post("/api/dtmsvr/registerBranch", #"{"gid":"x2","branch_id":"01","trans_type":"tcc","data":"{}","confirm":"http://b/c","cancel":"http://b/k"}"#)
            #expect(register.status == 200, "\(register)")
            #expect(try await api.post("/api/dtmsvr/submit", #"{"gid":"x2","trans_type":"tcc","wait_result":true}"#).status == 200)
            let (global, branches) = try await api.query("x2")
            #expect(global["status"] as? String == "succeed" && global["protocol"] as? String == "grpc")
            #expect(branches.map { $0["status"] as? String } == ["prepared", "succeed"])
        }
    }

    /// Second counts that would overflow stored dates are refused over gRPC as well.
    @Test func grpcRefusesHugeIntervals() async throws {
        try await withCoordinator { coordinator, _ in try await withGRPCClient(coordinator) { client, target in
            let request = DtmRequest(gid: "h1", transType: "tcc", transOptions: DtmTransOptions(retryInterval: .max))
            do throws(RPCError) {
                _ = try await client.unary(target: target, path: "/dtmgimp.Dtm/Prepare",
                                           message: request.encode(), timeout: .seconds(30))
                #expect(Bool(false), "accepted")
            } catch {
                #expect(error.code == .invalidArgument && error.message.hasPrefix("retry_interval:"), "\(error)")
            }
        } }
    }
}
