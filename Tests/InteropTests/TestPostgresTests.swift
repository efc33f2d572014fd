import DtmTestSupport
import Foundation
import Testing

/// The throw-away PostgreSQL clusters the store and coordinator tests use (DtmTestSupport).
@Suite struct TestPostgresTests {
    /// Two databases of the shared cluster: separate, reachable through their URLs, and gone once dropped.
    @Test func databasesAreSeparateReachableAndDropped() async throws {
        let cluster = try await TestPostgres.shared()
        let first = try await cluster.createDatabase()
        let second = try await cluster.createDatabase()
        #expect(first.name != second.name)
        #expect(first.url == "postgres://postgres@127.0.0.1:\(cluster.port)/\(first.name)")
        for (database, value) in [(first, 1), (second, 2)] {
            // psql takes the URL as its database argument, as dtm --store takes it.
            try await cluster.psql("CREATE TABLE t (v integer); INSERT INTO t VALUES (\(value))", database: database.url)
        }
        #expect(try await cluster.psql("SELECT current_database() || ':' || sum(v) FROM t", database: first.url)
                == "\(first.name):1")
        #expect(try await cluster.psql("SELECT sum(v) FROM t", database: second.url) == "2")
        #expect(try await cluster.psql("SHOW fsync") == "on")
        #expect(Int(try await cluster.psql("SHOW max_connections")) ?? 0 >= 300)

        try await first.drop()
        try await second.drop()
        let names = try await cluster.psql("SELECT datname FROM pg_database").split(separator: "\n").map(String.init)
        #expect(!names.contains(first.name) && !names.contains(second.name), "\(names)")
    }

    /// A private cluster killed and restarted (`restartImmediate`) keeps its committed rows, and
    /// one stopped and started again is reachable on the same port; `stop()` removes its folder.
    @Test func privateClusterSurvivesImmediateRestartAndStopStart() async throws {
        let cluster = try await TestPostgres.launch()
        try await withStarted(cluster) { cluster in
            let database = try await cluster.createDatabase()
            try await cluster.psql("CREATE TABLE t (v integer); INSERT INTO t VALUES (7)", database: database.url)
            try await cluster.restartImmediate()
            #expect(try await cluster.psql("SELECT sum(v) FROM t", database: database.url) == "7")

            try await cluster.stopServer()
            await #expect(throws: TestPostgresError.self) { try await cluster.psql("SELECT 1") }
            try await cluster.startServer()
            #expect(try await cluster.psql("SELECT sum(v) FROM t", database: database.url) == "7")
            try await database.drop()
        }
        #expect(!FileManager.default.fileExists(atPath: cluster.directory.path))
    }
}
