import DtmEngine
import Foundation

/// Msg topics (spec 8.1): subscriber lists kept in the store's kv table (cat `topics`,
/// key = topic name, value = `[{"url":…,"remark":…}]`), changed with optimistic versions.
/// Shared by the HTTP API and the gRPC Subscribe / Unsubscribe / DeleteTopic methods; the
/// engine reads the same rows when a msg step names `topic://<name>`.
public struct TopicRegistry: Sendable {
    public static let category = "topics"

    let store: any TransactionStore
    let clock: any DtmClock
    /// Changes made through this registry take turns, so they never conflict with each
    /// other; the version check still guards against other coordinators on the same store.
    private let turns = Turnstile()

    /// Read-modify-write attempts before a concurrently changing topic is reported.
    static let attempts = 8

    public init(store: any TransactionStore, clock: any DtmClock = SystemClock()) {
        self.store = store
        self.clock = clock
    }

    /// Adds `url` to the topic, creating the topic (version 1) if it does not exist.
    public func subscribe(topic: String, url: String, remark: String) async throws(DtmError) {
        try Self.check(topic: topic, url: url)
        try await update(topic) { (subscribers: [TopicSubscriber]?) throws(DtmError) in
            var list = subscribers ?? []
            // DTM's texts, word for word: SDK tests match them.
            if list.contains(where: { $0.url == url }) { throw DtmError.failure("this url exists") }
            list.append(TopicSubscriber(url: url, remark: remark))
            return list
        }
    }

    /// Removes `url` from the topic; the topic stays, possibly with no subscribers.
    public func unsubscribe(topic: String, url: String) async throws(DtmError) {
        try Self.check(topic: topic, url: url)
        try await update(topic) { (subscribers: [TopicSubscriber]?) throws(DtmError) in
            guard var list = subscribers else { throw DtmError.notFound("no such a topic") }
            if list.isEmpty { throw DtmError.notFound("this topic is empty") }
            guard let index = list.firstIndex(where: { $0.url == url }) else { throw DtmError.notFound("no such an url ") }
            list.remove(at: index)
            return list
        }
    }

    /// Deletes the topic and its subscriber list.
    public func delete(topic: String) async throws(DtmError) {
        if topic.isEmpty { throw DtmError.invalidArgument("empty topic") }
        do {
            try await store.deleteKV(cat: Self.category, key: topic)
        } catch .notFound {
            throw DtmError.notFound("storage: NotFound")
        } catch {
            throw DtmError.storage(error)
        }
    }

    private static func check(topic: String, url: String) throws(DtmError) {
        if topic.isEmpty { throw DtmError.invalidArgument("empty topic") }
        if url.isEmpty { throw DtmError.invalidArgument("empty url") }
    }

    /// Applies `change` to the stored list (nil: no such topic) and writes the result with a
    /// version check, re-reading when another writer got there first.
    private func update(_ topic: String,
                        _ change: ([TopicSubscriber]?) throws(DtmError) -> [TopicSubscriber]) async throws(DtmError) {
        await turns.enter()
        do {
            try await readModifyWrite(topic, change)
        } catch {
            await turns.leave()
            throw error
        }
        await turns.leave()
    }

    private func readModifyWrite(_ topic: String,
                                 _ change: ([TopicSubscriber]?) throws(DtmError) -> [TopicSubscriber]) async throws(DtmError) {
        for _ in 0..<Self.attempts {
            let row: KVRecord?
            do {
                row = try await store.findKV(cat: Self.category, key: topic).first { $0.key == topic }
            } catch {
                throw DtmError.storage(error)
            }
            let value = TopicSubscriber.json(try change(try row.map(Self.subscribers)))
            do {
                if let row {
                    try await store.updateKV(cat: Self.category, key: topic, value: value,
                                             expectedVersion: row.version, now: clock.now())
                } else {
                    try await store.createKV(cat: Self.category, key: topic, value: value, now: clock.now())
                }
                return
            } catch .notFound, .uniqueConflict {
                continue
            } catch {
                throw DtmError.storage(error)
            }
        }
        throw DtmError.storage(.notFound("topic '\(topic)' kept changing concurrently, try again"))
    }

    private static func subscribers(_ row: KVRecord) throws(DtmError) -> [TopicSubscriber] {
        if row.value.isEmpty { return [] }
        guard let list = TopicSubscriber.list(json: row.value) else {
            throw DtmError.internal("topic \(row.key): stored subscribers are not valid JSON")
        }
        return list
    }
}

/// One at a time, in arrival order: an async mutual exclusion for work that suspends.
actor Turnstile {
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func enter() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    /// Hands the turn to the next in line, or frees it.
    func leave() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }
}
