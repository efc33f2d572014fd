internal import DtmProtoC

/// `google.protobuf.Empty`: no fields; encodes to no bytes.
public struct Empty: ProtoMessage {
    public init() {}
}

extension Empty: CBackedMessage {
    static let codec = CCodec(
        google__protobuf__empty__descriptor, google__protobuf__empty__init,
        google__protobuf__empty__get_packed_size, google__protobuf__empty__pack,
        google__protobuf__empty__unpack, google__protobuf__empty__free_unpacked)

    init(copying _: Google__Protobuf__Empty) {}

    func fill(_: inout Google__Protobuf__Empty, arena _: CArena) {}
}
