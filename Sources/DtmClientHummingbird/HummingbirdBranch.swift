import DtmClient
import Hummingbird
import NIOCore

extension Router {
    /// Serves `path` as a DTM branch over HTTP: the handler gets the transaction information from
    /// the query (`gid`, `trans_type`, `branch_id`, `op`) and the body; success answers 200
    /// `{"dtm_result":"SUCCESS"}` (or the bytes the handler returns), `.failure` 409, `.ongoing`
    /// 425, anything else 500 — what DTM expects (spec 4.2). DTM calls with POST when there is a
    /// payload and GET when there is none, so both are served.
    @discardableResult
    public func dtmBranch(_ path: RouterPath, maxBodySize: Int = 4 << 20,
                          _ handler: @escaping @Sendable (BranchRequest) async throws -> [UInt8]?) -> Self {
        let respond: @Sendable (Request, Context) async throws -> Response = { request, _ in
            var query: [String: String] = [:]
            for (key, value) in request.uri.queryParameters { query[String(key)] = String(value) }
            let body = Array(buffer: try await request.body.collect(upTo: maxBodySize))
            let answer: (status: Int, body: [UInt8])
            do {
                let branch = BranchRequest(info: try TransInfo(query: query), body: body, query: query)
                if let output = try await handler(branch) {
                    answer = (200, output)
                } else {
                    answer = (200, Array(BranchOutcome.httpAnswer(for: nil).body.utf8))
                }
            } catch {
                let (status, text) = BranchOutcome.httpAnswer(for: error)
                answer = (status, Array(text.utf8))
            }
            return Response(status: .init(code: answer.status), headers: [.contentType: "application/json"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        on(path, method: .post, use: respond)
        on(path, method: .get, use: respond)
        return self
    }
}
