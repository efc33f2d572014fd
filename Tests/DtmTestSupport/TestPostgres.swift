import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why a throw-away PostgreSQL cluster could not be used.
public enum TestPostgresError: Error, CustomStringConvertible {
    /// initdb / pg_ctl / psql not found: the tests fail (they do not skip) so CI cannot pass without PostgreSQL.
    case binariesMissing(String)
    /// A PostgreSQL command exited non-zero.
    case commandFailed(command: String, status: Int32, output: String)
    /// No free port after several tries, or a socket call failed.
    case noPort(String)

    public var description: String {
        switch self {
        case .binariesMissing(let detail):
            "PostgreSQL server binaries not found (\(detail)): install Debian's postgresql and postgresql-client "
                + "packages (tools/setup does) or set DTM_PG_BINDIR to the folder holding initdb, pg_ctl and psql"
        case .commandFailed(let command, let status, let output):
            "\(command) exited with \(status): \(output.suffix(2000))"
        case .noPort(let detail):
            "no free TCP port for PostgreSQL: \(detail)"
        }
    }
}

/// A throw-away PostgreSQL cluster for tests: `initdb` into a temporary folder and `pg_ctl start`
/// on a free port of 127.0.0.1 (unix socket in the same folder), trust authentication for local
/// connections, fsync on (the tests check durability), `max_connections` 300 (several
/// coordinators, each with a pool), `max_prepared_transactions` 64 (the SDK's XA branches end
/// their local transactions with PREPARE TRANSACTION; PostgreSQL's default 0 refuses it).
///
/// `shared()` is one cluster per test process, started on first use; tests on it create their own
/// databases and must not stop or restart it. A test that disturbs the server (restart, stop)
/// starts a private one with `launch()` and `shutdown()`s it (or runs in `withStarted`).
///
/// Clean-up, also when the test process is killed: every cluster gets a watchdog in its own
/// session (`setsid`) that waits for the test process to end (`tail --pid`), then stops the
/// server (`pg_ctl stop -m immediate`) and removes the folder. And each launch first removes
/// clusters left behind by test processes that are gone (the folder's `owner.pid`), in case a
/// watchdog was killed too. Ports are never reused across runs, so a leftover cannot clash.
///
/// As root (initdb and pg_ctl refuse to run as root) the server runs as the `postgres` OS user
/// through `runuser`, with the folder owned by that user.
public final class TestPostgres: Sendable {
    /// The TCP port on 127.0.0.1.
    public let port: Int
    /// The superuser role (trust authentication, no password).
    public let user = "postgres"
    /// The cluster's folder: `data/` (PGDATA), the unix socket, `server.log`.
    public let directory: URL
    private let binaries: URL
    private let runAs: String?

    private init(port: Int, directory: URL, binaries: URL, runAs: String?) {
        self.port = port
        self.directory = directory
        self.binaries = binaries
        self.runAs = runAs
    }

    private var dataDirectory: String { directory.appendingPathComponent("data").path }
    private var serverLog: String { directory.appendingPathComponent("server.log").path }

    /// The `postgres://` URL of database `name` (what `dtm --store` and postgres-nio take).
    public func url(database name: String) -> String { "postgres://\(user)@127.0.0.1:\(port)/\(name)" }

    // MARK: - Shared and private clusters

    private static let holder = Holder()

    private actor Holder {
        var task: Task<TestPostgres, any Error>?
        func get() async throws -> TestPostgres {
            if let task { return try await task.value }
            let task = Task { try await TestPostgres.launch() }
            self.task = task
            return try await task.value
        }
    }

    /// The test process's shared cluster, started on first use and stopped when the process ends.
    /// Do not stop or restart it: other tests use it at the same time.
    public static func shared() async throws -> TestPostgres { try await holder.get() }

    /// A private cluster for one test (which may stop, start and restart it); `shutdown()` it.
    public static func launch() async throws -> TestPostgres {
        try await onOwnThread { try TestPostgres.launchBlocking() }
    }

    private static func launchBlocking() throws -> TestPostgres {
        let binaries = try findBinaries()
        reapLeftovers()
        let runAs: String? = getuid() == 0 ? "postgres" : nil
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(folderPrefix)\(UUID().uuidString.prefix(8).lowercased())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
        try Data("\(getpid())\n".utf8).write(to: directory.appendingPathComponent("owner.pid"))
        do {
            if let runAs { try run("/bin/chown", ["-R", "\(runAs):\(runAs)", directory.path]) }
            var cluster: TestPostgres?
            var lastError: (any Error)?
            for attempt in 0..<5 where cluster == nil {
                let candidate = TestPostgres(port: try freeTCPPort(), directory: directory, binaries: binaries, runAs: runAs)
                if attempt == 0 {
                    // No fsync for the initial files only: the server itself runs with fsync on.
                    try candidate.postgresCommand("initdb", ["-D", candidate.dataDirectory, "-U", candidate.user,
                                                             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
                }
                do {
                    try candidate.startBlocking()
                    cluster = candidate
                } catch {
                    // Most likely someone took the port between our probe and the server's bind.
                    lastError = error
                }
            }
            guard let cluster else { throw lastError ?? TestPostgresError.noPort("five tries") }
            try cluster.startWatchdog()
            return cluster
        } catch {
            _ = try? run("/bin/rm", ["-rf", directory.path])
            throw error
        }
    }

    /// Stops the server at once and removes its folder.
    public func shutdown() async {
        await onOwnThread {
            _ = try? self.postgresCommand("pg_ctl", ["-D", self.dataDirectory, "-m", "immediate", "-w", "stop"])
            _ = try? Self.run("/bin/rm", ["-rf", self.directory.path])
        }
    }

    // MARK: - Databases

    /// A new, empty database with a name no other test uses.
    public func createDatabase() async throws -> TestDatabase {
        let name = "dtm_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased())"
        _ = try await psql("CREATE DATABASE \(name)")
        return TestDatabase(name: name, url: url(database: name), cluster: self)
    }

    /// Runs SQL with psql over TCP (as the tests' clients connect) and returns its unaligned,
    /// tuples-only output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") async throws -> String {
        try await onOwnThread {
            try Self.run(self.binaries.appendingPathComponent("psql").path,
                         ["-X", "-h", "127.0.0.1", "-p", "\(self.port)", "-U", self.user, "-d", database,
                          "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        }
    }

    // MARK: - Server control (private clusters only)

    /// `pg_ctl restart -m immediate`: the server dies as in a crash (no checkpoint, clients cut off)
    /// and comes back on the same port after crash recovery.
    public func restartImmediate() async throws {
        _ = try await onOwnThread {
            try self.postgresCommand("pg_ctl", ["-D", self.dataDirectory, "-l", self.serverLog, "-m", "immediate",
                                                "-w", "-t", "120", "-o", self.serverOptions, "restart"])
        }
    }

    /// Stops the server (fast shutdown); `startServer()` brings it back on the same port.
    public func stopServer() async throws {
        _ = try await onOwnThread { try self.postgresCommand("pg_ctl", ["-D", self.dataDirectory, "-m", "fast", "-w", "stop"]) }
    }

    /// Starts the stopped server again on the same port.
    public func startServer() async throws {
        try await onOwnThread { try self.startBlocking() }
    }

    private var serverOptions: String {
        "-p \(port) -k \(directory.path) -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on"
            + " -c synchronous_commit=on -c max_prepared_transactions=64"
    }

    private func startBlocking() throws {
        try postgresCommand("pg_ctl", ["-D", dataDirectory, "-l", serverLog, "-w", "-t", "120",
                                       "-o", serverOptions, "start"])
    }

    // MARK: - Processes

    /// Runs a PostgreSQL server program, as the `postgres` user when we are root.
    @discardableResult
    private func postgresCommand(_ program: String, _ arguments: [String]) throws -> String {
        let path = binaries.appendingPathComponent(program).path
        return try Self.run("/bin/bash", ["-c", Self.closingInheritedDescriptors, "pg-command"]
                                + Self.asUser(runAs) + [path] + arguments, in: directory)
    }

    /// `runuser -u USER --` when the server must run as another user.
    private static func asUser(_ user: String?) -> [String] {
        user.map { ["/usr/sbin/runuser", "-u", $0, "--"] } ?? []
    }

    /// Runs "$@" with every descriptor above 2 closed. Foundation's `Process` learns that a child
    /// exited when a socket it hands the child closes; the server that `pg_ctl start` leaves
    /// running would inherit that socket, and `waitUntilExit()` would wait for the server.
    private static let closingInheritedDescriptors =
        #"for fd in /proc/$$/fd/*; do n=${fd##*/}; if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi; done; exec "$@""#

    /// Runs a program to its end (blocking) with its output in a file (a pipe could be held open by
    /// the server that pg_ctl leaves running); throws unless it exits 0.
    @discardableResult
    private static func run(_ executable: String, _ arguments: [String], in directory: URL? = nil) throws -> String {
        let outputURL = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-pgcommand-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputURL) }
        let output = try FileHandle(forWritingTo: outputURL)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            try? output.close()
            throw TestPostgresError.commandFailed(command: executable, status: -1, output: "\(error)")
        }
        process.waitUntilExit()
        try? output.close()
        let text = (try? String(contentsOf: outputURL, encoding: .utf8)) ?? ""
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw TestPostgresError.commandFailed(command: ([executable] + arguments).joined(separator: " "),
                                                  status: process.terminationStatus, output: text)
        }
        return text.hasSuffix("\n") ? String(text.dropLast()) : text
    }

    /// The watchdog: in a session of its own so that a signal to the test's process group spares
    /// it; stops the server and removes the folder once the test process is gone.
    private func startWatchdog() throws {
        let stop = ([binaries.appendingPathComponent("pg_ctl").path, "-D", dataDirectory, "-m", "immediate", "-w", "stop"])
            .map(Self.shellQuoted).joined(separator: " ")
        let asUser = Self.asUser(runAs).map(Self.shellQuoted).joined(separator: " ")
        let script = "tail --pid=\(getpid()) -f /dev/null; cd /; \(asUser) \(stop) >/dev/null 2>&1; rm -rf \(Self.shellQuoted(directory.path))"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        process.arguments = ["/bin/sh", "-c", script]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    private static func shellQuoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    private static let folderPrefix = "dtm-testpg-"

    /// Stops and removes clusters whose test process is gone (killed along with its watchdog).
    private static func reapLeftovers() {
        let temporary = FileManager.default.temporaryDirectory
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: temporary.path) else { return }
        for name in names where name.hasPrefix(folderPrefix) {
            let folder = temporary.appendingPathComponent(name)
            guard let text = try? String(contentsOf: folder.appendingPathComponent("owner.pid"), encoding: .utf8),
                  let owner = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  kill(owner, 0) != 0, errno == ESRCH else { continue }
            if let binaries = try? findBinaries() {
                let pgctl = binaries.appendingPathComponent("pg_ctl").path
                let data = folder.appendingPathComponent("data").path
                _ = try? run("/bin/bash", ["-c", closingInheritedDescriptors, "pg-command"]
                                + asUser(getuid() == 0 ? "postgres" : nil) + [pgctl, "-D", data, "-m", "immediate", "-w", "stop"],
                             in: URL(fileURLWithPath: "/"))
            }
            _ = try? run("/bin/rm", ["-rf", folder.path])
        }
    }

    /// The folder holding initdb, pg_ctl and psql: `DTM_PG_BINDIR`, `pg_config --bindir`, else the
    /// newest /usr/lib/postgresql/<version>/bin.
    static func findBinaries() throws -> URL {
        let manager = FileManager.default
        func usable(_ path: String) -> Bool {
            ["initdb", "pg_ctl", "psql"].allSatisfy { manager.isExecutableFile(atPath: "\(path)/\($0)") }
        }
        var tried: [String] = []
        if let configured = ProcessInfo.processInfo.environment["DTM_PG_BINDIR"] {
            guard usable(configured) else { throw TestPostgresError.binariesMissing("DTM_PG_BINDIR=\(configured)") }
            return URL(fileURLWithPath: configured)
        }
        for config in ["/usr/bin/pg_config", "/usr/local/bin/pg_config"] where manager.isExecutableFile(atPath: config) {
            if let bindir = try? run(config, ["--bindir"]).trimmingCharacters(in: .whitespacesAndNewlines) {
                tried.append(bindir)
                if usable(bindir) { return URL(fileURLWithPath: bindir) }
            }
        }
        let root = "/usr/lib/postgresql"
        let versions = ((try? manager.contentsOfDirectory(atPath: root)) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        for version in versions {
            let bindir = "\(root)/\(version)/bin"
            tried.append(bindir)
            if usable(bindir) { return URL(fileURLWithPath: bindir) }
        }
        throw TestPostgresError.binariesMissing(tried.isEmpty ? "no pg_config, no \(root)" : "looked in \(tried.joined(separator: ", "))")
    }
}

extension TestPostgres: Stoppable {
    /// `shutdown()`, for `withStarted(await TestPostgres.launch()) { cluster in ... }`.
    public func stop() async { await shutdown() }
}

/// A database of a test cluster; `drop()` it when the test is done.
public struct TestDatabase: Sendable {
    public let name: String
    /// `postgres://postgres@127.0.0.1:PORT/NAME`, for `dtm --store` and postgres-nio.
    public let url: String
    public let cluster: TestPostgres

    /// Drops the database, closing any connection still open to it.
    public func drop() async throws {
        try await cluster.psql("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }
}

/// A TCP port of 127.0.0.1 that was free a moment ago (bound to port 0 and closed again); the
/// caller retries when something else took it meanwhile.
public func freeTCPPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestPostgresError.noPort("socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
            bind(fd, socketAddress, length) == 0 && getsockname(fd, socketAddress, &length) == 0
        }
    }
    guard bound else { throw TestPostgresError.noPort("bind: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}
