import DtmGRPC

/// Why an SDK call or a branch handler did not succeed.
///
/// `.failure` and `.ongoing` are DTM's two business outcomes: a branch handler throws them to tell
/// the coordinator "roll back" and "not yet, ask again later"; the SDK throws them when the
/// coordinator or a branch answered so. Every other case is an error that DTM retries.
public enum DtmClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// FAILURE: the business refused (a branch) or the transaction cannot go on (coordinator),
    /// with the reason given.
    case failure(String)
    /// ONGOING: not finished yet; the coordinator calls again after its retry interval.
    case ongoing
    /// The barrier saw this msg's local transaction already decided (DTM's DUPLICATED): the
    /// back-check ran first and chose rollback, or the transaction ran twice.
    case duplicated
    /// Any other non-OK gRPC status from the coordinator or a branch.
    case grpc(GRPCStatusCode, String)
    /// Any other non-200 HTTP answer from the coordinator or a branch, with its body.
    case http(Int, String)
    /// No answer at all: connection refused or lost, timeout, unreadable response.
    case transport(String)
    /// The call cannot be made as asked (bad URL, missing gid, a branch request without DTM's
    /// transaction information, more than 99 sub-branches); the message says what to fix.
    case invalidArgument(String)
    /// The barrier database failed (open, SQL error, constraint other than the barrier's).
    case database(String)

    public var description: String {
        switch self {
        case .failure(let reason): "FAILURE: \(reason)"
        case .ongoing: "ONGOING"
        case .duplicated: "DUPLICATED"
        case .grpc(let code, let message): "gRPC \(code): \(message)"
        case .http(let status, let body): "HTTP \(status): \(body)"
        case .transport(let message): "transport error: \(message)"
        case .invalidArgument(let message): "invalid argument: \(message)"
        case .database(let message): "barrier database: \(message)"
        }
    }

    /// DTM's meaning of a gRPC error (spec 2.4): ABORTED is FAILURE (ABORTED "ONGOING" is the
    /// pre-1.10 spelling of ONGOING), FAILED_PRECONDITION is ONGOING, the rest are errors;
    /// UNAVAILABLE and DEADLINE_EXCEEDED raised by our client (nothing answered) are transport errors.
    public init(_ error: RPCError) {
        switch error.code {
        case .aborted where error.message == "ONGOING": self = .ongoing
        case .aborted: self = .failure(error.message)
        case .failedPrecondition: self = .ongoing
        default: self = .grpc(error.code, error.message)
        }
    }

    /// DTM's meaning of an HTTP answer other than 200 (spec 4.2): 425 or a body naming ONGOING is
    /// ONGOING, 409 or a body naming FAILURE is FAILURE, any other status is an error. Nil for a
    /// plain success (200 without those words).
    public init?(httpStatus: Int, body: String) {
        if httpStatus == 425 || body.contains("ONGOING") {
            self = .ongoing
        } else if httpStatus == 409 || body.contains("FAILURE") {
            self = .failure(Self.message(fromBody: body))
        } else if httpStatus != 200 {
            self = .http(httpStatus, body)
        } else {
            return nil
        }
    }

    /// The `message` (coordinator) or `error` (DTM's busi examples) of a JSON error body, else the body.
    private static func message(fromBody body: String) -> String {
        guard let object = try? JSON.parse(body) as? [String: Any] else { return body }
        return (object["message"] as? String) ?? (object["error"] as? String) ?? body
    }

    /// Whether this is DTM's FAILURE (the transaction must roll back).
    public var isFailure: Bool {
        if case .failure = self { return true }
        return false
    }
}

/// How a branch handler's outcome is told to the coordinator: the one place that maps it to a
/// gRPC status and to an HTTP answer (spec 2.4, 4.2).
public enum BranchOutcome {
    /// gRPC: FAILURE → ABORTED, ONGOING → FAILED_PRECONDITION, anything else → its own status
    /// (an `RPCError`) or INTERNAL; the coordinator retries all but FAILURE and ONGOING.
    public static func rpcError(for error: any Error) -> RPCError {
        switch error {
        case let error as DtmClientError:
            switch error {
            case .failure(let reason): RPCError(.aborted, reason.isEmpty ? "FAILURE" : reason)
            case .ongoing: RPCError(.failedPrecondition, "ONGOING")
            case .grpc(let code, let message) where code != .aborted && code != .failedPrecondition:
                RPCError(code, message)
            default: RPCError(.internal, error.description)
            }
        case let error as RPCError where error.code != .ok:
            error
        default:
            RPCError(.internal, "\(error)")
        }
    }

    /// HTTP: success → 200 `{"dtm_result":"SUCCESS"}`, FAILURE → 409, ONGOING → 425, anything else
    /// → 500, each with DTM's JSON envelope. The message never puts the word FAILURE in a 200.
    public static func httpAnswer(for error: (any Error)?) -> (status: Int, body: String) {
        guard let error else { return (200, #"{"dtm_result":"SUCCESS"}"#) }
        switch error as? DtmClientError {
        case .failure(let reason)?:
            return (409, JSON.text(["dtm_result": "FAILURE", "message": reason]))
        case .ongoing?:
            return (425, JSON.text(["dtm_result": "ONGOING", "message": "ONGOING"]))
        default:
            return (500, JSON.text(["message": "\(error)"]))
        }
    }
}
