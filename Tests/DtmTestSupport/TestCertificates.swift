import Foundation

/// A test CA and certificates it signs, made with the `openssl` command line in a directory of
/// the test's own (EC P-256 keys, valid two days). Server certificates name 127.0.0.1 and
/// localhost; client certificates are for client authentication.
public struct TestCA: Sendable {
    /// The CA's certificate (PEM): the trust root clients and servers are given.
    public let certificate: String
    let key: String
    let directory: URL

    /// A certificate and its private key (PEM files), and the serial number it was given.
    public struct Issued: Sendable {
        public let certificate: String
        public let key: String
        /// Upper-case hex, as `openssl x509 -serial` and Python's `getpeercert()` print it.
        public let serial: String
        public let commonName: String
    }

    /// Makes a new CA named `name` in `directory` (created if missing).
    public static func make(in directory: URL, name: String = "dtm-test-ca") throws -> TestCA {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let key = directory.appendingPathComponent("\(name).key").path
        let certificate = directory.appendingPathComponent("\(name).pem").path
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", key, "-out", certificate, "-days", "2", "-subj", "/CN=\(name)",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        return TestCA(certificate: certificate, key: key, directory: directory)
    }

    /// A server certificate for 127.0.0.1 and localhost.
    public func issueServer(_ name: String) throws -> Issued {
        try issue(name, extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    }

    /// A client certificate (mutual TLS).
    public func issueClient(_ name: String) throws -> Issued {
        try issue(name, extensions: "extendedKeyUsage=clientAuth\n")
    }

    private func issue(_ name: String, extensions: String) throws -> Issued {
        let base = directory.appendingPathComponent(name).path
        let serial = String(UInt64.random(in: 1 << 60 ..< 1 << 62), radix: 16, uppercase: true)
        let extensionFile = base + ".ext"
        try ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
             + "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + extensions)
            .write(toFile: extensionFile, atomically: true, encoding: .utf8)
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/CN=\(name)"])
        try openssl(["x509", "-req", "-in", base + ".csr", "-CA", certificate, "-CAkey", key,
                     "-set_serial", "0x" + serial, "-days", "2", "-extfile", extensionFile, "-out", base + ".pem"])
        return Issued(certificate: base + ".pem", key: base + ".key", serial: serial, commonName: name)
    }
}

/// `openssl` could not make a certificate.
public struct OpenSSLFailed: Error, CustomStringConvertible {
    public let description: String
}

/// Runs openssl to its end (see `spawnAndWait` for why not Foundation's `Process`).
private func openssl(_ arguments: [String]) throws {
    let outputURL = FileManager.default.temporaryDirectory.appendingPathComponent("dtm-openssl-\(UUID().uuidString).out")
    defer { try? FileManager.default.removeItem(at: outputURL) }
    let status = try spawnAndWait("/usr/bin/openssl", arguments, outputPath: outputURL.path)
    guard status == 0 else {
        let output = (try? String(contentsOf: outputURL, encoding: .utf8)) ?? ""
        throw OpenSSLFailed(description: "openssl \(arguments.joined(separator: " ")) exited \(status): \(output)")
    }
}
