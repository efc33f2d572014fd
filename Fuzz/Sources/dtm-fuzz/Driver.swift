import DtmFuzz
#if FUZZING
import CLibFuzzer
#endif
import Foundation

// dtm-fuzz TARGET [args...]
//
// Built with `-sanitize=fuzzer` and `-DFUZZING` (tools/fuzz), it is a libFuzzer binary for
// TARGET: the remaining arguments are libFuzzer's (corpus directories, -max_total_time=, ...).
// In an ordinary build it replays files or directories of inputs through TARGET, to
// reproduce a finding without the fuzzing toolchain.
//   dtm-fuzz --list                 the targets
//   dtm-fuzz --write-seeds DIR      the seed corpus, DIR/<target>/<name>

/// The target the libFuzzer callback runs; set once before the driver starts.
nonisolated(unsafe) private var selected: FuzzTarget?

@main
enum Driver {
    static func main() {
        let arguments = CommandLine.arguments
        guard arguments.count >= 2 else { usage() }
        switch arguments[1] {
        case "--list":
            for target in FuzzTarget.all { print("\(target.name)\t\(target.summary)") }
            return
        case "--write-seeds":
            guard arguments.count == 3 else { usage() }
            do {
                let count = try Seeds.write(to: arguments[2])
                print("wrote \(count) seeds under \(arguments[2])")
            } catch {
                fail("cannot write seeds: \(error)")
            }
            return
        default:
            break
        }
        #if FUZZING
        // libFuzzer re-runs this program without our first argument for -merge, -fork and
        // -jobs; the environment carries the target to those children.
        let inherited = ProcessInfo.processInfo.environment["DTM_FUZZ_TARGET"].flatMap(FuzzTarget.named)
        let named = FuzzTarget.named(arguments[1])
        guard let target = named ?? inherited else { fail("unknown target '\(arguments[1])'; see --list") }
        setenv("DTM_FUZZ_TARGET", target.name, 1)
        selected = target
        // libFuzzer parses argv itself: hand it our program name and its own arguments only.
        let own = named == nil ? arguments.dropFirst(1) : arguments.dropFirst(2)
        var argv: [UnsafeMutablePointer<CChar>?] = ([arguments[0]] + own).map { strdup($0) }
        argv.append(nil)
        var argc = CInt(argv.count - 1)
        let status = argv.withUnsafeMutableBufferPointer { buffer in
            var pointer = buffer.baseAddress
            return LLVMFuzzerRunDriver(&argc, &pointer) { data, size in fuzzOneInput(data, size) }
        }
        exit(status)
        #else
        guard let target = FuzzTarget.named(arguments[1]) else { fail("unknown target '\(arguments[1])'; see --list") }
        replay(target, paths: Array(arguments.dropFirst(2)))
        #endif
    }

    static func replay(_ target: FuzzTarget, paths: [String]) {
        var failures = 0
        var count = 0
        for path in paths {
            for file in Corpus.files(at: path) {
                count += 1
                do {
                    try target.run(Corpus.read(file))
                } catch {
                    failures += 1
                    print("FAIL \(file): \(error)")
                }
            }
        }
        print("\(target.name): \(count) inputs, \(failures) failed")
        if failures > 0 { exit(1) }
    }

    static func usage() -> Never {
        fail("usage: dtm-fuzz TARGET [libFuzzer args | input files...] | --list | --write-seeds DIR")
    }

    static func fail(_ message: String) -> Never {
        printError(message)
        exit(2)
    }
}

#if FUZZING
/// libFuzzer's callback. Also exported under its well-known name: the toolchain's libFuzzer
/// archive links its own `main` object, which refers to it (our `main` still runs).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let target = selected else { return 0 }
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        try target.run(bytes)
    } catch {
        // libFuzzer saves the input as a crash when the process dies.
        printError("dtm-fuzz \(target.name): invariant failed: \(error)")
        abort()
    }
    return 0
}
#endif

private func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
