// swift-tools-version:6.1
import PackageDescription

// Micro-benchmarks (issue 13) with ordo-one/benchmark, in their own package so that the main
// package's builds (`swift build`, `swift test`, CI) never resolve or compile the benchmark
// framework, its plugins and its dependencies. Run with tools/bench-micro.
//
// Only the "MallocInterposer" trait is enabled: the default "RuntimeInterposer" trait pulls in
// ordo-one/swift-runtime-interposer on Swift 6.3 for Linux, which is not in the offline mirror.
// The malloc interposer counts allocations without jemalloc.
let package = Package(
    name: "swift-dtm-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        // Named, so the product reference does not depend on the checkout folder's name.
        .package(name: "swift-dtm", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "DtmMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "DtmInternalsForBenchmarks", package: "swift-dtm"),
            ],
            path: "Benchmarks/DtmMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
