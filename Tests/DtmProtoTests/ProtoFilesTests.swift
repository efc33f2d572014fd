import DtmProto
import Testing

/// The descriptors embedded at gen time (generated/descriptor_set.c), as reflection serves them.
@Suite struct ProtoFilesTests {
    let files = ProtoFiles.embedded

    @Test func everyProtoFileAndItsImportIsEmbedded() {
        #expect(Set(files.files.map(\.name)) == ["google/protobuf/empty.proto", "busi.proto", "dtmgimp.proto",
                                                 "health.proto", "reflection.proto", "reflection_v1alpha.proto",
                                                 "workflow.proto"])
        let dtmgimp = files.file(named: "dtmgimp.proto")
        #expect(dtmgimp?.package == "dtmgimp")
        #expect(dtmgimp?.services == ["dtmgimp.Dtm"])
        #expect(dtmgimp?.dependencies == ["google/protobuf/empty.proto"])
    }

    @Test(arguments: [("dtmgimp.Dtm", "dtmgimp.proto"), ("dtmgimp.Dtm.NewGid", "dtmgimp.proto"),
                      (".dtmgimp.DtmRequest", "dtmgimp.proto"), ("google.protobuf.Empty", "google/protobuf/empty.proto"),
                      ("grpc.health.v1.Health.Watch", "health.proto"),
                      ("grpc.health.v1.HealthCheckResponse.ServingStatus", "health.proto"),
                      ("grpc.reflection.v1alpha.ServerReflection", "reflection_v1alpha.proto"),
                      ("grpc.reflection.v1.ServerReflectionRequest", "reflection.proto")])
    func symbolsResolveToTheirFile(symbol: String, file: String) {
        #expect(files.file(containingSymbol: symbol)?.name == file)
    }

    @Test func unknownSymbolsAndFilesAreNil() {
        #expect(files.file(containingSymbol: "dtmgimp") == nil)
        #expect(files.file(containingSymbol: "dtmgimp.Dtm.NoSuchMethod") == nil)
        #expect(files.file(named: "missing.proto") == nil)
    }

    @Test func dependenciesFollowTheFileOnce() throws {
        let dtmgimp = try #require(files.file(named: "dtmgimp.proto"))
        #expect(files.withDependencies(dtmgimp).map(\.name) == ["dtmgimp.proto", "google/protobuf/empty.proto"])
        let empty = try #require(files.file(named: "google/protobuf/empty.proto"))
        #expect(files.withDependencies(empty).map(\.name) == ["google/protobuf/empty.proto"])
    }

    @Test(arguments: [[0x0a, 0x05, 0x01], [0x0b], [0x0a, 0x80]] as [[UInt8]])
    func malformedSetsAreRefused(bytes: [UInt8]) {
        #expect(throws: ProtoError.self) { try ProtoFiles(descriptorSet: bytes) }
    }
}
