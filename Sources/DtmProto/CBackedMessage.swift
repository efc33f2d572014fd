internal import CProtobufC

/// The generated protobuf-c functions of one message type `C`.
struct CCodec<C>: Sendable {
    let initialize: @Sendable (UnsafeMutablePointer<C>?) -> Void
    let packedSize: @Sendable (UnsafePointer<C>?) -> Int
    let pack: @Sendable (UnsafePointer<C>?, UnsafeMutablePointer<UInt8>?) -> Int
    let unpack: @Sendable (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?)
        -> UnsafeMutablePointer<C>?
    let freeUnpacked: @Sendable (UnsafeMutablePointer<C>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void
    /// The full protobuf name, read from the generated descriptor.
    let name: String
    /// A copy of the generated descriptor (its pointers lead to static data).
    let descriptor: Descriptor

    struct Descriptor: @unchecked Sendable {
        let c: ProtobufCMessageDescriptor
    }

    init(
        _ descriptor: ProtobufCMessageDescriptor,
        _ initialize: @escaping @Sendable (UnsafeMutablePointer<C>?) -> Void,
        _ packedSize: @escaping @Sendable (UnsafePointer<C>?) -> Int,
        _ pack: @escaping @Sendable (UnsafePointer<C>?, UnsafeMutablePointer<UInt8>?) -> Int,
        _ unpack: @escaping @Sendable (UnsafeMutablePointer<ProtobufCAllocator>?, Int, UnsafePointer<UInt8>?)
            -> UnsafeMutablePointer<C>?,
        _ freeUnpacked: @escaping @Sendable (UnsafeMutablePointer<C>?, UnsafeMutablePointer<ProtobufCAllocator>?) -> Void
    ) {
        self.initialize = initialize
        self.packedSize = packedSize
        self.pack = pack
        self.unpack = unpack
        self.freeUnpacked = freeUnpacked
        self.name = descriptor.name.map { String(cString: $0) } ?? "\(C.self)"
        self.descriptor = Descriptor(c: descriptor)
    }
}

/// A value type backed by a generated protobuf-c message struct `C`: each message only says how
/// to copy its fields out of `C` and how to fill `C`; packing, unpacking and freeing live here.
protocol CBackedMessage: ProtoMessage {
    associatedtype C
    static var codec: CCodec<C> { get }
    /// Copies every field out of an unpacked message; `c` is freed right after.
    init(copying c: C)
    /// Fills a message that was set up by `codec.initialize`; memory comes from `arena`.
    func fill(_ c: inout C, arena: CArena)
}

extension CBackedMessage {
    public static var protoName: String { codec.name }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(ProtoError) {
        let data = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        // The unpacked message lives in an arena (a malloc or two, not one per field) that is
        // freed as a whole once its fields are copied out: the arena's deinit is the one free.
        let result = CArena.scoped { arena -> Result<Self, ProtoError> in
            var allocator = arena.allocator
            guard let message = Self.codec.unpack(&allocator, bytes.count, data) else {
                return .failure(.malformed(message: Self.protoName, byteCount: bytes.count))
            }
            let invalid = withUnsafePointer(to: Self.codec.descriptor.c) { descriptor in
                StringFieldCheck.firstInvalid(in: bytes, descriptor: descriptor)
            }
            if let invalid {
                return .failure(.invalidString(message: Self.protoName, field: invalid.field, reason: invalid.reason))
            }
            return .success(Self(copying: message.pointee))
        }
        self = try result.get()
    }

    public func encode() -> [UInt8] {
        CArena.scoped { arena in
            let message = arena.message(self)
            let size = Self.codec.packedSize(message)
            guard size > 0 else { return [] }
            return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                count = Self.codec.pack(message, buffer.baseAddress)
                precondition(count == size, "protobuf-c packed \(count) of \(size) bytes of \(Self.protoName)")
            }
        }
    }
}
