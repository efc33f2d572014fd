internal import DtmProtoC

// The messages of `proto/reflection.proto` (grpc.reflection.v1). grpc.reflection.v1alpha has
// the same messages under another package: the wire format is the same, so these serve both.

/// `grpc.reflection.v1.ServerReflectionRequest`.
public struct ServerReflectionRequest: ProtoMessage {
    /// The `message_request` oneof.
    public enum Request: Sendable, Hashable {
        case fileByFilename(String)
        case fileContainingSymbol(String)
        case fileContainingExtension(containingType: String, extensionNumber: Int32)
        case allExtensionNumbersOfType(String)
        case listServices(String)
    }

    public var host: String
    /// nil when the client set none of the oneof's fields.
    public var request: Request?

    public init(host: String = "", request: Request?) {
        self.host = host
        self.request = request
    }
}

/// `grpc.reflection.v1.ServerReflectionResponse`.
public struct ServerReflectionResponse: ProtoMessage {
    /// The `message_response` oneof.
    public enum Response: Sendable, Hashable {
        /// Serialized FileDescriptorProtos.
        case fileDescriptors([[UInt8]])
        case extensionNumbers(baseTypeName: String, numbers: [Int32])
        /// Fully-qualified service names.
        case services([String])
        /// A gRPC status code and a message.
        case error(code: Int32, message: String)
    }

    public var validHost: String
    public var originalRequest: ServerReflectionRequest?
    public var response: Response?

    public init(validHost: String = "", originalRequest: ServerReflectionRequest?, response: Response?) {
        self.validHost = validHost
        self.originalRequest = originalRequest
        self.response = response
    }
}

extension ServerReflectionRequest: CBackedMessage {
    static let codec = CCodec(
        grpc__reflection__v1__server_reflection_request__descriptor, grpc__reflection__v1__server_reflection_request__init,
        grpc__reflection__v1__server_reflection_request__get_packed_size, grpc__reflection__v1__server_reflection_request__pack,
        grpc__reflection__v1__server_reflection_request__unpack, grpc__reflection__v1__server_reflection_request__free_unpacked)

    init(copying c: Grpc__Reflection__V1__ServerReflectionRequest) {
        let request: Request? = switch c.message_request_case.rawValue {
        case 3: .fileByFilename(String(copying: c.file_by_filename))
        case 4: .fileContainingSymbol(String(copying: c.file_containing_symbol))
        case 5: .fileContainingExtension(
            containingType: String(copying: c.file_containing_extension?.pointee.containing_type),
            extensionNumber: c.file_containing_extension?.pointee.extension_number ?? 0)
        case 6: .allExtensionNumbersOfType(String(copying: c.all_extension_numbers_of_type))
        case 7: .listServices(String(copying: c.list_services))
        default: nil
        }
        self.init(host: String(copying: c.host), request: request)
    }

    func fill(_ c: inout Grpc__Reflection__V1__ServerReflectionRequest, arena: CArena) {
        c.host = arena.string(host)
        switch request {
        case .fileByFilename(let name)?:
            c.message_request_case = .init(rawValue: 3)
            c.file_by_filename = arena.string(name)
        case .fileContainingSymbol(let symbol)?:
            c.message_request_case = .init(rawValue: 4)
            c.file_containing_symbol = arena.string(symbol)
        case .fileContainingExtension(let type, let number)?:
            c.message_request_case = .init(rawValue: 5)
            c.file_containing_extension = arena.message(ExtensionRequest(containingType: type, extensionNumber: number))
        case .allExtensionNumbersOfType(let type)?:
            c.message_request_case = .init(rawValue: 6)
            c.all_extension_numbers_of_type = arena.string(type)
        case .listServices(let value)?:
            c.message_request_case = .init(rawValue: 7)
            c.list_services = arena.string(value)
        case nil:
            break
        }
    }
}

extension ServerReflectionResponse: CBackedMessage {
    static let codec = CCodec(
        grpc__reflection__v1__server_reflection_response__descriptor, grpc__reflection__v1__server_reflection_response__init,
        grpc__reflection__v1__server_reflection_response__get_packed_size, grpc__reflection__v1__server_reflection_response__pack,
        grpc__reflection__v1__server_reflection_response__unpack, grpc__reflection__v1__server_reflection_response__free_unpacked)

    init(copying c: Grpc__Reflection__V1__ServerReflectionResponse) {
        let response: Response? = switch c.message_response_case.rawValue {
        case 4: .fileDescriptors(c.file_descriptor_response.map {
            [[UInt8]](copying: $0.pointee.file_descriptor_proto, count: $0.pointee.n_file_descriptor_proto)
        } ?? [])
        case 5: .extensionNumbers(
            baseTypeName: String(copying: c.all_extension_numbers_response?.pointee.base_type_name),
            numbers: c.all_extension_numbers_response.map {
                Array(UnsafeBufferPointer(start: $0.pointee.extension_number, count: $0.pointee.n_extension_number))
            } ?? [])
        case 6: .services(c.list_services_response.map {
            [ServiceResponse](copying: $0.pointee.service, count: $0.pointee.n_service).map(\.name)
        } ?? [])
        case 7: .error(code: c.error_response?.pointee.error_code ?? 0,
                       message: String(copying: c.error_response?.pointee.error_message))
        default: nil
        }
        self.init(validHost: String(copying: c.valid_host), originalRequest: .optional(copying: c.original_request),
                  response: response)
    }

    func fill(_ c: inout Grpc__Reflection__V1__ServerReflectionResponse, arena: CArena) {
        c.valid_host = arena.string(validHost)
        c.original_request = originalRequest.map(arena.message)
        switch response {
        case .fileDescriptors(let files)?:
            c.message_response_case = .init(rawValue: 4)
            c.file_descriptor_response = arena.message(FileDescriptorResponse(files: files))
        case .extensionNumbers(let type, let numbers)?:
            c.message_response_case = .init(rawValue: 5)
            c.all_extension_numbers_response = arena.message(ExtensionNumberResponse(baseTypeName: type, numbers: numbers))
        case .services(let names)?:
            c.message_response_case = .init(rawValue: 6)
            c.list_services_response = arena.message(ListServiceResponse(services: names.map(ServiceResponse.init)))
        case .error(let code, let message)?:
            c.message_response_case = .init(rawValue: 7)
            c.error_response = arena.message(ErrorResponse(code: code, message: message))
        case nil:
            break
        }
    }
}

// The nested messages: internal, only the oneofs above show them.

struct ExtensionRequest: CBackedMessage {
    var containingType: String
    var extensionNumber: Int32

    static let codec = CCodec(
        grpc__reflection__v1__extension_request__descriptor, grpc__reflection__v1__extension_request__init,
        grpc__reflection__v1__extension_request__get_packed_size, grpc__reflection__v1__extension_request__pack,
        grpc__reflection__v1__extension_request__unpack, grpc__reflection__v1__extension_request__free_unpacked)

    init(containingType: String, extensionNumber: Int32) {
        self.containingType = containingType
        self.extensionNumber = extensionNumber
    }

    init(copying c: Grpc__Reflection__V1__ExtensionRequest) {
        self.init(containingType: String(copying: c.containing_type), extensionNumber: c.extension_number)
    }

    func fill(_ c: inout Grpc__Reflection__V1__ExtensionRequest, arena: CArena) {
        c.containing_type = arena.string(containingType)
        c.extension_number = extensionNumber
    }
}

struct FileDescriptorResponse: CBackedMessage {
    var files: [[UInt8]]

    static let codec = CCodec(
        grpc__reflection__v1__file_descriptor_response__descriptor, grpc__reflection__v1__file_descriptor_response__init,
        grpc__reflection__v1__file_descriptor_response__get_packed_size, grpc__reflection__v1__file_descriptor_response__pack,
        grpc__reflection__v1__file_descriptor_response__unpack, grpc__reflection__v1__file_descriptor_response__free_unpacked)

    init(files: [[UInt8]]) {
        self.files = files
    }

    init(copying c: Grpc__Reflection__V1__FileDescriptorResponse) {
        self.init(files: .init(copying: c.file_descriptor_proto, count: c.n_file_descriptor_proto))
    }

    func fill(_ c: inout Grpc__Reflection__V1__FileDescriptorResponse, arena: CArena) {
        (c.n_file_descriptor_proto, c.file_descriptor_proto) = arena.binaries(files)
    }
}

struct ExtensionNumberResponse: CBackedMessage {
    var baseTypeName: String
    var numbers: [Int32]

    static let codec = CCodec(
        grpc__reflection__v1__extension_number_response__descriptor, grpc__reflection__v1__extension_number_response__init,
        grpc__reflection__v1__extension_number_response__get_packed_size, grpc__reflection__v1__extension_number_response__pack,
        grpc__reflection__v1__extension_number_response__unpack, grpc__reflection__v1__extension_number_response__free_unpacked)

    init(baseTypeName: String, numbers: [Int32]) {
        self.baseTypeName = baseTypeName
        self.numbers = numbers
    }

    init(copying c: Grpc__Reflection__V1__ExtensionNumberResponse) {
        self.init(baseTypeName: String(copying: c.base_type_name),
                  numbers: Array(UnsafeBufferPointer(start: c.extension_number, count: c.n_extension_number)))
    }

    func fill(_ c: inout Grpc__Reflection__V1__ExtensionNumberResponse, arena: CArena) {
        c.base_type_name = arena.string(baseTypeName)
        (c.n_extension_number, c.extension_number) = arena.array(numbers) { $0 }
    }
}

struct ServiceResponse: CBackedMessage {
    var name: String

    static let codec = CCodec(
        grpc__reflection__v1__service_response__descriptor, grpc__reflection__v1__service_response__init,
        grpc__reflection__v1__service_response__get_packed_size, grpc__reflection__v1__service_response__pack,
        grpc__reflection__v1__service_response__unpack, grpc__reflection__v1__service_response__free_unpacked)

    init(name: String) {
        self.name = name
    }

    init(copying c: Grpc__Reflection__V1__ServiceResponse) {
        self.init(name: String(copying: c.name))
    }

    func fill(_ c: inout Grpc__Reflection__V1__ServiceResponse, arena: CArena) {
        c.name = arena.string(name)
    }
}

struct ListServiceResponse: CBackedMessage {
    var services: [ServiceResponse]

    static let codec = CCodec(
        grpc__reflection__v1__list_service_response__descriptor, grpc__reflection__v1__list_service_response__init,
        grpc__reflection__v1__list_service_response__get_packed_size, grpc__reflection__v1__list_service_response__pack,
        grpc__reflection__v1__list_service_response__unpack, grpc__reflection__v1__list_service_response__free_unpacked)

    init(services: [ServiceResponse]) {
        self.services = services
    }

    init(copying c: Grpc__Reflection__V1__ListServiceResponse) {
        self.init(services: .init(copying: c.service, count: c.n_service))
    }

    func fill(_ c: inout Grpc__Reflection__V1__ListServiceResponse, arena: CArena) {
        (c.n_service, c.service) = arena.messages(services)
    }
}

struct ErrorResponse: CBackedMessage {
    var code: Int32
    var message: String

    static let codec = CCodec(
        grpc__reflection__v1__error_response__descriptor, grpc__reflection__v1__error_response__init,
        grpc__reflection__v1__error_response__get_packed_size, grpc__reflection__v1__error_response__pack,
        grpc__reflection__v1__error_response__unpack, grpc__reflection__v1__error_response__free_unpacked)

    init(code: Int32, message: String) {
        self.code = code
        self.message = message
    }

    init(copying c: Grpc__Reflection__V1__ErrorResponse) {
        self.init(code: c.error_code, message: String(copying: c.error_message))
    }

    func fill(_ c: inout Grpc__Reflection__V1__ErrorResponse, arena: CArena) {
        c.error_code = code
        c.error_message = arena.string(message)
    }
}
