internal import DtmProtoC

/// The `google.protobuf.FileDescriptorProto`s of proto/*.proto and of every file they import,
/// serialized by protoc at gen time (tools/gen-proto) and embedded in the binary; indexed by
/// file name and by the fully-qualified symbols each file declares. Serves gRPC reflection.
public struct ProtoFiles: Sendable {
    public struct File: Sendable, Equatable {
        /// The name other files import it by, e.g. `dtmgimp.proto`, `google/protobuf/empty.proto`.
        public var name: String
        public var package: String
        /// Names of the files it imports.
        public var dependencies: [String]
        /// Service names, fully qualified.
        public var services: [String]
        /// The serialized FileDescriptorProto.
        public var bytes: [UInt8]
    }

    public let files: [File]
    private let byName: [String: Int]
    private let bySymbol: [String: Int]

    /// Parses a serialized `google.protobuf.FileDescriptorSet`.
    public init(descriptorSet: [UInt8]) throws(ProtoError) {
        var files: [File] = []
        var symbols: [String: Int] = [:]
        try descriptorSet.withUnsafeBytes { set in
            Result { () throws(ProtoError) in
                try Self.lengthDelimited(set) { field, fileBytes throws(ProtoError) in
                    guard field == 1 else { return }
                    var file = File(name: "", package: "", dependencies: [], services: [], bytes: Array(fileBytes))
                    var declared: [String] = []
                    try Self.readFile(fileBytes, into: &file, symbols: &declared)
                    for symbol in declared { symbols[symbol] = files.count }
                    files.append(file)
                }
            }
        }.get()
        self.files = files
        self.byName = Dictionary(files.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.bySymbol = symbols
    }

    /// The files embedded at gen time.
    public static let embedded: ProtoFiles = {
        let bytes = Array(UnsafeBufferPointer(start: dtm_descriptor_set, count: Int(dtm_descriptor_set_size)))
        // The set is protoc's output, checked by tools/check-generated and by a test; an
        // unreadable one would leave reflection empty rather than stop the server.
        return (try? ProtoFiles(descriptorSet: bytes)) ?? ProtoFiles.empty
    }()

    static let empty = ProtoFiles()

    private init() {
        files = []
        byName = [:]
        bySymbol = [:]
    }

    public func file(named name: String) -> File? {
        byName[name].map { files[$0] }
    }

    /// The file declaring a message, enum, service or method (`package.Service.Method`).
    public func file(containingSymbol symbol: String) -> File? {
        let trimmed = symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol
        return bySymbol[trimmed].map { files[$0] }
    }

    /// `file` first, then every file it imports, directly or not, each once.
    public func withDependencies(_ file: File) -> [File] {
        var seen: Set<String> = [file.name]
        var out = [file]
        var index = 0
        while index < out.count {
            for name in out[index].dependencies where !seen.contains(name) {
                seen.insert(name)
                if let dependency = self.file(named: name) { out.append(dependency) }
            }
            index += 1
        }
        return out
    }

    // MARK: - descriptor.proto, just the fields reflection needs

    private static func readFile(_ bytes: UnsafeRawBufferPointer, into file: inout File,
                                 symbols: inout [String]) throws(ProtoError) {
        var types: [UnsafeRawBufferPointer] = []
        var enums: [UnsafeRawBufferPointer] = []
        var services: [UnsafeRawBufferPointer] = []
        try lengthDelimited(bytes) { field, payload throws(ProtoError) in
            switch field {
            case 1: file.name = String(decoding: payload, as: UTF8.self)
            case 2: file.package = String(decoding: payload, as: UTF8.self)
            case 3: file.dependencies.append(String(decoding: payload, as: UTF8.self))
            case 4: types.append(payload)
            case 5: enums.append(payload)
            case 6: services.append(payload)
            default: break
            }
        }
        let prefix = file.package.isEmpty ? "" : file.package + "."
        for type in types { try readMessage(type, prefix: prefix, symbols: &symbols) }
        for type in enums { symbols.append(prefix + (try name(of: type))) }
        for service in services {
            let serviceName = prefix + (try name(of: service))
            symbols.append(serviceName)
            file.services.append(serviceName)
            try lengthDelimited(service) { field, method throws(ProtoError) in
                if field == 2 { symbols.append(serviceName + "." + (try name(of: method))) }
            }
        }
    }

    /// A DescriptorProto: the message, its nested messages and enums.
    private static func readMessage(_ bytes: UnsafeRawBufferPointer, prefix: String,
                                    symbols: inout [String]) throws(ProtoError) {
        let fullName = prefix + (try name(of: bytes))
        symbols.append(fullName)
        try lengthDelimited(bytes) { field, nested throws(ProtoError) in
            if field == 3 { try readMessage(nested, prefix: fullName + ".", symbols: &symbols) }
            if field == 4 { symbols.append(fullName + "." + (try name(of: nested))) }
        }
    }

    /// Field 1 (`name`) of a descriptor message.
    private static func name(of bytes: UnsafeRawBufferPointer) throws(ProtoError) -> String {
        var name = ""
        try lengthDelimited(bytes) { field, value throws(ProtoError) in
            if field == 1 { name = String(decoding: value, as: UTF8.self) }
        }
        return name
    }

    /// Calls `body` with each length-delimited field of a message, in order; other fields are
    /// skipped. Throws on bytes that are not the protobuf wire format.
    private static func lengthDelimited(_ bytes: UnsafeRawBufferPointer,
                                        _ body: (UInt32, UnsafeRawBufferPointer) throws(ProtoError) -> Void)
        throws(ProtoError) {
        let malformed = ProtoError.malformed(message: "google.protobuf.FileDescriptorSet", byteCount: bytes.count)
        var reader = WireReader(bytes: bytes)
        while reader.index < bytes.count {
            guard let key = reader.varint() else { throw malformed }
            let field = UInt32(truncatingIfNeeded: key >> 3)
            switch key & 7 {
            case 0: guard reader.varint() != nil else { throw malformed }
            case 1: guard reader.skip(8) else { throw malformed }
            case 5: guard reader.skip(4) else { throw malformed }
            case 2:
                guard let length = reader.varint(), let value = reader.take(length) else { throw malformed }
                try body(field, value)
            default:
                throw malformed
            }
        }
    }
}
