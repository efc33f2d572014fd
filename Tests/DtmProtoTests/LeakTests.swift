#if canImport(Glibc)
import DtmProto
import Glibc
import Testing

/// Resident set size in bytes, from /proc/self/statm (Linux).
private func residentBytes() -> Int {
    guard let file = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(file) }
    var buffer = [UInt8](repeating: 0, count: 128)
    let count = fread(&buffer, 1, buffer.count, file)
    // "size resident shared ...", in pages.
    let fields = String(decoding: buffer.prefix(count), as: UTF8.self).split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * sysconf(Int32(_SC_PAGESIZE))
}

/// Opt-in (`DTM_PROTO_LEAK_CHECK=1`): RSS is process-wide, so this only means something when
/// run alone, e.g. `DTM_PROTO_LEAK_CHECK=1 swift test --filter LeakTests`.
@Suite("Leaks", .enabled(if: getenv("DTM_PROTO_LEAK_CHECK") != nil))
struct LeakTests {
    @Test func tenThousandRoundsKeepRSSFlat() throws {
        let request = DtmRequest(
            gid: fullRequest.gid, transOptions: fullOptions, binPayloads: [Array(oneMiB.prefix(16 << 10))],
            reqExtra: fullRequest.reqExtra)
        let reply = DtmProgressesReply(
            transaction: DtmTransaction(gid: "g", status: "s"),
            progresses: Array(repeating: DtmProgress(status: "succeed", binData: nonUTF8, op: "action"), count: 8))
        let truncated = Array(request.encode().dropLast())

        func round() throws {
            #expect(try DtmRequest(decoding: request.encode()) == request)
            #expect(try DtmProgressesReply(decoding: reply.encode()) == reply)
            #expect(throws: ProtoError.self) { try DtmRequest(decoding: truncated) }
        }
        for _ in 0..<1000 { try round() }
        let before = residentBytes()
        for _ in 0..<10_000 { try round() }
        let growth = residentBytes() - before
        print("RSS before \(before >> 10) KiB, growth after 10k rounds \(growth >> 10) KiB")
        // One leaked 16 KiB payload copy per round would be 160 MiB.
        #expect(growth < 4 << 20)
    }
}
#endif
