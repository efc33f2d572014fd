internal import CProtobufC

/// Owns the C memory behind a protobuf-c message being packed or unpacked: strings, bytes,
/// nested structs and pointer arrays. Small pieces are cut from a few larger blocks (a bump
/// allocator), so a message costs a malloc or two instead of one per field; everything is
/// freed in one place, `deinit`, once the pack call is done or the unpacked message copied.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []
    /// Free space left in the newest block.
    private var next: UnsafeMutableRawPointer?
    private var remaining = 0
    /// malloc's alignment: protobuf-c stores any C type in what its allocator returns.
    private static let alignment = 16
    private static let blockSize = 4096

    private init() {}

    deinit {
        for block in blocks { block.deallocate() }
    }

    /// Runs `body` with a fresh arena that stays alive until `body` returns.
    static func scoped<R>(_ body: (CArena) -> R) -> R {
        let arena = CArena()
        return withExtendedLifetime(arena) { body(arena) }
    }

    /// `byteCount` bytes aligned for any C type, valid until the arena is freed.
    func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        let size = (max(byteCount, 1) + Self.alignment - 1) & ~(Self.alignment - 1)
        if size <= remaining, let pointer = next {
            next = pointer + size
            remaining -= size
            return pointer
        }
        if size > Self.blockSize / 4 {
            // Large pieces get a block of their own; the current block keeps its free space.
            let block = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: Self.alignment)
            blocks.append(block)
            return block
        }
        let block = UnsafeMutableRawPointer.allocate(byteCount: Self.blockSize, alignment: Self.alignment)
        blocks.append(block)
        next = block + size
        remaining = Self.blockSize - size
        return block
    }

    private func allocate<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        precondition(MemoryLayout<T>.alignment <= Self.alignment)
        let count = max(count, 1)
        return allocate(byteCount: MemoryLayout<T>.stride * count).bindMemory(to: T.self, capacity: count)
    }

    /// A protobuf-c allocator drawing from this arena (`free` does nothing: the arena frees
    /// all at once). Valid while the arena is alive.
    var allocator: ProtobufCAllocator {
        ProtobufCAllocator(
            alloc: { data, size in
                guard let data else { return nil }
                return Unmanaged<CArena>.fromOpaque(data).takeUnretainedValue().allocate(byteCount: size)
            },
            free: { _, _ in },
            allocator_data: Unmanaged.passUnretained(self).toOpaque())
    }

    /// A NUL-terminated copy of `string` (protobuf-c has no string length field).
    func string(_ string: String) -> UnsafeMutablePointer<CChar> {
        var string = string
        return string.withUTF8 { utf8 in
            let pointer = allocate(CChar.self, count: utf8.count + 1)
            UnsafeMutableRawBufferPointer(start: pointer, count: utf8.count)
                .copyMemory(from: UnsafeRawBufferPointer(utf8))
            pointer[utf8.count] = 0
            return pointer
        }
    }

    /// A `bytes` field value pointing at a copy of `bytes`.
    func binary(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        let pointer = allocate(UInt8.self, count: bytes.count)
        _ = UnsafeMutableBufferPointer(start: pointer, count: bytes.count).initialize(fromContentsOf: bytes)
        return ProtobufCBinaryData(len: bytes.count, data: pointer)
    }

    /// A C array of `transform(element)`, as the `(n_<field>, <field>)` pair of a repeated field.
    func array<Element, T>(
        _ elements: some Collection<Element>, _ transform: (Element) -> T
    ) -> (Int, UnsafeMutablePointer<T>?) {
        guard !elements.isEmpty else { return (0, nil) }
        let pointer = allocate(T.self, count: elements.count)
        for (index, element) in elements.enumerated() {
            (pointer + index).initialize(to: transform(element))
        }
        return (elements.count, pointer)
    }

    /// `repeated bytes`.
    func binaries(_ elements: [[UInt8]]) -> (Int, UnsafeMutablePointer<ProtobufCBinaryData>?) {
        array(elements, binary)
    }

    /// A C struct set up by `initialize` (a generated `..._init`), then filled by `fill`.
    private func cStruct<C>(
        _ initialize: (UnsafeMutablePointer<C>?) -> Void, fill: (inout C) -> Void
    ) -> UnsafeMutablePointer<C> {
        let pointer = allocate(C.self, count: 1)
        initialize(pointer)
        fill(&pointer.pointee)
        return pointer
    }

    /// An embedded message.
    func message<M: CBackedMessage>(_ message: M) -> UnsafeMutablePointer<M.C> {
        cStruct(M.codec.initialize) { message.fill(&$0, arena: self) }
    }

    /// `repeated M`.
    func messages<M: CBackedMessage>(_ messages: [M]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<M.C>?>?) {
        array(messages) { Optional(message($0)) }
    }

    /// `map<string, string>`: entries in key order so that encoding is deterministic.
    func map<Entry: CMapEntry>(_ map: [String: String]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Entry>?>?) {
        array(map.sorted { $0.key < $1.key }) { pair in
            Optional(cStruct(Entry.initialize) { entry in
                entry.key = string(pair.key)
                entry.value = string(pair.value)
            })
        }
    }
}

/// A generated `map<string, string>` entry struct.
protocol CMapEntry {
    /// The generated `..._entry__init`.
    static func initialize(_ entry: UnsafeMutablePointer<Self>?)
    var key: UnsafeMutablePointer<CChar>! { get set }
    var value: UnsafeMutablePointer<CChar>! { get set }
}
