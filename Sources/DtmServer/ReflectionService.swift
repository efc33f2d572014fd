import DtmGRPC
import DtmProto

/// gRPC server reflection, `grpc.reflection.v1` and `grpc.reflection.v1alpha` (the same
/// messages; many tools still ask for v1alpha first): lists the services and serves the
/// FileDescriptorProtos of proto/*.proto (embedded at gen time) with their dependencies, so
/// that grpcurl-style tools can list and call `dtmgimp.Dtm` without the .proto files.
public struct ReflectionService: Sendable {
    public static let serviceNames = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
    let files: ProtoFiles

    public init(files: ProtoFiles = .embedded) {
        self.files = files
    }

    /// Registers both versions. The services listed are those on `router` when this is called,
    /// plus reflection itself: register it last.
    public func register(on router: inout GRPCRouter) {
        let services = Set(router.paths.compactMap(Self.serviceName(ofPath:)) + Self.serviceNames).sorted()
        let files = self.files
        let handler = GRPCHandler.streaming { call throws(RPCError) in
            for try await message in call.requests {
                let request = try decode(ServerReflectionRequest.self, message)
                try await call.responses.send(Self.answer(request, services: services, files: files).encode())
            }
            return Metadata()
        }
        for service in Self.serviceNames {
            router.register(service: service, method: "ServerReflectionInfo", handler)
        }
    }

    /// One reflection request's answer; failures are error responses in the stream, which
    /// goes on.
    static func answer(_ request: ServerReflectionRequest, services: [String], files: ProtoFiles)
        -> ServerReflectionResponse {
        func respond(_ response: ServerReflectionResponse.Response) -> ServerReflectionResponse {
            ServerReflectionResponse(validHost: request.host, originalRequest: request, response: response)
        }
        func notFound(_ message: String) -> ServerReflectionResponse {
            respond(.error(code: Int32(GRPCStatusCode.notFound.rawValue), message: message))
        }
        func descriptors(_ file: ProtoFiles.File) -> ServerReflectionResponse {
            respond(.fileDescriptors(files.withDependencies(file).map(\.bytes)))
        }
        switch request.request {
        case .listServices?:
            return respond(.services(services))
        case .fileByFilename(let name)?:
            guard let file = files.file(named: name) else { return notFound("unknown file '\(name)'") }
            return descriptors(file)
        case .fileContainingSymbol(let symbol)?:
            guard let file = files.file(containingSymbol: symbol) else { return notFound("unknown symbol '\(symbol)'") }
            return descriptors(file)
        case .fileContainingExtension(let type, let number)?:
            // Our protos (proto3) declare no extensions.
            return notFound("no extension \(number) of '\(type)'")
        case .allExtensionNumbersOfType(let type)?:
            guard files.file(containingSymbol: type) != nil else { return notFound("unknown type '\(type)'") }
            return respond(.extensionNumbers(baseTypeName: type, numbers: []))
        case nil:
            return respond(.error(code: Int32(GRPCStatusCode.invalidArgument.rawValue),
                                  message: "the request names no reflection query (message_request is unset)"))
        }
    }

    /// `package.Service` of `/package.Service/Method`.
    static func serviceName(ofPath path: String) -> String? {
        let parts = path.split(separator: "/")
        return parts.count == 2 ? String(parts[0]) : nil
    }
}
