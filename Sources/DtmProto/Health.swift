internal import DtmProtoC

// The messages of `proto/health.proto`: the standard gRPC health checking protocol.

/// `grpc.health.v1.HealthCheckRequest`.
public struct HealthCheckRequest: ProtoMessage {
    /// "" for the whole server, or a service name such as `dtmgimp.Dtm`.
    public var service: String

    public init(service: String = "") {
        self.service = service
    }
}

/// `grpc.health.v1.HealthCheckResponse`.
public struct HealthCheckResponse: ProtoMessage {
    /// `grpc.health.v1.HealthCheckResponse.ServingStatus`; unknown wire values are kept.
    public struct ServingStatus: RawRepresentable, Hashable, Sendable {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let unknown = ServingStatus(rawValue: 0)
        public static let serving = ServingStatus(rawValue: 1)
        public static let notServing = ServingStatus(rawValue: 2)
        public static let serviceUnknown = ServingStatus(rawValue: 3)
    }

    public var status: ServingStatus

    public init(status: ServingStatus = .unknown) {
        self.status = status
    }
}

extension HealthCheckRequest: CBackedMessage {
    static let codec = CCodec(
        grpc__health__v1__health_check_request__descriptor, grpc__health__v1__health_check_request__init,
        grpc__health__v1__health_check_request__get_packed_size, grpc__health__v1__health_check_request__pack,
        grpc__health__v1__health_check_request__unpack, grpc__health__v1__health_check_request__free_unpacked)

    init(copying c: Grpc__Health__V1__HealthCheckRequest) {
        self.init(service: String(copying: c.service))
    }

    func fill(_ c: inout Grpc__Health__V1__HealthCheckRequest, arena: CArena) {
        c.service = arena.string(service)
    }
}

extension HealthCheckResponse: CBackedMessage {
    static let codec = CCodec(
        grpc__health__v1__health_check_response__descriptor, grpc__health__v1__health_check_response__init,
        grpc__health__v1__health_check_response__get_packed_size, grpc__health__v1__health_check_response__pack,
        grpc__health__v1__health_check_response__unpack, grpc__health__v1__health_check_response__free_unpacked)

    init(copying c: Grpc__Health__V1__HealthCheckResponse) {
        self.init(status: ServingStatus(rawValue: Int32(c.status.rawValue)))
    }

    func fill(_ c: inout Grpc__Health__V1__HealthCheckResponse, arena: CArena) {
        c.status = Grpc__Health__V1__HealthCheckResponse__ServingStatus(rawValue: UInt32(bitPattern: status.rawValue))
    }
}
