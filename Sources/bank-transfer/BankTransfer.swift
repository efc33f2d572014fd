// The bank-transfer quick start, written with DtmClient (README "The Swift SDK").
//
// Two services, each with its own SQLite database: "out" holds Alice's account, "in" holds
// Bob's. A saga moves money: TransOut debits Alice, TransIn credits Bob; each has a compensation,
// and every handler runs behind the sub-transaction barrier. The first transfer succeeds; the
// second is refused by TransIn (Bob's account is frozen) and the coordinator compensates it.
//
// Run a coordinator (`swift run dtm`), then `swift run bank-transfer [--dtm host:port]`.
import DtmClient
import DtmGRPC
import DtmNet
import Foundation
import Logging

/// One service: an account table in its own SQLite file, and the branch handlers.
struct AccountService {
    let name: String
    let account: String
    let database: SQLiteBarrierDatabase

    init(name: String, account: String, directory: URL) async throws {
        self.name = name
        self.account = account
        database = try SQLiteBarrierDatabase(path: directory.appendingPathComponent("\(name).db").path)
        try await database.execute("CREATE TABLE IF NOT EXISTS account (name TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
        try await database.execute("INSERT OR REPLACE INTO account VALUES (?, 100)", [.text(account)])
    }

    func balance() async throws -> Int64 {
        try await database.query("SELECT balance FROM account WHERE name = ?", [.text(account)]).first?.first?.int ?? 0
    }

    /// Registers `/bank.<Name>/<action>` (adds `sign × amount`, refused when `refuses` says so)
    /// and `/bank.<Name>/<action>Revert`, its compensation.
    func register(on router: inout GRPCRouter, action: String, sign: Int64,
                  refuses: @escaping @Sendable (BusiReqGrpc) -> Bool) {
        let service = self
        router.registerBranch("/bank.\(name)/\(action)", BusiReqGrpc.self) { transfer, request in
            if refuses(transfer) { throw DtmClientError.failure("\(action): account \(service.account) is frozen") }
            try await service.move(sign * transfer.amount, request, action)
            return Empty()
        }
        router.registerBranch("/bank.\(name)/\(action)Revert", BusiReqGrpc.self) { transfer, request in
            try await service.move(-sign * transfer.amount, request, action + "Revert")
            return Empty()
        }
    }

    /// Adds `delta` to the balance behind the barrier: a repeated call, a compensation whose
    /// action never ran, or an action after its compensation changes nothing.
    func move(_ delta: Int64, _ request: BranchRequest, _ method: String) async throws {
        var barrier = request.barrier
        let account = self.account
        let ran = try await barrier.call(database) { transaction in
            let changed = try transaction.execute(
                "UPDATE account SET balance = balance + ? WHERE name = ? AND balance + ? >= 0",
                [.int(delta), .text(account), .int(delta)])
            // Refused inside the transaction: the barrier rows roll back with it.
            if changed == 0 { throw DtmClientError.failure("\(method): insufficient balance in \(account)") }
            return true
        }
        if ran == nil {
            print("  \(name): \(method) \(request.info.op) skipped by the barrier")
        } else {
            print("  \(name): \(method) \(delta > 0 ? "+" : "")\(delta) (\(request.info.op) of \(request.info.gid))")
        }
    }
}

@main
struct BankTransfer {
    static func main() async {
        var dtm = "127.0.0.1:36790"
        var callTimeout = Duration.seconds(10)
        var arguments = CommandLine.arguments.dropFirst()
        while let argument = arguments.popFirst() {
            switch (argument, arguments.popFirst()) {
            case ("--dtm", let value?):
                dtm = value
            case ("--timeout", let value?) where Int(value).map({ $0 > 0 }) == true:
                callTimeout = .seconds(Int(value) ?? 10)
            default:
                print("usage: bank-transfer [--dtm host:port] [--timeout seconds]   (the coordinator's gRPC address;"
                      + " how long a call to it may take, 10 s by default)")
                exit(2)
            }
        }
        do {
            exit(try await run(dtm: dtm, callTimeout: callTimeout) ? 0 : 1)
        } catch {
            print("error: \(error) (is a coordinator running at \(dtm)? start one with `swift run dtm`)")
            exit(1)
        }
    }

    /// Runs both transfers; true when the final balances are the expected 70 / 130.
    static func run(dtm: String, callTimeout: Duration) async throws -> Bool {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bank-transfer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)

        let out = try await AccountService(name: "TransOutService", account: "alice", directory: directory)
        let into = try await AccountService(name: "TransInService", account: "bob", directory: directory)
        var outRouter = GRPCRouter()
        var inRouter = GRPCRouter()
        out.register(on: &outRouter, action: "TransOut", sign: -1) { $0.transOutResult == "FAILURE" }
        into.register(on: &inRouter, action: "TransIn", sign: 1) { $0.transInResult == "FAILURE" }
        var logger = Logger(label: "bank-transfer")
        logger.logLevel = .warning
        let outServer = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: outRouter, logger: logger)
        let inServer = try await GRPCServer.start(host: "127.0.0.1", port: 0, router: inRouter, logger: logger)
        let client = DtmClient(.grpc(dtm), callTimeout: callTimeout)
        let bank = Bank(client: client, out: out, into: into,
                        outTarget: "127.0.0.1:\(outServer.port)", inTarget: "127.0.0.1:\(inServer.port)")
        let result: Result<Bool, any Error>
        do {
            try await bank.printBalances("start")
            try await bank.transfer(30, frozen: false)
            try await bank.printBalances("after transfer 1")
            try await bank.transfer(50, frozen: true)
            try await bank.printBalances("after transfer 2")
            let alice = try await out.balance()
            let bob = try await into.balance()
            if alice != 70 || bob != 130 { print("unexpected final balances") }
            result = .success(alice == 70 && bob == 130)
        } catch {
            result = .failure(error)
        }
        await client.shutdown()
        await outServer.shutdown(gracePeriod: .milliseconds(200))
        await inServer.shutdown(gracePeriod: .milliseconds(200))
        try? FileManager.default.removeItem(at: directory)
        return try result.get()
    }
}

/// The client side: sagas moving money from Alice (TransOutService) to Bob (TransInService).
struct Bank {
    let client: DtmClient
    let out: AccountService
    let into: AccountService
    let outTarget: String
    let inTarget: String

    func printBalances(_ title: String) async throws {
        print("\(title): alice \(try await out.balance()), bob \(try await into.balance())")
    }

    /// A saga moving `amount`; with wait_result, submit returns once the coordinator has finished it.
    func transfer(_ amount: Int64, frozen: Bool) async throws {
        let gid = try await client.newGid()
        let request = BusiReqGrpc(amount: amount, transInResult: frozen ? "FAILURE" : "")
        var saga = Saga(client, gid: gid, options: TransOptions(waitResult: true))
        saga.add(action: "\(outTarget)/bank.TransOutService/TransOut",
                 compensate: "\(outTarget)/bank.TransOutService/TransOutRevert", payload: request)
        saga.add(action: "\(inTarget)/bank.TransInService/TransIn",
                 compensate: "\(inTarget)/bank.TransInService/TransInRevert", payload: request)
        print("transfer \(amount) from alice to bob (gid \(gid))\(frozen ? ", bob's account frozen" : "")")
        do {
            try await saga.submit()
            print("  -> succeeded")
        } catch {
            // (A `catch let error where ...` clause here crashes the Swift 6.3.1 compiler.)
            guard error.isFailure else { throw error }
            print("  -> rolled back: \(error)")
        }
    }
}
