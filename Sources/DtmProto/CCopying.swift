internal import CProtobufC

// Copies out of an unpacked protobuf-c message, which is freed right after: nothing here may keep
// a pointer into it.

extension String {
    /// A copy of a C string field; invalid UTF-8 is repaired, a NULL pointer reads as "".
    init(copying cString: UnsafePointer<CChar>?) {
        self = cString.map { String(cString: $0) } ?? ""
    }
}

extension Array where Element == UInt8 {
    /// A copy of a `bytes` field.
    init(copying binary: ProtobufCBinaryData) {
        self = binary.data.map { Array(UnsafeBufferPointer(start: $0, count: binary.len)) } ?? []
    }
}

extension Array where Element == [UInt8] {
    /// A copy of a `repeated bytes` field.
    init(copying elements: UnsafePointer<ProtobufCBinaryData>?, count: Int) {
        self = copyArray(elements, count) { [UInt8](copying: $0) }
    }
}

extension Array where Element: CBackedMessage {
    /// A copy of a `repeated` message field.
    init(copying elements: UnsafePointer<UnsafeMutablePointer<Element.C>?>?, count: Int) {
        self = copyArray(elements, count) { $0.map { Element(copying: $0.pointee) } }.compactMap { $0 }
    }
}

extension Dictionary where Key == String, Value == String {
    /// A copy of a `map<string, string>` field; of repeated keys the last wins, as in protobuf.
    init<Entry: CMapEntry>(copying entries: UnsafePointer<UnsafeMutablePointer<Entry>?>?, count: Int) {
        let pairs = copyArray(entries, count) { entry in
            entry.map { (String(copying: $0.pointee.key), String(copying: $0.pointee.value)) }
        }
        self.init(pairs.compactMap { $0 }, uniquingKeysWith: { $1 })
    }
}

extension CBackedMessage {
    /// A copy of an embedded message field; NULL means absent.
    static func optional(copying message: UnsafePointer<C>?) -> Self? {
        message.map { Self(copying: $0.pointee) }
    }
}

/// `transform` of each of the `count` C array elements at `elements`.
private func copyArray<C, T>(_ elements: UnsafePointer<C>?, _ count: Int, _ transform: (C) -> T) -> [T] {
    guard let elements, count > 0 else { return [] }
    return UnsafeBufferPointer(start: elements, count: count).map(transform)
}
