import DtmEngine
import DtmGRPC
import Testing
@testable import DtmServer

@Suite struct BranchCallerTests {
    @Test(arguments: [
        ("localhost:58081/busi.Busi/TransOut", "localhost:58081", "/busi.Busi/TransOut", false),
        ("10.0.0.1:9/a.b.C/D", "10.0.0.1:9", "/a.b.C/D", false),
        ("grpcs://localhost:58081/busi.Busi/TransOut", "localhost:58081", "/busi.Busi/TransOut", true),
        ("GRPCS://[::1]:443/a.b.C/D", "[::1]:443", "/a.b.C/D", true),
    ])
    func grpcURLsSplitIntoTargetAndPath(url: String, target: String, path: String, tls: Bool) throws {
        let split = try #require(GRPCBranchCaller.split(url))
        #expect(split.target == target)
        #expect(split.path == path)
        #expect(split.tls == tls)
    }

    @Test(arguments: ["localhost:58081", "/busi.Busi/TransOut", "etcd://x/busi.Busi/TransOut",
                      "h:1/busi.Busi", "h:1/a/b/c", "", "grpcs://", "grpcs://h/a.b/C", "grpc://h:1/a.b/C",
                      "grpcs://grpcs://h:1/a.b/C"])
    func badGRPCURLsAreRefused(url: String) {
        #expect(GRPCBranchCaller.split(url) == nil)
    }

    @Test func grpcStatusesMapAsDTMReadsThem() {
        #expect(GRPCBranchCaller.result(of: RPCError(.aborted, "reason:no money"))
            == .failure(message: "rpc error: code = Aborted desc = reason:no money"))
        #expect(GRPCBranchCaller.result(of: RPCError(.aborted, "ONGOING")) == .ongoing)
        #expect(GRPCBranchCaller.result(of: RPCError(.failedPrecondition, "later")) == .ongoing)
        #expect(GRPCBranchCaller.result(of: RPCError(.unavailable, "down"))
            == .error(message: "rpc error: code = Unavailable desc = down"))
        #expect(GRPCBranchCaller.result(of: RPCError(.deadlineExceeded, "slow"))
            == .error(message: "rpc error: code = DeadlineExceeded desc = slow"))
    }

    @Test(arguments: [
        (200, #"{"dtm_result":"SUCCESS"}"#, BranchResult.success),
        (200, "", .success),
        (425, "", .ongoing),
        (200, #"{"dtm_result":"ONGOING"}"#, .ongoing),
        (409, #"{"error":"no money"}"#, .failure(message: #"{"error":"no money"}"#)),
        (200, #"{"dtm_result":"FAILURE"}"#, .failure(message: #"{"dtm_result":"FAILURE"}"#)),
        (500, "boom", .error(message: "HTTP 500: boom")),
        (404, "", .error(message: "HTTP 404: ")),
    ])
    func httpAnswersMapAsDTMReadsThem(status: Int, body: String, expected: BranchResult) {
        #expect(HTTPBranchCaller.result(status: status, body: body) == expected)
    }
}

/// Issue 8, item 10: HTTP branch calls as DTM's client (resty) makes them.
@Suite struct HTTPBranchRequestTests {
    static let global = GlobalTransaction(gid: "a+b c&d=é", transType: .saga, status: .submitted, createTime: .now)

    @Test func queryParametersAreEscapedAsGoEscapesThem() throws {
        let call = BranchCall(branchID: "01", op: .action, url: "http://busi:8081/api/TransIn", requestTimeout: 3)
        #expect(HTTPBranchCaller.url(for: call, of: Self.global)
                == "http://busi:8081/api/TransIn?branch_id=01&gid=a%2Bb+c%26d%3D%C3%A9&op=action&trans_type=saga")
        let withQuery = BranchCall(branchID: "01", op: .compensate, url: "https://busi/x?y=1%2B1#frag", requestTimeout: 3)
        #expect(HTTPBranchCaller.url(for: withQuery, of: Self.global)
                == "https://busi/x?y=1%2B1&branch_id=01&gid=a%2Bb+c%26d%3D%C3%A9&op=compensate&trans_type=saga#frag")
    }

    @Test func branchHeadersReplaceOursCaseInsensitively() {
        let headers = HTTPBranchCaller.headers(["content-type": "application/x-protobuf", "X-Trace": "t1"])
        #expect(headers["Content-Type"] == ["application/x-protobuf"])
        #expect(headers["x-trace"] == ["t1"])
        #expect(HTTPBranchCaller.headers([:])["Content-Type"] == ["application/json"])
    }
}
