// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-dtm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dtm", targets: ["dtm"]),
        .executable(name: "dtm-bench", targets: ["dtm-bench"]),
        // The Swift SDK for services taking part in DTM transactions (issue 12).
        .library(name: "DtmClient", targets: ["DtmClient"]),
        .library(name: "DtmClientHummingbird", targets: ["DtmClientHummingbird"]),
        .library(name: "DtmClientPostgres", targets: ["DtmClientPostgres"]),
        // Not an API: the micro-benchmarks package (Benchmarks/Package.swift) reaches the
        // engine, the store and the wire messages through it.
        .library(name: "DtmInternalsForBenchmarks", targets: ["DtmProto", "DtmEngine", "DtmStore"]),
    ],
    dependencies: [
        // Socket I/O and event loops; nghttp2 does the HTTP/2 protocol work in memory.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // Structured logging, the server-side Swift standard.
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // HTTP branch calls (DTM's HTTP fallback): pooled keep-alive HTTP/1.1 and TLS for https URLs.
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // Command-line flags of the `dtm` executable.
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        // DTM's HTTP JSON API (:36789): HTTP/1.1 server, routing, bounded request bodies.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        // Hummingbird runs as a service; its graceful shutdown is triggered through this.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // The PostgreSQL store (several coordinators on one database) and the SDK's barrier on
        // PostgreSQL: pooled connections, prepared statements, the wire protocol over NIO.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // TLS settings of the PostgreSQL connections (sslmode); postgres-nio already builds it.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // The `dtm` configuration file (YAML, DTM's conf.yml keys).
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        // Optional JWT authentication of clients (--auth-jwt-*): HS256/RS256 signature checks,
        // exp/nbf claims and PEM keys, so no hand-written JOSE or crypto of our own.
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        // The metrics API (counters, gauges, histograms) the coordinator records through.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        // A Prometheus registry for that API and the text format `/api/metrics` serves.
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // C libraries from the system (Debian: libnghttp2-dev, libprotobuf-c-dev, libsqlite3-dev).
        .systemLibrary(name: "CNghttp2", pkgConfig: "libnghttp2",
                       providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c",
                       providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        // protoc-c output for proto/*.proto, committed; regenerate with tools/gen-proto.
        .target(name: "DtmProtoC", dependencies: ["CProtobufC"], path: "generated",
                exclude: ["README.md"], publicHeadersPath: "."),

        // Swift value types for the wire messages, over protobuf-c.
        .target(name: "DtmProto", dependencies: ["DtmProtoC", "CProtobufC"]),
        // HTTP/2 sessions (nghttp2 in memory mode): bytes in, events out, bytes to send.
        .target(name: "DtmHTTP2", dependencies: ["CNghttp2"]),
        // gRPC on top of DtmHTTP2: framing, status, metadata, deadlines, router, unary client.
        .target(name: "DtmGRPC", dependencies: [
            "DtmHTTP2", "DtmSync",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Sockets: NIO moves bytes between TCP connections and the in-memory sessions.
        .target(name: "DtmNet", dependencies: [
            "DtmGRPC", "DtmHTTP2", "DtmSync",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Named crash points for the crash-recovery harness; compiled out of release builds.
        .target(name: "DtmFailpoints"),
        // The lock every module uses (a pthread mutex that ThreadSanitizer understands).
        .target(name: "DtmSync"),
        // Transaction model and per-mode processors: pure decisions, no I/O.
        .target(name: "DtmEngine", dependencies: ["DtmSync"]),
        // Durable store: the Store protocol and the SQLite implementation.
        .target(name: "DtmStore", dependencies: [
            "DtmEngine", "CSQLite", "DtmFailpoints",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The PostgreSQL store: the same TransactionStore contract, shared by several coordinators.
        .target(name: "DtmPostgres", dependencies: [
            "DtmEngine", "DtmStore", "DtmFailpoints", "DtmSync",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // swift-log handler of `dtm`: text or one JSON object per line, every value escaped.
        .target(name: "DtmLogging", dependencies: ["DtmSync", .product(name: "Logging", package: "swift-log")]),
        // Wiring: the dtmgimp.Dtm gRPC service, the HTTP JSON API, branch callers, the retry loop.
        .target(name: "DtmServer", dependencies: [
            "DtmProto", "DtmGRPC", "DtmNet", "DtmEngine", "DtmStore", "DtmFailpoints", "DtmSync",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], resources: [.embedInCode("openapi.json"),
                       // The admin web UI (AdminUI.swift): plain files, no front-end build step.
                       .embedInCode("AdminUI/admin.html"), .embedInCode("AdminUI/admin.js"),
                       .embedInCode("AdminUI/admin.css")]),
        // The settings of `dtm`, each declared once (flag, env var, YAML key, default, check), read
        // from flags > environment > file > defaults; and the process's services in one ServiceGroup.
        .target(name: "DtmConfig", dependencies: [
            "DtmServer", "DtmEngine", "DtmGRPC", "DtmNet", "DtmStore", "DtmPostgres", "DtmLogging",
            .product(name: "Yams", package: "Yams"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        .executableTarget(name: "dtm", dependencies: [
            "DtmConfig", "DtmServer", "DtmLogging", "DtmNet",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),

        // Load generator for tools/bench-saga (not shipped): Submits over gRPC, a busi server, a raw SQLite baseline.
        .executableTarget(name: "dtm-bench", dependencies: [
            "DtmNet", "DtmGRPC", "DtmProto", "CSQLite", "DtmEngine", "DtmStore", "DtmSync",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // The client SDK: Saga, Msg, TCC, Workflow, the sub-transaction barrier (SQLite) and
        // branch-service helpers. Never depends on the coordinator (engine, store, server).
        .target(name: "DtmClient", dependencies: [
            "DtmProto", "DtmGRPC", "DtmNet", "CSQLite", "DtmSync",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // DtmClient's branch handlers as Hummingbird routes.
        .target(name: "DtmClientHummingbird", dependencies: [
            "DtmClient",
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),

        // DtmClient's barrier on PostgreSQL (DTM's dtm_barrier.barrier table), over postgres-nio.
        .target(name: "DtmClientPostgres", dependencies: [
            "DtmClient",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The bank-transfer quick start of the SDK (README "The Swift SDK").
        .executableTarget(name: "bank-transfer", dependencies: [
            "DtmClient", "DtmGRPC", "DtmNet", .product(name: "Logging", package: "swift-log"),
        ]),

        // Shared by the test targets: the polling helper and the scoped start / run / stop helper.
        .target(name: "DtmTestSupport", dependencies: ["DtmServer", "DtmNet", "DtmEngine", "CSQLite"],
                path: "Tests/DtmTestSupport"),

        // Fuzz targets (Fuzz/README.md): the bodies, a libFuzzer/replay driver and a test that
        // replays the committed corpus in every ordinary test run.
        .systemLibrary(name: "CLibFuzzer", path: "Fuzz/Sources/CLibFuzzer"),
        .target(name: "DtmFuzz", dependencies: ["DtmGRPC", "DtmHTTP2", "DtmProto", "DtmEngine", "DtmServer"],
                path: "Fuzz/Sources/DtmFuzz"),
        .executableTarget(name: "dtm-fuzz", dependencies: ["DtmFuzz", "CLibFuzzer"], path: "Fuzz/Sources/dtm-fuzz"),
        .testTarget(name: "DtmFuzzTests", dependencies: ["DtmFuzz"], path: "Fuzz/Tests/DtmFuzzTests"),

        .testTarget(name: "DtmProtoTests", dependencies: ["DtmProto"]),
        .testTarget(name: "DtmGRPCTests", dependencies: ["DtmGRPC", "DtmHTTP2", "CNghttp2", "DtmSync"]),
        .testTarget(name: "DtmEngineTests", dependencies: ["DtmEngine", "DtmTestSupport", "DtmSync"]),
        .testTarget(name: "DtmConfigTests", dependencies: ["DtmConfig", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "DtmFailpointsTests", dependencies: ["DtmFailpoints"]),
        .testTarget(name: "DtmSyncTests", dependencies: ["DtmSync"]),
        .testTarget(name: "DtmLoggingTests", dependencies: [
            "DtmLogging", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "DtmStoreTests", dependencies: [
            "DtmStore", "DtmPostgres", "DtmEngine", "DtmTestSupport", "DtmSync",
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ]),
        .testTarget(name: "DtmServerTests", dependencies: [
            "DtmServer", "DtmEngine", "DtmGRPC", "DtmNet", "DtmProto", "DtmTestSupport", "DtmSync",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),
        .testTarget(name: "DtmHTTPTests", dependencies: [
            "DtmTestSupport", "DtmServer", "DtmEngine", "DtmStore", "DtmNet", "DtmGRPC", "DtmProto", "CSQLite", "DtmSync",
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),
        .testTarget(name: "InteropTests", dependencies: [
            "DtmTestSupport", "DtmServer", "DtmNet", "DtmGRPC", "DtmProto", "DtmEngine", "DtmStore", "CSQLite",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ],
                    exclude: ["python"]),
        .testTarget(name: "DtmClientTests", dependencies: [
            "DtmClient", "DtmClientHummingbird", "DtmTestSupport", "DtmServer", "DtmEngine", "DtmStore",
            "DtmNet", "DtmGRPC", "DtmProto", "DtmSync",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], exclude: ["python"]),
        .testTarget(name: "DtmClientPostgresTests", dependencies: [
            "DtmClient", "DtmClientPostgres", "DtmTestSupport", "DtmServer", "DtmEngine", "DtmNet", "DtmGRPC", "DtmSync",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
