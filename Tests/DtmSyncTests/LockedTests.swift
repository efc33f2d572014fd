import DtmSync
import Foundation
import Testing

/// `Locked` is the lock of every module. tools/sanitize runs this suite under ThreadSanitizer:
/// with `Synchronization.Mutex` in its place, this contended loop is reported as a race there.
@Suite("Locked")
struct LockedTests {
    @Test("four threads contending for one lock lose no update")
    func contendedUpdatesAreExclusive() async {
        let counter = Locked((total: 0, window: [Int]()))
        let threads = 4, rounds = 50_000
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<threads {
                group.addTask {
                    // Plain threads, not the cooperative pool: they really run at once.
                    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                        Thread {
                            for k in 0..<rounds {
                                counter.withLock { state in
                                    state.total += 1
                                    state.window.append(t * rounds + k)
                                    if state.window.count > 32 { state.window.removeAll(keepingCapacity: true) }
                                }
                            }
                            done.resume()
                        }.start()
                    }
                }
            }
        }
        #expect(counter.withLock { $0.total } == threads * rounds)
    }

    @Test("a thrown error leaves the lock released and the value as the body left it")
    func throwingBodyReleasesTheLock() {
        struct Refused: Error {}
        let value = Locked(1)
        #expect(throws: Refused.self) {
            try value.withLock { (v: inout Int) throws(Refused) -> Void in
                v = 2
                throw Refused()
            }
        }
        #expect(value.withLock { $0 } == 2)
    }
}
