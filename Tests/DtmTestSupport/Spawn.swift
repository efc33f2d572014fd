import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A command could not be started.
public struct SpawnError: Error, CustomStringConvertible {
    public let description: String
}

/// Runs `executable` with `arguments` to its end and returns its exit status (128 + signal when a
/// signal ended it); stdin is /dev/null, stdout and stderr go to `outputPath` (or /dev/null).
///
/// For short commands (openssl) started while other tests start long-lived children. Foundation's
/// `Process.waitUntilExit()` learns of the exit through a descriptor that such a concurrently
/// started child can inherit, and then waits for that child instead (seen: openssl left defunct, a
/// TLS test hung under load); `waitpid` waits for exactly this process.
public func spawnAndWait(_ executable: String, _ arguments: [String], outputPath: String? = nil) throws -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid = pid_t()
    let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
    guard spawned == 0 else {
        throw SpawnError(description: "cannot start \(executable): \(String(cString: strerror(spawned)))")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 {
        guard errno == EINTR else { throw SpawnError(description: "waitpid \(executable): \(String(cString: strerror(errno)))") }
    }
    // WIFEXITED / WEXITSTATUS / WTERMSIG are C macros.
    let signal = status & 0x7f
    return signal == 0 ? (status >> 8) & 0xff : 128 + signal
}
