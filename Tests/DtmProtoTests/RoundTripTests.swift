import DtmProto
import Testing

@Suite("Round trip")
struct RoundTripTests {
    @Test("encode then decode gives the same value", arguments: samples.indices)
    func roundTrip(index: Int) throws {
        try check(samples[index])
    }

    private func check<M: ProtoMessage>(_ message: M) throws {
        let bytes = message.encode()
        let decoded = try M(decoding: bytes)
        #expect(decoded == message, "\(label(message))")
        #expect(decoded.encode() == bytes, "re-encoding \(label(message)) changed the bytes")
    }

    @Test("every sample decodes from an ArraySlice and from raw bytes too", arguments: samples.indices)
    func otherByteContainers(index: Int) throws {
        try checkContainers(samples[index])
    }

    private func checkContainers<M: ProtoMessage>(_ message: M) throws {
        let bytes = message.encode()
        let framed = [0, 0, 0, 0, 0] + bytes + [0xaa]
        #expect(try M(decoding: framed[5..<(framed.count - 1)]) == message)
        #expect(try bytes.withUnsafeBytes { raw throws(ProtoError) in try M(decoding: raw) } == message)
        #expect(try M(decoding: AnyCollection(bytes)) == message)
    }

    @Test func transOptionsAbsentAndPresentStayDistinct() throws {
        let absent = DtmRequest(gid: "g")
        let present = DtmRequest(gid: "g", transOptions: DtmTransOptions())
        #expect(absent.encode() != present.encode())
        #expect(try DtmRequest(decoding: absent.encode()).transOptions == nil)
        #expect(try DtmRequest(decoding: present.encode()).transOptions == DtmTransOptions())
    }

    @Test func nestedTransactionAbsentAndPresentStayDistinct() throws {
        #expect(try DtmProgressesReply(decoding: DtmProgressesReply().encode()).transaction == nil)
        let present = DtmProgressesReply(transaction: DtmTransaction())
        #expect(try DtmProgressesReply(decoding: present.encode()).transaction == DtmTransaction())
    }

    @Test func mapsEncodeDeterministically() {
        let a = DtmBranchRequest(data: ["b": "2", "a": "1", "c": "3"])
        var b = DtmBranchRequest()
        for key in ["c", "a", "b"] { b.data[key] = a.data[key] }
        #expect(a.encode() == b.encode())
    }

    @Test func repeatedBytesKeepEmptyElementsAndOrder() throws {
        let request = DtmRequest(binPayloads: [[], nonUTF8, [], [0]])
        #expect(try DtmRequest(decoding: request.encode()).binPayloads == [[], nonUTF8, [], [0]])
    }

    /// protobuf-c strings are C strings: encoding cuts at the first NUL (documented, so callers
    /// know not to put NUL in an id); decoding refuses a NUL instead of cutting silently.
    @Test func stringsEndAtTheirFirstNUL() throws {
        #expect(DtmGidReply(gid: "a\u{0}b").encode() == [0x0a, 0x01, 0x61])
        #expect(throws: ProtoError.invalidString(message: "dtmgimp.DtmGidReply", field: "Gid", reason: "contains NUL")) {
            try DtmGidReply(decoding: [0x0a, 0x03, 0x61, 0x00, 0x62])
        }
    }

    @Test func invalidUTF8InAStringIsRefused() throws {
        #expect(throws: ProtoError.invalidString(message: "dtmgimp.DtmGidReply", field: "Gid",
                                                 reason: "is not valid UTF-8")) {
            try DtmGidReply(decoding: [0x0a, 0x02, 0x61, 0xff])
        }
    }

    @Test func protoNamesComeFromTheDescriptors() {
        #expect(DtmRequest.protoName == "dtmgimp.DtmRequest")
        #expect(DtmTransOptions.protoName == "dtmgimp.DtmTransOptions")
        #expect(BusiReqGrpc.protoName == "busi.ReqGrpc")
        #expect(WorkflowData.protoName == "workflow.WorkflowData")
        #expect(Empty.protoName == "google.protobuf.Empty")
    }
}
