import Foundation

/// What one call result changes, per the table in spec 4.2.
public struct CallEffect: Sendable, Equatable {
    /// New status of the called branch row; nil leaves it `prepared` (retried later).
    public var branchStatus: BranchStatus?
    /// How the retry schedule moves; nil leaves it alone.
    public var cron: CronEffect?
    /// Saga action FAILURE: the text that becomes the rollback reason.
    public var rollbackReason: String?

    public init(branchStatus: BranchStatus? = nil, cron: CronEffect? = nil, rollbackReason: String? = nil) {
        self.branchStatus = branchStatus
        self.cron = cron
        self.rollbackReason = rollbackReason
    }

    /// Maps a result of `call` in a transaction of `transType`.
    ///
    /// Only a saga action treats FAILURE as final; every other branch op retries it like an
    /// error. The msg back-check's SUCCESS/FAILURE move the global status, which the msg
    /// processor decides; its ONGOING resets the interval. A workflow resume changes nothing.
    public static func of(_ result: BranchResult, call: BranchCall, transType: TransType) -> CallEffect {
        switch call.kind {
        case .workflowResume:
            return CallEffect()
        case .backCheck:
            switch result {
            case .success, .failure: return CallEffect()
            case .ongoing: return CallEffect(cron: .reset)
            case .error: return CallEffect(cron: .backoff)
            }
        case .branch:
            switch result {
            case .success:
                return CallEffect(branchStatus: .succeed, cron: .resetIfStale)
            case .failure(let message) where transType == .saga && call.op == .action:
                return CallEffect(branchStatus: .failed, cron: .resetIfStale,
                                  rollbackReason: "url:\(call.url) return failed: \(DtmText.withFailure(message))")
            case .ongoing:
                return CallEffect(cron: .keep)
            case .failure, .error:
                return CallEffect(cron: .backoff)
            }
        }
    }
}

/// DTM's wording of errors that clients may match on.
enum DtmText {
    static let failure = "FAILURE"
    static let ongoing = "ONGOING"

    /// Appends " FAILURE" unless already there, as DTM's ErrorMessage2Error does.
    static func withFailure(_ message: String) -> String {
        message.hasSuffix(" " + failure) ? message : message + " " + failure
    }

    /// DTM's text for a branch result it will retry (sic "unkown").
    static func willRetry(_ message: String) -> String {
        "your http/grpc result should be specified as in:\nhttp://d.dtm.pub/practice/arch.html#proto\n"
            + "unkown result will be retried: \(message)"
    }
}
