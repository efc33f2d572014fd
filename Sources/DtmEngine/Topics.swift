import Foundation

/// One subscriber of a msg topic, as stored in the kv table (cat `topics`, key = topic name,
/// value = JSON array of these).
public struct TopicSubscriber: Codable, Sendable, Equatable {
    public var url: String
    public var remark: String

    public init(url: String, remark: String = "") {
        self.url = url
        self.remark = remark
    }

    enum CodingKeys: String, CodingKey { case url, remark }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        url = try container.decode(String.self, forKey: .url)
        remark = try container.decodeIfPresent(String.self, forKey: .remark) ?? ""
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
        guard let subscribers = try? JSONDecoder().decode([TopicSubscriber].self, from: Data(value.utf8)) else {
            throw DtmError.internal("topic \(name): stored subscribers are not valid JSON")
        }
        return subscribers.map(\.url)
    }
}
