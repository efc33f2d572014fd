internal import DtmProtoC

// The message of `proto/workflow.proto`, the callback a workflow client serves.

/// `workflow.WorkflowData`: the argument of Execute, which resumes an unfinished workflow.
public struct WorkflowData: ProtoMessage {
    public var data: [UInt8]

    public init(data: [UInt8] = []) {
        self.data = data
    }
}

extension WorkflowData: CBackedMessage {
    static let codec = CCodec(
        workflow__workflow_data__descriptor, workflow__workflow_data__init,
        workflow__workflow_data__get_packed_size, workflow__workflow_data__pack,
        workflow__workflow_data__unpack, workflow__workflow_data__free_unpacked)

    init(copying c: Workflow__WorkflowData) {
        self.init(data: .init(copying: c.data))
    }

    func fill(_ c: inout Workflow__WorkflowData, arena: CArena) {
        c.data = arena.binary(data)
    }
}
