import DtmEngine
import DtmGRPC
import DtmProto

/// `grpc.health.v1.Health`: SERVING while the store can take writes, NOT_SERVING otherwise,
/// for the whole server ("") and for `dtmgimp.Dtm`.
/// - `Check` answers once; NOT_FOUND for other services, as the health checking protocol asks.
/// - `Watch` sends the current status at once, then a message each time it changes, until the
///   client cancels; for an unknown service it sends SERVICE_UNKNOWN and keeps the call open.
public struct HealthService: Sendable {
    public static let serviceName = "grpc.health.v1.Health"
    let sampler: HealthSampler
    let watchInterval: Duration

    /// `watchInterval`: how often watchers' status is re-checked. However many watchers there
    /// are, the store is probed at most once per interval.
    public init(health: @escaping @Sendable () async -> StoreHealth, watchInterval: Duration = .seconds(1)) {
        self.sampler = HealthSampler(probe: health)
        self.watchInterval = watchInterval
    }

    public func register(on router: inout GRPCRouter) {
        let sampler = self.sampler
        let interval = watchInterval
        router.register(service: Self.serviceName, method: "Check", .async { call throws(RPCError) in
            let request = try decode(HealthCheckRequest.self, call.message)
            guard Self.isKnown(request.service) else {
                throw RPCError(.notFound, "unknown service '\(request.service)'")
            }
            let status = await sampler.status(maxAge: .zero)
            return GRPCResponse(message: HealthCheckResponse(status: status).encode())
        })
        router.register(service: Self.serviceName, method: "Watch", .streaming { call throws(RPCError) in
            guard let first = try await call.requests.next() else {
                throw RPCError(.invalidArgument, "Watch expects one HealthCheckRequest")
            }
            let request = try decode(HealthCheckRequest.self, first)
            guard Self.isKnown(request.service) else {
                try await call.responses.send(HealthCheckResponse(status: .serviceUnknown).encode())
                // Registration is static here: the status never changes; wait for the client.
                while true {
                    do { try await Task.sleep(for: .seconds(3600)) } catch { throw RPCError(.cancelled, "watch cancelled") }
                }
            }
            var last: HealthCheckResponse.ServingStatus?
            while true {
                let status = await sampler.status(maxAge: interval)
                if status != last {
                    try await call.responses.send(HealthCheckResponse(status: status).encode())
                    last = status
                }
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    throw RPCError(.cancelled, "watch cancelled")
                }
            }
        })
    }

    static func isKnown(_ service: String) -> Bool {
        service.isEmpty || service == DtmGRPCService.serviceName
    }
}

/// The store's health as a serving status, probed at most once per `maxAge` however many
/// callers ask (a probe takes a slot in the store's write batch).
actor HealthSampler {
    private let probe: @Sendable () async -> StoreHealth
    private var last: (at: ContinuousClock.Instant, status: HealthCheckResponse.ServingStatus)?
    private var running: Task<HealthCheckResponse.ServingStatus, Never>?

    init(probe: @escaping @Sendable () async -> StoreHealth) {
        self.probe = probe
    }

    /// A fresh status when `maxAge` is zero, else one at most `maxAge` old. Callers that ask
    /// while a probe runs share its answer.
    func status(maxAge: Duration) async -> HealthCheckResponse.ServingStatus {
        if maxAge > .zero, let last, ContinuousClock.now - last.at < maxAge { return last.status }
        if let running { return await running.value }
        let probe = self.probe
        let task = Task { await probe() == .healthy ? HealthCheckResponse.ServingStatus.serving : .notServing }
        running = task
        let status = await task.value
        running = nil
        last = (ContinuousClock.now, status)
        return status
    }
}
