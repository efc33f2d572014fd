import Foundation

/// One subscriber of a msg topic, as stored in the kv table (cat `topics`, key = topic name,
/// value = JSON array of these).
public struct TopicSubscriber: Sendable, Equatable {
    public var url: String
    public var remark: String

    public init(url: String, remark: String = "") {
        self.url = url
        self.remark = remark
    }

    /// A stored list: an array of `{"url": ..., "remark": ...}` (url required, remark may be
    /// missing or null); nil when the text is not that. Other keys are ignored.
    public static func list(json text: String) -> [TopicSubscriber]? {
        guard case .array(let elements)? = JSONValue.parse(text) else { return nil }
        var list: [TopicSubscriber] = []
        for element in elements {
            guard case .object(let members) = element, case .string(let url)? = members["url"] else { return nil }
            switch members["remark"] {
            case nil, .null?: list.append(TopicSubscriber(url: url))
            case .string(let remark)?: list.append(TopicSubscriber(url: url, remark: remark))
            default: return nil
            }
        }
        return list
    }

    /// The stored form of a list (the kv row's value).
    public static func json(_ list: [TopicSubscriber]) -> String {
        "[" + list.map { "{\"url\":\(jsonQuoted($0.url)),\"remark\":\(jsonQuoted($0.remark))}" }.joined(separator: ",") + "]"
    }
}

/// Resolves a topic name (from a `topic://name` msg step) to its subscriber URLs.
public typealias TopicResolver = @Sendable (String) async throws(DtmError) -> [String]

/// Prefix that marks a msg step action as a topic.
public let msgTopicPrefix = "topic://"

/// Reads the topic's kv row on every msg save. A server that caches topics (DTM refreshes
/// a map every ConfigUpdateInterval) can pass its own resolver instead.
public func storeTopicResolver(_ store: any TransactionStore) -> TopicResolver {
    return { (name: String) async throws(DtmError) -> [String] in
        let rows: [KVRecord]
        do throws(StoreError) {
            rows = try await store.findKV(cat: "topics", key: name)
        } catch {
            throw DtmError.storage(error)
        }
        guard let value = rows.first(where: { $0.key == name })?.value, !value.isEmpty else { return [] }
        guard let subscribers = TopicSubscriber.list(json: value) else {
            throw DtmError.internal("topic \(name): stored subscribers are not valid JSON")
        }
        return subscribers.map(\.url)
    }
}
