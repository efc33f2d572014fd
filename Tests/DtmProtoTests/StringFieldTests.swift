import DtmProto
import Testing

/// proto3 strings must be UTF-8; protobuf-c checks nothing and cuts C strings at NUL. A gid with
/// a NUL byte was stored cut short, colliding with another client's gid (issue 8, finding 5).
@Suite("String fields")
struct StringFieldTests {
    /// Field 1 (Gid) of DtmRequest holding `bytes`, then TransType "saga".
    static func request(gid bytes: [UInt8]) -> [UInt8] {
        [0x0A, UInt8(bytes.count)] + bytes + [0x12, 0x04] + Array("saga".utf8)
    }

    @Test("NUL or invalid UTF-8 in a string field is refused, naming the field", arguments: [
        ([0x61, 0x00, 0x62] as [UInt8], "contains NUL"),
        ([0x61, 0xFF, 0x62], "is not valid UTF-8"),
        ([0xC3], "is not valid UTF-8"),
        ([0xED, 0xA0, 0x80], "is not valid UTF-8"),  // an encoded surrogate
    ])
    func refused(_ gid: [UInt8], _ reason: String) {
        #expect(throws: ProtoError.invalidString(message: "dtmgimp.DtmRequest", field: "Gid", reason: reason)) {
            try DtmRequest(decoding: Self.request(gid: gid))
        }
    }

    @Test func nestedMapValuesAreChecked() {
        // TransOptions (3) { BranchHeaders (5) { key "k", value "\0" } }
        let entry: [UInt8] = [0x0A, 0x01, 0x6B, 0x12, 0x01, 0x00]
        let headers: [UInt8] = [0x2A, UInt8(entry.count)] + entry
        let bytes: [UInt8] = [0x1A, UInt8(headers.count)] + headers
        #expect(throws: ProtoError.invalidString(message: "dtmgimp.DtmRequest", field: "TransOptions.BranchHeaders.value",
                                                 reason: "contains NUL")) {
            try DtmRequest(decoding: bytes)
        }
    }

    @Test func soundStringsStillDecode() throws {
        let request = try DtmRequest(decoding: Self.request(gid: Array("gid-é-1".utf8)))
        #expect(request.gid == "gid-é-1")
        #expect(request.transType == "saga")
        let bytes = DtmRequest(gid: "g", transType: "msg", transOptions: DtmTransOptions(branchHeaders: ["a": "b"]),
                               binPayloads: [[0x00, 0xFF]], reqExtra: ["status": "succeed"]).encode()
        #expect(try DtmRequest(decoding: bytes).binPayloads == [[0x00, 0xFF]])
    }
}
