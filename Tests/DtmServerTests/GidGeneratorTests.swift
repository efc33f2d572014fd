import DtmSync
import Testing
@testable import DtmServer

@Suite struct GidGeneratorTests {
    @Test func idsHaveDtmShape() {
        let gid = GidGenerator().next()
        #expect(gid.count == 22)
        #expect(gid.utf8.allSatisfy { GidGenerator.alphabet.contains($0) })
    }

    @Test func idsSortByCreationEvenWithinOneMillisecond() {
        let gids = GidGenerator(millisecondsSinceEpoch: { 1_780_000_000_000 })
        let ids = (0..<70_000).map { _ in gids.next() }  // more than the 16-bit sequence
        #expect(ids == ids.sorted())
        #expect(Set(ids).count == ids.count)
    }

    @Test func aClockGoingBackDoesNotBreakOrder() {
        let now = Locked<UInt64>(2_000_000_000_000)
        let gids = GidGenerator(millisecondsSinceEpoch: { now.withLock { $0 } })
        let first = gids.next()
        now.withLock { $0 -= 5_000 }
        let second = gids.next()
        #expect(first < second)
    }

    @Test func encodingIsFixedWidthAndOrdered() {
        #expect(GidGenerator.encode(high: 0, low: 0) == String(repeating: "2", count: 22))
        #expect(GidGenerator.encode(high: 0, low: 57) == String(repeating: "2", count: 20) + "32")
        let maxID = GidGenerator.encode(high: .max, low: .max)
        #expect(maxID.count == 22)
        #expect(GidGenerator.encode(high: 1, low: 0) > GidGenerator.encode(high: 0, low: .max))
    }
}
