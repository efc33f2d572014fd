import Foundation

/// Server-generated branch ids: "01", "02", … (three digits past 99, as Go's %02d).
func stepBranchID(_ number: Int) -> String {
    number < 10 ? "0\(number)" : "\(number)"
}

extension Coordinator {
    /// Saga: compensate then action row per step, ids "01"…; msg: one action row per URL,
    /// a topic expanded to its subscribers ("01-01", "01-02", … when more than one).
    func generateBranches(_ checked: CheckedRequest, now: Date) async throws(DtmError) -> [BranchRecord] {
        let gid = checked.request.gid
        func row(_ id: String, _ op: BranchOp, _ url: String, _ step: Int) -> BranchRecord {
            BranchRecord(gid: gid, url: url, binData: checked.payloads[step], branchID: id, op: op, createTime: now)
        }
        var rows = [BranchRecord]()
        switch checked.transType {
        case .saga:
            for (index, step) in checked.request.steps.enumerated() {
                let id = stepBranchID(index + 1)
                rows.append(row(id, .compensate, step["compensate"] ?? "", index))
                rows.append(row(id, .action, step["action"] ?? "", index))
            }
        case .msg:
            for (index, step) in checked.request.steps.enumerated() {
                let action = step["action"] ?? ""
                let urls = try await msgURLs(action, step: index)
                for (fanout, url) in urls.enumerated() {
                    let id = stepBranchID(index + 1) + (urls.count == 1 ? "" : "-" + stepBranchID(fanout + 1))
                    rows.append(row(id, .action, url, index))
                }
            }
        case .tcc, .xa, .workflow:
            break
        }
        return rows
    }

    private func msgURLs(_ action: String, step: Int) async throws(DtmError) -> [String] {
        guard action.hasPrefix(msgTopicPrefix) else { return [action] }
        let topic = String(action.dropFirst(msgTopicPrefix.count))
        let urls = try await resolveTopic(topic)
        if urls.isEmpty { throw DtmError.invalidArgument("steps[\(step)].action: topic not found: '\(topic)'") }
        for url in urls {
            try Validation.url(url, field: "steps[\(step)].action (topic '\(topic)' subscriber)", transProtocol: .grpc,
                               limits: driver.config.limits)
        }
        return urls
    }

    /// The rows a registerBranch inserts (spec 3.7).
    static func branchRows(_ registration: BranchRegistration, limits: RequestLimits,
                           now: Date) throws(DtmError) -> [BranchRecord] {
        try Validation.gid(registration.gid)
        try Validation.identifier(registration.branchID, field: "branch_id", max: maxGidLength)
        let data = registration.data
        // The global's protocol is not known here: either URL form is accepted and the
        // caller picks the transport from the URL.
        for key in ["cancel", "confirm", "url"] {
            try Validation.url(data[key] ?? "", field: "data.\(key)", transProtocol: .grpc, limits: limits)
        }
        func row(_ op: BranchOp, _ url: String, _ status: BranchStatus = .prepared) -> BranchRecord {
            BranchRecord(gid: registration.gid, url: url, binData: registration.binData,
                         branchID: registration.branchID, op: op, status: status, createTime: now)
        }
        switch TransType(rawValue: registration.transType) {
        case .tcc:
            return [row(.cancel, data["cancel"] ?? ""), row(.confirm, data["confirm"] ?? "")]
        case .xa:
            return [row(.rollback, data["url"] ?? ""), row(.commit, data["url"] ?? "")]
        case .workflow:
            let op = data["op"] ?? ""
            if op.isEmpty { throw DtmError.invalidArgument("data.op: must not be empty for a workflow branch") }
            try Validation.identifier(op, field: "data.op", max: maxGidLength)
            let text = data["status"] ?? ""
            guard let status = BranchStatus(rawValue: text) else {
                throw DtmError.invalidArgument("data.status: must be 'succeed', 'failed' or 'prepared', got '\(text)'")
            }
            return [row(BranchOp(op), "", status)]
        default:
            // DTM's text (sic); it answers 500, we answer 400.
            throw DtmError.invalidArgument("unknow trans type: \(registration.transType)")
        }
    }
}
