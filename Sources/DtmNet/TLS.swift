import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// A TLS file that cannot be used: unreadable, not PEM, a key that does not match its
/// certificate. The message names the file and what to fix.
public struct TLSSetupError: Error, CustomStringConvertible, Equatable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// The TLS identity of the coordinator's servers, as PEM files.
public struct ServerTLSConfig: Sendable, Equatable {
    /// The server certificate, followed by any intermediates.
    public var certificateFile: String
    /// The certificate's private key.
    public var privateKeyFile: String
    /// With a CA bundle, mutual TLS: a client must present a certificate it signed, or the
    /// handshake fails.
    public var clientCAFile: String?
    /// How often the files are checked for changes; nil checks only on SIGHUP or `reload()`.
    public var reloadInterval: Duration?
    /// Whether SIGHUP reloads the files (the process then no longer ends on SIGHUP).
    public var reloadOnSIGHUP: Bool

    public init(certificateFile: String, privateKeyFile: String, clientCAFile: String? = nil,
                reloadInterval: Duration? = .seconds(2), reloadOnSIGHUP: Bool = true) {
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
        self.clientCAFile = clientCAFile
        self.reloadInterval = reloadInterval
        self.reloadOnSIGHUP = reloadOnSIGHUP
    }

    var files: [String] { [certificateFile, privateKeyFile] + (clientCAFile.map { [$0] } ?? []) }
}

/// The current TLS contexts of a server: one per ALPN list (gRPC offers `h2`, the JSON API
/// `http/1.1`), all built from the same files. A reload builds new contexts and swaps them in at
/// once; connections already open keep the context they started with, new connections take the
/// new one. Files that cannot be used leave the previous contexts in place.
public final class ServerTLS: Sendable {
    public let config: ServerTLSConfig
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let watcher = NIOLockedValueBox<Watcher?>(nil)

    private struct State {
        var identity: Identity
        /// Built contexts by ALPN list; a reload rebuilds every list asked for so far.
        var contexts: [[String]: NIOSSLContext]
        /// The files as last loaded (or found unusable).
        var stamps: [FileStamp?]
        /// The files as the last poll saw them changed: loaded once they stay so for one more
        /// poll, so that a certificate and key rewritten one after the other load together.
        var changing: [FileStamp?]? = nil
    }

    private struct Identity {
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
        var clientCA: [NIOSSLCertificate]?
    }

    /// Dispatch sources are thread-safe but not marked Sendable; this one is only resumed and
    /// cancelled, under `watcher`'s lock or after taking it out.
    private struct Watcher: @unchecked Sendable {
        var task: Task<Void, Never>?
        var signal: (any DispatchSourceSignal)?
    }

    /// Loads the files; throws when they cannot be used (at start-up a bad file is an error).
    public init(_ config: ServerTLSConfig, logger: Logger) throws(TLSSetupError) {
        self.config = config
        self.logger = logger
        let stamps = config.files.map(FileStamp.init(path:))
        let identity = try Self.load(config)
        _ = try Self.makeContext(identity, applicationProtocols: [])
        self.state = NIOLockedValueBox(State(identity: identity, contexts: [:], stamps: stamps))
    }

    /// The certificate served to new connections (the leaf, first in the file).
    public var certificate: NIOSSLCertificate? { state.withLockedValue { $0.identity.chain.first } }

    /// The context for new connections that offer `applicationProtocols` by ALPN.
    public func context(applicationProtocols: [String]) throws(TLSSetupError) -> NIOSSLContext {
        let result: Result<NIOSSLContext, TLSSetupError> = state.withLockedValue { state in
            if let context = state.contexts[applicationProtocols] { return .success(context) }
            do throws(TLSSetupError) {
                let context = try Self.makeContext(state.identity, applicationProtocols: applicationProtocols)
                state.contexts[applicationProtocols] = context
                return .success(context)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Reads the files again and swaps in new contexts. With `onlyIfChanged` (the poll), does
    /// nothing unless a file changed since the last load and then stayed the same since the
    /// previous poll. Returns whether the contexts were replaced; files that cannot be used are
    /// logged as an error and the contexts in use stay.
    @discardableResult
    public func reload(onlyIfChanged: Bool = false) -> Bool {
        let stamps = config.files.map(FileStamp.init(path:))
        if onlyIfChanged {
            let settled = state.withLockedValue { state in
                if stamps == state.stamps {
                    state.changing = nil
                    return false
                }
                defer { state.changing = stamps }
                return state.changing == stamps
            }
            if !settled { return false }
        }
        do throws(TLSSetupError) {
            let identity = try Self.load(config)
            let lists = state.withLockedValue { Array($0.contexts.keys) }
            var contexts: [[String]: NIOSSLContext] = [:]
            for list in lists { contexts[list] = try Self.makeContext(identity, applicationProtocols: list) }
            if lists.isEmpty { _ = try Self.makeContext(identity, applicationProtocols: []) }
            state.withLockedValue { $0 = State(identity: identity, contexts: contexts, stamps: stamps) }
            logger.info("TLS certificate loaded; new connections use it", metadata: [
                "certificate": "\(identity.chain.first.map(String.init(describing:)) ?? "")"])
            return true
        } catch {
            // Remember these files so a bad version is reported once, not on every poll; any
            // further change (the rest of a rewrite) is tried again.
            state.withLockedValue { $0.stamps = stamps }
            logger.error("TLS files not reloaded; still serving the previous certificate", metadata: [
                "error": "\(error)"])
            return false
        }
    }

    /// Starts watching for changes: polling every `reloadInterval`, and on SIGHUP when
    /// configured. `stopWatching()` ends both.
    public func startWatching() {
        watcher.withLockedValue { watcher in
            guard watcher == nil else { return }
            var started = Watcher()
            if let interval = config.reloadInterval {
                started.task = Task { [weak self] in
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval)
                        guard let self, !Task.isCancelled else { return }
                        self.reload(onlyIfChanged: true)
                    }
                }
            }
            if config.reloadOnSIGHUP {
                signal(SIGHUP, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
                source.setEventHandler { [weak self] in
                    self?.logger.info("SIGHUP: reloading TLS files")
                    self?.reload()
                }
                source.resume()
                started.signal = source
            }
            watcher = started
        }
    }

    public func stopWatching() {
        let stopped = watcher.withLockedValue { watcher in
            defer { watcher = nil }
            return watcher
        }
        stopped?.task?.cancel()
        stopped?.signal?.cancel()
    }

    private static func load(_ config: ServerTLSConfig) throws(TLSSetupError) -> Identity {
        let chain = try certificates(config.certificateFile, what: "TLS certificate")
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: config.privateKeyFile, format: .pem)
        } catch {
            throw TLSSetupError("TLS private key \(config.privateKeyFile): cannot read a PEM private key (\(error))")
        }
        let clientCA = try config.clientCAFile.map { file throws(TLSSetupError) in
            try certificates(file, what: "TLS client CA bundle")
        }
        return Identity(chain: chain, key: key, clientCA: clientCA)
    }

    private static func makeContext(_ identity: Identity, applicationProtocols: [String])
        throws(TLSSetupError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: identity.chain.map { .certificate($0) }, privateKey: .privateKey(identity.key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = applicationProtocols
        if let clientCA = identity.clientCA {
            // A client certificate is required and must chain to the bundle; clients have no
            // host name to check.
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(clientCA)
            configuration.sendCANameList = true
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("TLS certificate and key cannot be used together (does the key belong to the certificate?): \(error)")
        }
    }
}

/// TLS settings of outbound connections (gRPC `grpcs://` branches, https branches).
public struct ClientTLSConfig: Sendable, Equatable {
    /// CA bundle (PEM) that server certificates must chain to; nil uses the system trust store.
    public var caFile: String?
    /// Client certificate (PEM) for servers that require mutual TLS; with `privateKeyFile`.
    public var certificateFile: String?
    public var privateKeyFile: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, privateKeyFile: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
    }

    /// Whether anything differs from the system defaults.
    public var isCustomized: Bool { self != ClientTLSConfig() }

    /// The client configuration: full verification (chain and host name or IP address).
    public func makeConfiguration(applicationProtocols: [String] = []) throws(TLSSetupError) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = applicationProtocols
        if let caFile {
            configuration.trustRoots = .certificates(try certificates(caFile, what: "CA bundle"))
        }
        switch (certificateFile, privateKeyFile) {
        case (nil, nil):
            break
        case (let certificateFile?, let privateKeyFile?):
            configuration.certificateChain = try certificates(certificateFile, what: "client certificate")
                .map { .certificate($0) }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: privateKeyFile, format: .pem))
            } catch {
                throw TLSSetupError("client private key \(privateKeyFile): cannot read a PEM private key (\(error))")
            }
        default:
            throw TLSSetupError("a client certificate needs both a certificate file and a private key file")
        }
        return configuration
    }

    public func makeContext(applicationProtocols: [String] = []) throws(TLSSetupError) -> NIOSSLContext {
        let configuration = try makeConfiguration(applicationProtocols: applicationProtocols)
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("client TLS settings cannot be used (does the key belong to the certificate?): \(error)")
        }
    }
}

/// The certificates of a PEM file; at least one.
private func certificates(_ file: String, what: String) throws(TLSSetupError) -> [NIOSSLCertificate] {
    let certificates: [NIOSSLCertificate]
    do {
        certificates = try NIOSSLCertificate.fromPEMFile(file)
    } catch {
        throw TLSSetupError("\(what) \(file): cannot read PEM certificates (\(error))")
    }
    guard !certificates.isEmpty else { throw TLSSetupError("\(what) \(file): no PEM certificate in the file") }
    return certificates
}

/// What tells a rewritten file from the one read before: modification time, size, inode.
private struct FileStamp: Equatable {
    var modified: Date?
    var size: Int?
    var inode: Int?

    init?(path: String) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        modified = attributes[.modificationDate] as? Date
        size = (attributes[.size] as? NSNumber)?.intValue
        inode = (attributes[.systemFileNumber] as? NSNumber)?.intValue
    }
}
