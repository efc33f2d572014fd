import DtmEngine
import DtmSync
import Foundation
import JWTKit
import Logging

/// Client authentication of both APIs (`--auth-tokens`, `--auth-jwt-*`); off unless set.
public struct AuthConfig: Sendable {
    /// Bearer tokens, one a line (`#` comments and blank lines ignored); several lines allow a
    /// rotation. Re-read when the file changes.
    public var tokensFile: String?
    /// HS256 JWTs: a file holding the shared secret (at least 32 bytes; one trailing newline ignored).
    public var jwtHS256SecretFile: String?
    /// RS256 JWTs: a PEM file with the RSA public key (or a certificate holding it).
    public var jwtRS256PublicKeyFile: String?
    /// How often the tokens file's modification time is looked at (on a request, at most this often).
    public var reloadInterval: Duration

    public init(tokensFile: String? = nil, jwtHS256SecretFile: String? = nil, jwtRS256PublicKeyFile: String? = nil,
                reloadInterval: Duration = .seconds(1)) {
        self.tokensFile = tokensFile
        self.jwtHS256SecretFile = jwtHS256SecretFile
        self.jwtRS256PublicKeyFile = jwtRS256PublicKeyFile
        self.reloadInterval = reloadInterval
    }

    /// Whether any way of authenticating is configured.
    public var isEnabled: Bool { tokensFile != nil || jwtHS256SecretFile != nil || jwtRS256PublicKeyFile != nil }
}

/// The security settings of a coordinator; each is off by default, as in DTM.
public struct SecurityConfig: Sendable {
    /// Client authentication; nil accepts every client.
    public var auth: AuthConfig?
    /// Where branch and back-check calls may go; nil allows any host. Schemes are always
    /// limited to http, https and gRPC, and redirects are never followed.
    public var branchAllowList: BranchAllowList?
    /// `/query` and `/all` show `branch_headers` values and URL userinfo as `[redacted]`.
    public var redactQuery: Bool

    public init(auth: AuthConfig? = nil, branchAllowList: BranchAllowList? = nil, redactQuery: Bool = false) {
        self.auth = auth
        self.branchAllowList = branchAllowList
        self.redactQuery = redactQuery
    }
}

/// Who a request comes from, as far as what it may do is concerned.
public struct Principal: Sendable, Equatable {
    /// nil: every gid and every operator route. Set (JWT claim `dtm_gid_prefix`): only gids
    /// starting with it; NewGid answers gids with it; listing and topic routes are refused.
    public var gidPrefix: String?

    public static let unrestricted = Principal(gidPrefix: nil)

    public init(gidPrefix: String?) { self.gidPrefix = gidPrefix }

    /// Refuses a gid outside the prefix.
    public func permit(gid: String) throws(DtmError) {
        guard let gidPrefix, !gid.hasPrefix(gidPrefix) else { return }
        throw DtmError.permissionDenied("gid: outside this client's prefix '\(gidPrefix)' (JWT claim \(DtmClaims.gidPrefixClaim))")
    }

    /// Refuses operations that span every transaction (listing, topics, cron resets) to a
    /// client limited to a prefix.
    public func permitUnrestricted(_ operation: String) throws(DtmError) {
        guard let gidPrefix else { return }
        throw DtmError.permissionDenied(
            "\(operation): needs a token that is not limited to a gid prefix (this one is limited to '\(gidPrefix)')")
    }

    /// A new gid for this client.
    func newGid(_ gids: GidGenerator) -> String { (gidPrefix ?? "") + gids.next() }
}

/// Why a request was not authenticated. The messages never include the presented token.
public enum AuthFailure: Error, Equatable, Sendable, CustomStringConvertible {
    case missing
    case malformed
    case invalid
    case expired

    public var description: String {
        switch self {
        case .missing: "authentication required: send the header 'Authorization: Bearer <token>'"
        case .malformed: "authentication required: the Authorization header must be 'Bearer <token>'"
        case .invalid: "invalid token"
        case .expired: "token expired or not yet valid"
        }
    }
}

/// The JWT claims swift-dtm reads. `exp` and `nbf` are checked when present.
struct DtmClaims: JWTPayload {
    static let gidPrefixClaim = "dtm_gid_prefix"

    var exp: ExpirationClaim?
    var nbf: NotBeforeClaim?
    var sub: SubjectClaim?
    var gidPrefix: String?

    enum CodingKeys: String, CodingKey {
        case exp, nbf, sub
        case gidPrefix = "dtm_gid_prefix"
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp?.verifyNotExpired()
        try nbf?.verifyNotBefore()
    }
}

/// A configuration problem found at start-up; the message names the file and the fix.
public struct AuthConfigError: Error, CustomStringConvertible {
    public let description: String
}

/// Checks `Authorization: Bearer …` (HTTP header or gRPC metadata) against the tokens file and
/// the JWT key. Static tokens are compared in constant time; the file is re-read when its
/// modification time, size or inode changes (a failed re-read keeps the tokens it had).
public final class Authenticator: Sendable {
    private struct TokenFile: Sendable {
        var tokens: [[UInt8]] = []
        var stamp: FileStamp?
        var checked: ContinuousClock.Instant
    }

    private struct FileStamp: Equatable, Sendable {
        var modified: Date?
        var size: Int?
        var inode: Int?
    }

    private let config: AuthConfig
    private let file: Locked<TokenFile>
    private let jwtKeys: JWTKeyCollection?
    private let jwtAlgorithm: String?
    private let logger: Logger

    private init(config: AuthConfig, tokens: [[UInt8]], stamp: FileStamp?, jwtKeys: JWTKeyCollection?,
                 jwtAlgorithm: String?, logger: Logger) {
        self.config = config
        self.file = Locked(TokenFile(tokens: tokens, stamp: stamp, checked: .now))
        self.jwtKeys = jwtKeys
        self.jwtAlgorithm = jwtAlgorithm
        self.logger = logger
    }

    /// Reads the files `config` names; throws when one cannot be read or makes no sense.
    public static func make(_ config: AuthConfig, logger: Logger) async throws -> Authenticator {
        var tokens: [[UInt8]] = []
        var stamp: FileStamp?
        if let path = config.tokensFile {
            stamp = Self.stamp(path)
            do {
                tokens = try Self.readTokens(path)
            } catch {
                throw AuthConfigError(description: "--auth-tokens \(path): \(error.localizedDescription)")
            }
            if tokens.isEmpty {
                logger.warning("the tokens file holds no token: every authenticated request will be refused",
                               metadata: ["file": "\(path)"])
            }
        }
        if config.jwtHS256SecretFile != nil && config.jwtRS256PublicKeyFile != nil {
            throw AuthConfigError(description: "choose one of --auth-jwt-hs256-secret and --auth-jwt-rs256-public-key")
        }
        var keys: JWTKeyCollection?
        var algorithm: String?
        if let path = config.jwtHS256SecretFile {
            var secret = try Self.read(path, option: "--auth-jwt-hs256-secret")
            if secret.last == UInt8(ascii: "\n") { secret.removeLast() }
            if secret.last == UInt8(ascii: "\r") { secret.removeLast() }
            guard secret.count >= 32 else {
                throw AuthConfigError(description: "--auth-jwt-hs256-secret \(path): the secret must be at least 32 bytes")
            }
            keys = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
            algorithm = "HS256"
        }
        if let path = config.jwtRS256PublicKeyFile {
            let pem = try Self.read(path, option: "--auth-jwt-rs256-public-key")
            let key: Insecure.RSA.PublicKey
            do {
                let text = String(decoding: pem, as: UTF8.self)
                key = text.contains("CERTIFICATE") ? try Insecure.RSA.PublicKey(certificatePEM: text)
                                                   : try Insecure.RSA.PublicKey(pem: text)
            } catch {
                throw AuthConfigError(description: "--auth-jwt-rs256-public-key \(path): not an RSA public key PEM (\(error))")
            }
            keys = await JWTKeyCollection().add(rsa: key, digestAlgorithm: .sha256)
            algorithm = "RS256"
        }
        return Authenticator(config: config, tokens: tokens, stamp: stamp, jwtKeys: keys, jwtAlgorithm: algorithm,
                             logger: logger)
    }

    /// The principal an `Authorization` value proves, or why it proves none.
    public func authenticate(_ authorization: String?) async -> Result<Principal, AuthFailure> {
        guard let authorization, !authorization.isEmpty else { return .failure(.missing) }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return .failure(.malformed) }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        guard !token.isEmpty else { return .failure(.malformed) }
        if matchesStaticToken(Array(token.utf8)) { return .success(.unrestricted) }
        guard let jwtKeys, token.utf8.count(where: { $0 == UInt8(ascii: ".") }) == 2 else { return .failure(.invalid) }
        guard headerAlgorithm(of: token) == jwtAlgorithm else { return .failure(.invalid) }
        do {
            let claims = try await jwtKeys.verify(token, as: DtmClaims.self)
            let prefix = claims.gidPrefix.flatMap { $0.isEmpty ? nil : $0 }
            return .success(Principal(gidPrefix: prefix))
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            return .failure(.expired)
        } catch {
            return .failure(.invalid)
        }
    }

    /// The JWT header's `alg`: only the configured algorithm is accepted (no `none`, no HS256
    /// signed with an RSA public key as the secret).
    private func headerAlgorithm(of token: String) -> String? {
        guard let header = token.split(separator: ".").first else { return nil }
        var base64 = header.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.utf8.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), case .object(let object)? = JSONValue.parse(Array(data)),
              case .string(let algorithm)? = object["alg"] else { return nil }
        return algorithm
    }

    /// Compares against every token without stopping early; the time taken depends only on
    /// the presented token's length and the number of tokens.
    private func matchesStaticToken(_ presented: [UInt8]) -> Bool {
        guard config.tokensFile != nil else { return false }
        let tokens = currentTokens()
        var found: UInt8 = 0
        for token in tokens {
            found |= Self.constantTimeEquals(token, presented) ? 1 : 0
        }
        return found == 1
    }

    static func constantTimeEquals(_ expected: [UInt8], _ presented: [UInt8]) -> Bool {
        guard !expected.isEmpty else { return false }
        var difference = expected.count ^ presented.count
        for index in presented.indices {
            difference |= Int(expected[index % expected.count] ^ presented[index])
        }
        return difference == 0
    }

    /// The tokens, re-read first when the file changed and the last look is `reloadInterval` old.
    private func currentTokens() -> [[UInt8]] {
        guard let path = config.tokensFile else { return [] }
        let now = ContinuousClock.now
        let (due, known) = file.withLock { state -> (Bool, FileStamp?) in
            guard now - state.checked >= config.reloadInterval else { return (false, state.stamp) }
            state.checked = now
            return (true, state.stamp)
        }
        if due {
            let stamp = Self.stamp(path)
            if stamp != known {
                do {
                    let tokens = try Self.readTokens(path)
                    file.withLock {
                        $0.tokens = tokens
                        $0.stamp = stamp
                    }
                    logger.info("tokens file re-read", metadata: ["file": "\(path)", "tokens": "\(tokens.count)"])
                } catch {
                    logger.warning("cannot re-read the tokens file; keeping the tokens read before",
                                   metadata: ["file": "\(path)", "error": "\(error.localizedDescription)"])
                }
            }
        }
        return file.withLock { $0.tokens }
    }

    private static func stamp(_ path: String) -> FileStamp? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        return FileStamp(modified: attributes[.modificationDate] as? Date, size: (attributes[.size] as? NSNumber)?.intValue,
                         inode: (attributes[.systemFileNumber] as? NSNumber)?.intValue)
    }

    /// One token a line; surrounding whitespace, blank lines and `#` comment lines ignored.
    static func readTokens(_ path: String) throws -> [[UInt8]] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            .map { Array($0.utf8) }
    }

    private static func read(_ path: String, option: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AuthConfigError(description: "\(option) \(path): cannot read the file")
        }
        return Array(data)
    }
}
