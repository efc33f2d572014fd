import DtmEngine
import DtmGRPC
import DtmProto

/// `grpc.health.v1.Health/Check`: SERVING while the store can take writes, NOT_SERVING
/// otherwise, for the whole server ("") and for `dtmgimp.Dtm`; NOT_FOUND for other services,
/// as the health checking protocol asks.
public struct HealthService: Sendable {
    public static let serviceName = "grpc.health.v1.Health"
    let health: @Sendable () async -> StoreHealth

    public init(health: @escaping @Sendable () async -> StoreHealth) {
        self.health = health
    }

    public func register(on router: inout GRPCRouter) {
        let health = self.health
        router.register(service: Self.serviceName, method: "Check", .async { call throws(RPCError) in
            let request = try decode(HealthCheckRequest.self, call)
            guard request.service.isEmpty || request.service == DtmGRPCService.serviceName else {
                throw RPCError(.notFound, "unknown service '\(request.service)'")
            }
            let status: HealthCheckResponse.ServingStatus = await health() == .healthy ? .serving : .notServing
            return GRPCResponse(message: HealthCheckResponse(status: status).encode())
        })
    }
}
